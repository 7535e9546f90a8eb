//! Writing a run's outputs: `cells.parquet`, `baselines.parquet`, figures and
//! `report.md`.

pub(crate) mod accuracy;
pub(crate) mod accuracy_figures;
mod concept_figures;
pub mod concepts;
mod figures;
mod notes;
mod rows;
mod sections;
mod summary;

use std::path::Path;

use actpatch_model::HookedTransformer;
use actpatch_patching::{CellResult, Direction, Method, PatchKind};
use actpatch_report::{ConceptSection, ImageFormat, ReportError, RunReport};

use crate::experiment::{Experiment, FigureFormat};
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
    /// What each method cost.
    pub costs: Vec<Cost>,
}

/// The time and forward-pass equivalents one method took for one direction of a pair:
/// per kind for exact sweeps, every kind at once for an approximation (an equal share
/// of the call that estimates every direction together).
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub direction: Direction,
    pub method: Method,
    /// The kind, for exact sweeps; `None` for an approximation (all kinds at once).
    pub kind: Option<PatchKind>,
    pub seconds: f64,
    /// Forward-pass equivalents: one per patched run for exact sweeps (a partial run
    /// counts as one); for approximations, forward passes plus 2 per backward pass.
    pub passes: f64,
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

    /// The axis labels of the target positions of `direction`: the clean token each
    /// stands for (`·` where none is) and its role where that is not the token's own
    /// text (`" Colosseum · subject.last"`, `" is · end"`, `" The"`).
    pub fn labels(&self, direction: Direction) -> Vec<String> {
        let n_target = match direction {
            Direction::Denoising => self.plan.corrupted_tokens.len(),
            Direction::Noising => self.plan.clean_tokens.len(),
        };
        // Noised positions are starred, as in ROME's figures.
        let noised =
            |j: usize| (self.plan.gaussian.as_ref()).is_some_and(|g| g.subject.contains(&j));
        // The token's role names the position across the concept's pairs; its index
        // where it has none.
        let role = |j: usize| match self.plan.role(direction, j) {
            Some(role) if !role.is_empty() => role.to_string(),
            _ => j.to_string(),
        };
        (0..n_target)
            .map(|j| match self.clean_position(direction, j) {
                Some(c) => {
                    let token = (self.plan.clean_str.get(c)).map_or("?", String::as_str);
                    let star = if noised(j) { "*" } else { "" };
                    // A role that is the token's own text adds nothing.
                    match role(j) {
                        role if role == token.trim() => format!("{token}{star}"),
                        role => format!("{token}{star} · {role}"),
                    }
                }
                None => format!("· · {}", role(j)),
            })
            .collect()
    }
}

/// The cells the figures show: one method's (exact when the run has it, else the first
/// listed), without single attention-pattern entries (`head_pattern_by_dest_src` has a
/// fourth axis a layer × position heatmap cannot show; its cells are in the tables).
fn drawn_cells<'p>(experiment: &Experiment, swept: &[SweptPair<'p>]) -> Vec<SweptPair<'p>> {
    let methods = &experiment.sweep.methods;
    let shown = match methods.contains(&Method::Exact) {
        true => Method::Exact,
        false => methods.first().copied().unwrap_or_default(),
    };
    swept
        .iter()
        .map(|pair| SweptPair {
            plan: pair.plan,
            results: (pair.results.iter())
                .filter(|r| r.method == shown && r.kind != PatchKind::HeadPatternByDestSrc)
                .copied()
                .collect(),
            paths: pair.paths.clone(),
            skipped: pair.skipped.clone(),
            costs: pair.costs.clone(),
        })
        .collect()
}

/// Seconds spent on each kind of output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteTimings {
    pub tables: f64,
    pub statistics: f64,
    pub figures: f64,
    pub report: f64,
}

/// A stopwatch adding each lap to one of [`WriteTimings`]' fields.
struct Laps {
    last: std::time::Instant,
    timings: WriteTimings,
}

impl Laps {
    fn new() -> Self {
        Laps {
            last: std::time::Instant::now(),
            timings: WriteTimings::default(),
        }
    }

    /// Adds the time since the last lap to `field`.
    fn lap(&mut self, field: fn(&mut WriteTimings) -> &mut f64) {
        *field(&mut self.timings) += self.last.elapsed().as_secs_f64();
        self.last = std::time::Instant::now();
    }
}

