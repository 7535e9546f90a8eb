//! `report.html` of a run, from the run folder's files alone: `manifest.json`,
//! `cells.parquet`, `baselines.parquet`, and — where they exist — `concepts.parquet`
//! (concept statistics with intervals) and `attribution.parquet` (attribution
//! accuracy). A finished, resumed or merged run renders the same page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::Value;

pub use super::concept_cells::concept_cells;
use super::findings::{self, Summary};
use super::grid::{facet_title as title, grids, ColumnKey, LongCell};
pub use super::run_tables::frame_table;
use super::run_tables::{baselines_section, facts};
use super::{Block, GridSet, Page, Section};
use crate::summary::{kind_sentence, mean_cells, shared_labels, Spot};
use crate::tables::{read_frame, read_rows, BASELINES, CELLS};
use crate::{BaselineRow, CellRow, ReportError, Result};

pub use super::SUBJECT;
/// Facets of the heatmaps, in the order of their selectors.
pub const FACETS: [&str; 4] = [SUBJECT, "direction", "kind", "method"];

/// Everything a run page shows, as read from the run folder.
#[derive(Debug, Clone, Default)]
pub struct RunFiles {
    pub manifest: Value,
    pub cells: Vec<CellRow>,
    pub baselines: Vec<BaselineRow>,
    /// `concepts.parquet`, when the run wrote one.
    pub concepts: Option<DataFrame>,
    /// `attribution.parquet`, when the run wrote one.
    pub attribution: Option<DataFrame>,
    /// `circuits.parquet`, when the run has `[circuit]` curves.
    pub circuits: Option<DataFrame>,
    /// What reading the tables adapted (tables written back by other tools).
    pub notes: Vec<String>,
}

fn read_optional(path: &Path, notes: &mut Vec<String>) -> Result<Option<DataFrame>> {
    if !path.is_file() {
        return Ok(None);
    }
    let table = read_frame(path)?;
    notes.extend(table.notes);
    Ok(Some(table.data))
}

impl RunFiles {
    /// Reads the run folder's tables; `manifest` is the run's manifest (read from
    /// `manifest.json` when `None`).
    pub fn read(run_dir: &Path, manifest: Option<&Value>) -> Result<RunFiles> {
        let manifest = match manifest {
            Some(m) => m.clone(),
            None => {
                let path = run_dir.join("manifest.json");
                let text = std::fs::read_to_string(&path).map_err(|e| ReportError::Read {
                    path: path.clone(),
                    reason: format!("{e}. Is {} a run folder?", run_dir.display()),
                })?;
                serde_json::from_str(&text).map_err(|e| ReportError::Read {
                    path,
                    reason: e.to_string(),
                })?
            }
        };
        let cells = read_rows(&run_dir.join("cells.parquet"), &CELLS)?;
        let baselines = read_rows(&run_dir.join("baselines.parquet"), &BASELINES)?;
        let mut notes = cells.notes;
        notes.extend(baselines.notes);
        let concepts = read_optional(&run_dir.join("concepts.parquet"), &mut notes)?;
        let attribution = read_optional(&run_dir.join("attribution.parquet"), &mut notes)?;
        let circuits = read_optional(&run_dir.join("circuits.parquet"), &mut notes)?;
        // Each receiver set of path patching is its own grid.
        let cells = (cells.data.into_iter())
            .map(|c| CellRow {
                kind: c.grid_kind(),
                ..c
            })
            .collect();
        Ok(RunFiles {
            manifest,
            cells,
            baselines: baselines.data,
            concepts,
            attribution,
            circuits,
            notes,
        })
    }
}

/// Renders the run folder's `report.html` and writes it atomically; returns its path.
pub fn write_run_page(run_dir: &Path, manifest: Option<&Value>) -> Result<PathBuf> {
    let files = RunFiles::read(run_dir, manifest)?;
    let path = run_dir.join("report.html");
    crate::atomic::write_bytes_atomic(&path, run_page(&files).render().as_bytes())?;
    Ok(path)
}

fn pair_subject(cell: &CellRow) -> String {
    format!("{} ({})", cell.pair, cell.concept)
}

/// The facet of a cell's direction (denoising, noising).
const DIRECTION: &str = "direction";

/// A cell's facets. New facet columns (direction, method) are one line each here.
fn cell_facets(cell: &CellRow) -> Vec<(String, String)> {
    vec![
        (SUBJECT.into(), pair_subject(cell)),
        ("kind".into(), cell.kind.clone()),
        (DIRECTION.into(), cell.direction.clone()),
    ]
}

fn quoted(token: &str) -> String {
    format!("\"{token}\"")
}

