//! The report's figures and summary sentences: one heatmap per pair, direction and
//! patch kind, and the concept means where every pair of a concept has the same cells.

use std::collections::BTreeMap;
use std::path::Path;

use actpatch_patching::{CellResult, Direction, PatchKind};
use actpatch_report::{FigureSection, Heatmap, ImageFormat, ReportError};

use crate::experiment::{Experiment, FigureFormat};
use crate::outputs::figures::{heatmap, mean_cells, normalized_cells};
use crate::outputs::summary::{kind_sentence, shared_labels, top_cells};
use crate::outputs::SweptPair;

/// Everything drawn for the report.
pub(crate) struct Drawn {
    pub figures: Vec<FigureSection>,
    pub summary: Vec<String>,
    pub notes: Vec<String>,
}

/// The file name of a figure: `<pair>_<direction>_<kind>` made safe.
fn file_stem(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Saves `heatmap` as `figures/<stem>.<ext>` in every format; returns the first file's
/// name.
fn save_figure(
    run_dir: &Path,
    stem: &str,
    heatmap: &Heatmap,
    formats: &[FigureFormat],
) -> Result<Option<String>, ReportError> {
    let mut first = None;
    for format in formats {
        let format = match format {
            FigureFormat::Png => ImageFormat::Png,
            FigureFormat::Svg => ImageFormat::Svg,
        };
        let name = format!("figures/{}.{}", file_stem(stem), format.extension());
        heatmap.save(&run_dir.join(&name), format)?;
        first.get_or_insert(name);
    }
    Ok(first)
}

/// Every figure of the run, with its summary sentences.
pub(crate) fn draw_all(
    experiment: &Experiment,
    n_layers: usize,
    run_dir: &Path,
    swept: &[SweptPair],
) -> Result<Drawn, ReportError> {
    let mut drawn = Drawn {
        figures: Vec::new(),
        summary: Vec::new(),
        notes: Vec::new(),
    };
    let formats = &experiment.output.formats;
    for pair in swept {
        for direction in experiment.sweep.direction.directions() {
            let grid = PairGrids {
                pair,
                direction,
                kinds: &experiment.sweep.kinds,
            };
            grid.draw(n_layers, (run_dir, formats), &mut drawn)?;
        }
    }
    let mut by_concept: BTreeMap<&str, Vec<&SweptPair>> = BTreeMap::new();
    for pair in swept {
        let concept = pair.plan.spec.concept.as_str();
        by_concept.entry(concept).or_default().push(pair);
    }
    for (concept, pairs) in by_concept.iter().filter(|(_, p)| p.len() >= 2) {
        for direction in experiment.sweep.direction.directions() {
            for kind in &experiment.sweep.kinds {
                let what = ConceptGrid {
                    concept,
                    direction,
                    kind: *kind,
                };
                what.draw(pairs, n_layers, (run_dir, formats), &mut drawn)?;
            }
        }
    }
    Ok(drawn)
}

/// A pair's grids in one direction.
struct PairGrids<'a> {
    pair: &'a SweptPair<'a>,
    direction: Direction,
    kinds: &'a [PatchKind],
}

impl PairGrids<'_> {
    /// One figure per kind, the strongest cells under the first.
    fn draw(
        &self,
        n_layers: usize,
        (run_dir, formats): (&Path, &[FigureFormat]),
        drawn: &mut Drawn,
    ) -> Result<(), ReportError> {
        let (pair, direction) = (self.pair, self.direction);
        let labels = pair.labels(direction);
        let results: Vec<CellResult> = (pair.results.iter())
            .filter(|r| r.direction == direction)
            .copied()
            .collect();
        let kinds = (self.kinds.iter()).filter(|k| results.iter().any(|r| r.kind == **k));
        for (i, kind) in kinds.enumerate() {
            let cells = normalized_cells(&results, *kind);
            let name = &pair.plan.name;
            let title = format!("{} · {name} · {direction} · {kind}", pair.plan.spec.concept);
            let map = heatmap(*kind, &cells, &labels, title.clone());
            let stem = format!("{name}_{direction}_{kind}");
            if let Some(image) = save_figure(run_dir, &stem, &map, formats)? {
                let details = match i {
                    0 => top_cells(&results, &labels, 10),
                    _ => Vec::new(),
                };
                drawn.figures.push(FigureSection {
                    heading: title,
                    image,
                    details,
                });
            }
            let label = format!("{name} ({direction})");
            if let Some(line) = kind_sentence(&label, *kind, &cells, &labels, n_layers) {
                drawn.summary.push(line);
            }
        }
        Ok(())
    }
}

/// The mean grid of one concept, direction and kind.
struct ConceptGrid<'a> {
    concept: &'a str,
    direction: Direction,
    kind: PatchKind,
}

impl ConceptGrid<'_> {
    fn draw(
        &self,
        pairs: &[&SweptPair],
        n_layers: usize,
        (run_dir, formats): (&Path, &[FigureFormat]),
        drawn: &mut Drawn,
    ) -> Result<(), ReportError> {
        let (concept, direction, kind) = (self.concept, self.direction, self.kind);
        let per_pair: Vec<_> = (pairs.iter())
            .map(|p| {
                let results: Vec<CellResult> = (p.results.iter())
                    .filter(|r| r.direction == direction)
                    .copied()
                    .collect();
                normalized_cells(&results, kind)
            })
            .collect();
        let Some(mean) = mean_cells(&per_pair) else {
            drawn.notes.push(format!(
                "No concept mean of `{kind}` ({direction}) for **{concept}**: its pairs have different token lengths, so positions do not line up."
            ));
            return Ok(());
        };
        let labels = shared_labels(
            &pairs
                .iter()
                .map(|p| p.labels(direction))
                .collect::<Vec<_>>(),
        );
        let title = format!(
            "{concept} · mean of {} pairs · {direction} · {kind}",
            pairs.len()
        );
        let map = heatmap(kind, &mean, &labels, title.clone());
        let stem = format!("mean_{concept}_{direction}_{kind}");
        if let Some(image) = save_figure(run_dir, &stem, &map, formats)? {
            drawn.figures.push(FigureSection {
                heading: title,
                image,
                details: Vec::new(),
            });
        }
        let label = format!("{concept} (mean, {direction})");
        if let Some(line) = kind_sentence(&label, kind, &mean, &labels, n_layers) {
            drawn.summary.push(line);
        }
        Ok(())
    }
}
