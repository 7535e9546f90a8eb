//! Writing a run's outputs: `cells.parquet`, `baselines.parquet`, figures and
//! `report.md`.

mod concept_figures;
pub mod concepts;
mod figures;
mod notes;
mod rows;
mod sections;
mod summary;

use std::path::Path;

use actpatch_model::HookedTransformer;
use actpatch_patching::{CellResult, Direction};
use actpatch_report::{ConceptSection, ReportError, RunReport};

use crate::experiment::Experiment;
use crate::validate::PairPlan;
pub(crate) use figures::heatmap;
pub use rows::cell_rows;

/// One receiver set's cells for one pair (every path kind and direction).
#[derive(Debug, Clone)]
pub struct PathResults {
    /// The receiver set's label (`[[sweep.paths]]` `label`, or its default).
    pub label: String,
    pub results: Vec<CellResult>,
}

/// A pair's sweep results.
pub struct SweptPair<'a> {
    pub plan: &'a PairPlan,
    pub results: Vec<CellResult>,
    /// Path-patching cells, one entry per receiver set (`[[sweep.paths]]`).
    pub paths: Vec<PathResults>,
    /// Kinds not swept for this pair, with why.
    pub skipped: Vec<String>,
}

impl SweptPair<'_> {
    /// The clean-prompt position that target position `position` of `direction`
    /// stands for (see [`actpatch_patching::Pair::clean_position`]).
    pub fn clean_position(&self, direction: Direction, position: usize) -> Option<usize> {
        match direction {
            Direction::Denoising => {
                (self.plan.map.as_ref()).and_then(|m| m.source_of.get(position).copied().flatten())
            }
            Direction::Noising => (position < self.plan.clean_tokens.len()).then_some(position),
        }
    }

    /// `token_position` labels of the target positions of `direction`, each with the
    /// clean token it stands for (`·` where none is).
    pub fn labels(&self, direction: Direction) -> Vec<String> {
        let n_target = match direction {
            Direction::Denoising => self.plan.corrupted_tokens.len(),
            Direction::Noising => self.plan.clean_tokens.len(),
        };
        (0..n_target)
            .map(|j| match self.clean_position(direction, j) {
                Some(c) => format!(
                    "{}_{j}",
                    self.plan
                        .clean_str
                        .get(c)
                        .map(String::as_str)
                        .unwrap_or("?")
                ),
                None => format!("·_{j}"),
            })
            .collect()
    }
}

/// Writes every output of the run; returns the number of cells.
pub fn write_outputs(
    experiment: &Experiment,
    model: &HookedTransformer,
    (run_id, run_dir): (&str, &Path),
    plans: &[PairPlan],
    swept: &[SweptPair],
    (started, wall_seconds): (chrono::DateTime<chrono::Utc>, f64),
) -> Result<usize, ReportError> {
    let cells = cell_rows(experiment, model, run_id, swept);
    let baselines = rows::baseline_rows(experiment, model, run_id, plans, swept);
    actpatch_report::tables::write_cells(&run_dir.join("cells.parquet"), &cells)?;
    actpatch_report::tables::write_baselines(&run_dir.join("baselines.parquet"), &baselines)?;
    let figures_dir = run_dir.join("figures");
    std::fs::create_dir_all(&figures_dir).map_err(|source| ReportError::Write {
        path: figures_dir.clone(),
        source,
    })?;
    let drawn = sections::draw_all(experiment, model.dims().n_layers, run_dir, swept)?;
    let table = concepts::ConceptTable::compute(experiment, swept);
    let model_name = model.source().to_string();
    let concept_rows = table.rows(&experiment.experiment.name, &model_name, run_id);
    if !concept_rows.is_empty() {
        actpatch_report::tables::write_concepts(&run_dir.join("concepts.parquet"), &concept_rows)?;
    }
    let concept_sections = concept_sections(experiment, run_dir, plans, &table)?;
    let mut notes = drawn.notes;
    notes.extend(notes::run_notes(plans));
    let report = RunReport {
        experiment: experiment.experiment.name.clone(),
        description: experiment.experiment.description.clone(),
        model: model.source().to_string(),
        run_id: run_id.to_string(),
        started: started.to_rfc3339(),
        wall_seconds,
        sweep_kinds: (experiment.sweep.kinds.iter())
            .map(|k| k.name().to_string())
            .collect(),
        directions: (experiment.sweep.direction.directions().iter())
            .map(|d| d.name().to_string())
            .collect(),
        baselines,
        references: notes::reference_pairs(plans),
        notes,
        summary: drawn.summary,
        concepts: concept_sections,
        figures: drawn.figures,
    };
    actpatch_report::atomic::write_bytes_atomic(
        &run_dir.join("report.md"),
        report.render().as_bytes(),
    )?;
    Ok(cells.len())
}

/// One report section per concept with swept pairs: its pairs, findings and figures.
fn concept_sections(
    experiment: &Experiment,
    run_dir: &Path,
    plans: &[PairPlan],
    table: &concepts::ConceptTable,
) -> Result<Vec<ConceptSection>, ReportError> {
    let formats = &experiment.output.formats;
    let directions = experiment.sweep.direction.directions();
    let mut sections = Vec::new();
    for concept in table.n_pairs.keys() {
        let of_concept: Vec<&PairPlan> = (plans.iter())
            .filter(|p| &p.spec.concept == concept && !p.reference())
            .collect();
        let grids =
            concept_figures::ConceptGrid::all(table, concept, &directions, &experiment.sweep.kinds);
        let save = |stem: &str, map: &actpatch_report::Heatmap| {
            sections::save_figure(run_dir, stem, map, formats)
        };
        let (figures, findings) = concept_figures::concept_figures(&grids, save)?;
        sections.push(ConceptSection {
            concept: concept.clone(),
            pairs: of_concept.len(),
            passed: of_concept.iter().filter(|p| p.passed()).count(),
            failures: failure_counts(&of_concept),
            findings,
            figures,
        });
    }
    Ok(sections)
}

/// Why pairs failed, by the first sentence of each reason, most frequent first.
fn failure_counts(plans: &[&PairPlan]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for reason in plans.iter().flat_map(|p| p.reasons.first()) {
        let short = reason
            .split([':', '\n'])
            .next()
            .unwrap_or(reason)
            .trim()
            .to_string();
        match counts.iter_mut().find(|(r, _)| *r == short) {
            Some((_, n)) => *n += 1,
            None => counts.push((short, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
}
