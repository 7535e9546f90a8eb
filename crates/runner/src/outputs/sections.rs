//! The report's per-pair figures and summary sentences: one heatmap per pair,
//! direction and patch kind (the concept figures are in [`super::concept_figures`]).

use std::path::Path;

use actpatch_patching::{path, CellIndex, CellResult, Direction, PatchKind};
use actpatch_report::{FigureSection, Heatmap, ImageFormat, ReportError};
use rayon::prelude::*;

use crate::experiment::{Experiment, FigureFormat, PairFigures};
use crate::outputs::figures::heatmap;
use crate::outputs::summary::{kind_sentence, top_cells};
use crate::outputs::SweptPair;

/// One grid of a run: a patch kind and, for path patching, its receiver set.
#[derive(Debug, Clone, Copy)]
struct GridKey<'a> {
    kind: PatchKind,
    receivers: Option<&'a str>,
}

impl GridKey<'_> {
    /// Every grid the experiment asks for: its plain kinds, then each path kind to
    /// each receiver set (`labels`).
    fn all<'a>(kinds: &[PatchKind], labels: &'a [String]) -> Vec<GridKey<'a>> {
        let plain = (kinds.iter())
            .filter(|k| !path::is_path(**k))
            .map(|k| GridKey {
                kind: *k,
                receivers: None,
            });
        let paths = (kinds.iter()).filter(|k| path::is_path(**k)).flat_map(|k| {
            labels.iter().map(|l| GridKey {
                kind: *k,
                receivers: Some(l.as_str()),
            })
        });
        plain.chain(paths).collect()
    }

    /// The pair's results of this grid in `direction`.
    fn results(&self, pair: &SweptPair, direction: Direction) -> Vec<CellResult> {
        let all = match self.receivers {
            None => &pair.results,
            Some(label) => match pair.paths.iter().find(|p| p.label == label) {
                Some(p) => &p.results,
                None => return Vec::new(),
            },
        };
        (all.iter())
            .filter(|r| r.direction == direction && r.kind == self.kind)
            .copied()
            .collect()
    }

    /// `head_out`, or `path → logits`.
    fn name(&self) -> String {
        match self.receivers {
            None => self.kind.name().to_string(),
            Some(label) => format!("{} → {label}", self.kind),
        }
    }

    /// The grid's heatmap; path grids name their axes as senders.
    fn heatmap(&self, cells: &[(CellIndex, f64)], labels: &[String], title: String) -> Heatmap {
        let mut map = heatmap(self.kind, cells, labels, title);
        if self.receivers.is_some() {
            map.y_label = format!("sender {}", map.y_label);
            map.x_label = format!("sender {}", map.x_label);
        }
        map
    }
}

/// Everything drawn for the report.
#[derive(Default)]
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
    let formats = &experiment.output.formats;
    let labels: Vec<String> = experiment.sweep.paths.iter().map(|p| p.label()).collect();
    let grids = GridKey::all(&experiment.sweep.kinds, &labels);
    let grids = grids.as_slice();
    let with_files = pairs_with_figures(experiment.output.pair_figures, swept);
    let jobs: Vec<PairGrids> = (swept.iter().zip(with_files))
        .flat_map(|(pair, files)| {
            (experiment.sweep.direction.directions().into_iter()).map(move |direction| PairGrids {
                pair,
                direction,
                grids,
                files,
            })
        })
        .collect();
    // Each pair and direction renders on its own (on every core); the report lists
    // them in this order.
    let parts: Vec<Result<Drawn, ReportError>> = jobs
        .par_iter()
        .map(|job| {
            let mut part = Drawn::default();
            job.draw(n_layers, (run_dir, formats), &mut part)?;
            Ok(part)
        })
        .collect();
    let mut drawn = Drawn::default();
    for part in parts {
        let part = part?;
        drawn.figures.extend(part.figures);
        drawn.summary.extend(part.summary);
        drawn.notes.extend(part.notes);
    }
    Ok(drawn)
}

/// Which of `swept` get figure files of their own under `choice` (in their order).
fn pairs_with_figures(choice: PairFigures, swept: &[SweptPair]) -> Vec<bool> {
    match choice {
        PairFigures::All => return vec![true; swept.len()],
        PairFigures::None => return vec![false; swept.len()],
        PairFigures::Top if swept.len() <= PairFigures::ALL_UP_TO => {
            return vec![true; swept.len()]
        }
        PairFigures::Top => {}
    }
    let mut chosen = vec![false; swept.len()];
    let mut concepts: Vec<&str> = swept.iter().map(|p| p.plan.spec.concept.as_str()).collect();
    concepts.sort_unstable();
    concepts.dedup();
    for concept in concepts {
        // The concept's pairs by their clean − corrupted gap, largest first.
        let mut by_gap: Vec<(usize, f64)> = (swept.iter().enumerate())
            .filter(|(_, p)| p.plan.spec.concept == concept)
            .map(|(i, p)| {
                let gap = (p.plan.baseline())
                    .map(|b| b.clean_logit_diff - b.corrupted_logit_diff)
                    .unwrap_or(f64::NAN);
                (i, gap)
            })
            .collect();
        by_gap.sort_by(|a, b| b.1.total_cmp(&a.1));
        let each = PairFigures::TOP_EACH;
        let ends = by_gap
            .iter()
            .take(each)
            .chain(by_gap.iter().rev().take(each));
        for &(i, _) in ends {
            chosen[i] = true;
        }
    }
    chosen
}

/// A pair's grids in one direction.
struct PairGrids<'a> {
    pair: &'a SweptPair<'a>,
    direction: Direction,
    grids: &'a [GridKey<'a>],
    /// Whether its figures are written as files (its sentences are written either way).
    files: bool,
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
        let mut first = true;
        for grid in self.grids {
            let results = grid.results(pair, direction);
            if results.is_empty() {
                continue;
            }
            let cells: Vec<(CellIndex, f64)> = (results.iter())
                .map(|r| (r.index, r.metrics.normalized_logit_diff))
                .collect();
            let name = &pair.plan.name;
            let what = grid.name();
            let mut title = format!("{} · {name} · {direction} · {what}", pair.plan.spec.concept);
            if let Some(gaussian) = &pair.plan.gaussian {
                title.push_str(&format!(" · {}", gaussian.title_note(grid.kind)));
            }
            let mut map = grid.heatmap(&cells, &labels, title.clone());
            if let Some(gaussian) = &pair.plan.gaussian {
                map.colorbar_label = format!("normalized {}", gaussian.metric_label());
            }
            let stem = format!("{name}_{direction}_{what}");
            let saved = match self.files {
                true => save_figure(run_dir, &stem, &map, formats)?,
                false => None,
            };
            if let Some(image) = saved {
                let details = match std::mem::take(&mut first) {
                    true => {
                        let traced = pair.plan.gaussian.as_ref().map(|g| g.metric_label());
                        top_cells(&results, &labels, 10, traced)
                    }
                    false => Vec::new(),
                };
                drawn.figures.push(FigureSection {
                    heading: title,
                    image,
                    details,
                });
            }
            let label = format!("{name} ({direction})");
            if let Some(line) = kind_sentence(&label, &what, &cells, &labels, n_layers) {
                drawn.summary.push(line);
            }
        }
        Ok(())
    }
}