fn position_key(position: u32, token: Option<&str>) -> ColumnKey {
    let mut hover = vec![("position".into(), position.to_string())];
    if let Some(t) = token {
        hover.push(("token".into(), quoted(t)));
    }
    ColumnKey {
        order: position,
        label: format!("{}_{position}", token.unwrap_or("·")),
        hover,
    }
}

fn long_cell(cell: &CellRow) -> LongCell {
    LongCell {
        facets: cell_facets(cell),
        layer: cell.layer,
        head: cell.head,
        column: cell
            .position
            .map(|p| position_key(p, cell.token.as_deref())),
        value: cell.normalized_logit_diff,
        interval: None,
    }
}

fn spot(cell: &CellRow) -> Spot {
    Spot {
        layer: cell.layer as usize,
        head: cell.head.map(|h| h as usize),
        position: cell.position.map(|p| p as usize),
    }
}

/// `token_position` labels of one pair's positions, as the figures print them.
fn position_labels(cells: &[&CellRow]) -> Vec<String> {
    let n = cells
        .iter()
        .filter_map(|c| c.position)
        .max()
        .map_or(0, |p| p as usize + 1);
    let mut labels: Vec<String> = (0..n).map(|p| format!("·_{p}")).collect();
    for c in cells {
        if let (Some(p), Some(t)) = (c.position, &c.token) {
            labels[p as usize] = format!("{t}_{p}");
        }
    }
    labels
}

/// Items in order of first appearance.
fn ordered<'a, T: PartialEq + 'a>(items: impl Iterator<Item = &'a T>) -> Vec<&'a T> {
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The cells of one pair (in order of first appearance), by kind.
type PairCells<'a> = Vec<(&'a str, Vec<(&'a str, Vec<&'a CellRow>)>)>;

fn by_pair_and_kind<'a>(cells: &[&'a CellRow]) -> PairCells<'a> {
    let pairs = ordered(cells.iter().map(|c| &c.pair));
    pairs
        .into_iter()
        .map(|pair| {
            let of_pair: Vec<&CellRow> = (cells.iter().copied())
                .filter(|c| &c.pair == pair)
                .collect();
            let kinds = ordered(of_pair.iter().map(|c| &c.kind));
            let by_kind = kinds
                .into_iter()
                .map(|kind| {
                    let cells = of_pair
                        .iter()
                        .copied()
                        .filter(|c| &c.kind == kind)
                        .collect();
                    (kind.as_str(), cells)
                })
                .collect();
            (pair.as_str(), by_kind)
        })
        .collect()
}

fn n_layers(files: &RunFiles) -> usize {
    files.manifest["model"]["n_layers"]
        .as_u64()
        .map(|n| n as usize)
        .unwrap_or_else(|| {
            files
                .cells
                .iter()
                .map(|c| c.layer as usize + 1)
                .max()
                .unwrap_or(0)
        })
}

/// Concept means where every pair of a concept has the same cells (as `report.md`
/// draws them), with the summary sentence of each; for runs without
/// `concepts.parquet`.
fn concept_means(
    files: &RunFiles,
    pairs: &PairCells,
    direction: &str,
) -> (Vec<LongCell>, Vec<String>) {
    let mut concepts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &files.cells {
        let pairs = concepts.entry(c.concept.as_str()).or_default();
        if !pairs.contains(&c.pair.as_str()) {
            pairs.push(c.pair.as_str());
        }
    }
    let (mut cells, mut sentences) = (Vec::new(), Vec::new());
    for (concept, members) in concepts.iter().filter(|(_, m)| m.len() >= 2) {
        let of_concept: Vec<_> = pairs.iter().filter(|(p, _)| members.contains(p)).collect();
        let kinds = ordered(
            of_concept
                .iter()
                .flat_map(|(_, k)| k.iter().map(|(k, _)| k)),
        );
        for kind in kinds {
            let per_pair: Vec<&Vec<&CellRow>> = of_concept
                .iter()
                .filter_map(|(_, ks)| ks.iter().find(|(k, _)| k == kind).map(|(_, c)| c))
                .collect();
            let spots: Vec<Vec<(Spot, f64)>> = per_pair
                .iter()
                .map(|cs| {
                    cs.iter()
                        .map(|c| (spot(c), c.normalized_logit_diff))
                        .collect()
                })
                .collect();
            let (Some(mean), true) = (mean_cells(&spots), per_pair.len() == members.len()) else {
                continue;
            };
            let labels = shared_labels(
                &per_pair
                    .iter()
                    .map(|c| position_labels(c))
                    .collect::<Vec<_>>(),
            );
            let subject = format!("{concept}: mean of {} pairs", members.len());
            sentences.extend(kind_sentence(
                &format!("{concept} (mean, {direction})"),
                kind,
                &mean,
                &labels,
                n_layers(files),
            ));
            cells.extend(mean.iter().map(|(s, v)| LongCell {
                facets: vec![
                    (SUBJECT.into(), subject.clone()),
                    ("kind".into(), kind.to_string()),
                    (DIRECTION.into(), direction.to_string()),
                ],
                layer: s.layer as u32,
                head: s.head.map(|h| h as u32),
                column: s.position.map(|p| ColumnKey {
                    order: p as u32,
                    label: labels.get(p).cloned().unwrap_or_default(),
                    hover: vec![("position".into(), p.to_string())],
                }),
                value: *v,
                interval: None,
            }));
        }
    }
    (cells, sentences)
}

