//! The report's per-pair figures and summary sentences: one heatmap per pair,
//! direction and patch kind (the concept figures are in [`super::concept_figures`]).

use std::path::Path;

use actpatch_patching::{CellResult, Direction, PatchKind};
use actpatch_report::{FigureSection, Heatmap, ImageFormat, ReportError};

use crate::experiment::{Experiment, FigureFormat};
use crate::outputs::figures::{heatmap, normalized_cells};
use crate::outputs::summary::{kind_sentence, top_cells};
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
pub(crate) fn save_figure(
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