/// Writes every output of the run; returns the number of cells and what each kind of
/// output took.
pub fn write_outputs(
    experiment: &Experiment,
    model: &HookedTransformer,
    (run_id, run_dir): (&str, &Path),
    (plans, swept): (&[PairPlan], &[SweptPair]),
    circuit_section: Option<&str>,
    (started, wall_seconds): (chrono::DateTime<chrono::Utc>, f64),
) -> Result<(usize, WriteTimings), ReportError> {
    let mut laps = Laps::new();
    let cells = cell_rows(experiment, model, run_id, swept);
    let baselines = rows::baseline_rows(experiment, model, run_id, plans, swept);
    actpatch_report::tables::write_cells(&run_dir.join("cells.parquet"), &cells)?;
    actpatch_report::tables::write_baselines(&run_dir.join("baselines.parquet"), &baselines)?;
    let figures_dir = run_dir.join("figures");
    std::fs::create_dir_all(&figures_dir).map_err(|source| ReportError::Write {
        path: figures_dir.clone(),
        source,
    })?;
    let effects = accuracy::swept_effects(swept);
    let paired = accuracy::paired(&effects);
    let accuracy = accuracy::accuracy_rows(run_id, &paired, &accuracy::cost_records(swept));
    if !accuracy.is_empty() {
        actpatch_report::tables::write_table(
            &run_dir.join("attribution.parquet"),
            &actpatch_report::accuracy::ACCURACY,
            &accuracy,
        )?;
    }
    laps.lap(|t| &mut t.tables);
    let formats = image_formats(&experiment.output.formats);
    let accuracy_figures = accuracy_figures::accuracy_figures(&paired, run_dir, &formats)?;
    // Figures and concepts show one method's cells: exact where it ran.
    let drawn_pairs = drawn_cells(experiment, swept);
    let drawn = sections::draw_all(experiment, model.dims().n_layers, run_dir, &drawn_pairs)?;
    laps.lap(|t| &mut t.figures);
    let table = concepts::ConceptTable::compute(experiment, &drawn_pairs);
    let model_name = model.source().to_string();
    let concept_rows = table.rows(&experiment.experiment.name, &model_name, run_id);
    if !concept_rows.is_empty() {
        actpatch_report::tables::write_concepts(&run_dir.join("concepts.parquet"), &concept_rows)?;
    }
    laps.lap(|t| &mut t.statistics);
    let concept_sections = concept_sections(experiment, run_dir, plans, &table)?;
    let across = across_concepts(run_dir, &formats, &concept_sections, &concept_rows)?;
    laps.lap(|t| &mut t.figures);
    let notes = [drawn.notes, notes::run_notes(plans)].concat();
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
        accuracy,
        accuracy_figures,
        circuits: circuit_section.unwrap_or_default().to_string(),
        across,
    };
    actpatch_report::atomic::write_bytes_atomic(
        &run_dir.join("report.md"),
        report.render().as_bytes(),
    )?;
    laps.lap(|t| &mut t.report);
    Ok((cells.len(), laps.timings))
}

/// The image formats of `[output] formats`.
fn image_formats(formats: &[FigureFormat]) -> Vec<ImageFormat> {
    (formats.iter())
        .map(|f| match f {
            FigureFormat::Png => ImageFormat::Png,
            FigureFormat::Svg => ImageFormat::Svg,
        })
        .collect()
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
    // The concepts in the order their first pair has in the file (the course's order
    // in `assignment.toml`).
    let mut concepts: Vec<&String> = (plans.iter())
        .map(|p| &p.spec.concept)
        .filter(|c| table.n_pairs.contains_key(*c))
        .collect();
    let mut seen = std::collections::HashSet::new();
    concepts.retain(|c| seen.insert(*c));
    for concept in concepts {
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

/// The "Across concepts" section of a run of two or more concepts, and its figure
/// (`figures/across_concepts.*`); empty otherwise.
fn across_concepts(
    run_dir: &Path,
    formats: &[ImageFormat],
    sections: &[ConceptSection],
    rows: &[actpatch_report::ConceptRow],
) -> Result<String, ReportError> {
    let order: Vec<String> = sections.iter().map(|s| s.concept.clone()).collect();
    let flows = actpatch_report::across::flows(rows, &order);
    if flows.len() < 2 {
        return Ok(String::new());
    }
    let plot = actpatch_report::across::AcrossPlot { flows: &flows };
    let mut figure = None;
    for format in formats {
        let name = format!("figures/across_concepts.{}", format.extension());
        plot.save(&run_dir.join(&name), *format)?;
        figure.get_or_insert(name);
    }
    Ok(actpatch_report::across::render_section(
        &flows,
        figure.as_deref(),
    ))
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