/// The summary sentences of every pair's grids and of every concept (the means over
/// its pairs), and for a run without `concepts.parquet` the concept means' cells,
/// direction by direction.
fn summaries(files: &RunFiles) -> (Summary, Vec<LongCell>) {
    let n_layers = n_layers(files);
    let mut summary = Summary {
        concepts: Vec::new(),
        pairs: Vec::new(),
    };
    let mut means = Vec::new();
    for direction in ordered(files.cells.iter().map(|c| &c.direction)) {
        let of_direction: Vec<&CellRow> = (files.cells.iter())
            .filter(|c| &c.direction == direction)
            .collect();
        let pairs = by_pair_and_kind(&of_direction);
        for (pair, kinds) in &pairs {
            for (kind, cells) in kinds {
                let spots: Vec<(Spot, f64)> = cells
                    .iter()
                    .map(|c| (spot(c), c.normalized_logit_diff))
                    .collect();
                summary.pairs.extend(kind_sentence(
                    &format!("{pair} ({direction})"),
                    kind,
                    &spots,
                    &position_labels(cells),
                    n_layers,
                ));
            }
        }
        let (cells, sentences) = concept_means(files, &pairs, direction);
        summary.concepts.extend(sentences);
        if files.concepts.is_none() {
            means.extend(cells);
        }
    }
    (summary, means)
}

/// The whole page.
pub fn run_page(files: &RunFiles) -> Page {
    let (summary, means) = summaries(files);
    let mut cells = match &files.concepts {
        Some(frame) => concept_cells(frame),
        None => means,
    };
    let has_intervals = cells.iter().any(|c| c.interval.is_some());
    cells.extend(files.cells.iter().map(long_cell));
    let mut heatmaps = grids(
        &cells,
        "position (clean token)",
        "normalized logit diff",
        &title,
    );
    for grid in heatmaps.iter_mut().filter(|g| g.intervals.is_some()) {
        grid.value_label = "mean normalized effect".into();
    }
    let mut note = "Normalized logit difference: 0 = the corrupted run, 1 = the clean run. Hover a cell for its token, layer, head and value; grey cells were not computed.".to_string();
    if has_intervals {
        note.push_str(" Concept cells whose 95% interval contains 0 are drawn faded.");
    }

    let mut sections = Vec::new();
    let n_pairs = ordered(files.cells.iter().map(|c| &c.pair)).len();
    if let Some(concepts) = &files.concepts {
        let order: Vec<String> = (ordered(files.cells.iter().map(|c| &c.concept)))
            .into_iter()
            .cloned()
            .collect();
        sections.extend(findings::across_section(concepts, &order));
    }
    sections.extend(findings::summary_section(summary, n_pairs));
    if !heatmaps.is_empty() {
        sections.push(Section {
            heading: "Heatmaps".into(),
            blocks: vec![Block::Heatmaps(GridSet {
                facets: FACETS.map(String::from).to_vec(),
                grids: heatmaps,
                note,
            })],
        });
    }
    sections.push(baselines_section(&files.baselines));
    if let Some(frame) = &files.attribution {
        sections.push(Section {
            heading: "Attribution accuracy".into(),
            blocks: vec![
                Block::Text("How far each approximate method is from the exact sweep (`attribution.parquet`).".into()),
                Block::Table(frame_table(frame)),
            ],
        });
    }
    sections.extend(super::circuits::edges_section(&files.manifest));
    if let Some(frame) = &files.circuits {
        sections.extend(super::circuits::curves_section(frame, &files.manifest));
    }
    if !files.notes.is_empty() {
        sections.push(Section {
            heading: "Reading notes".into(),
            blocks: vec![Block::Bullets(files.notes.clone())],
        });
    }
    Page {
        title: files.manifest["experiment"]
            .as_str()
            .unwrap_or("actpatch run")
            .to_string(),
        facts: facts(&files.manifest, files.cells.len()),
        sections,
    }
}
