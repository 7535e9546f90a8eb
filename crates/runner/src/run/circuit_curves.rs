//! The faithfulness stage of `[circuit]`: each method's circuits at every size under
//! every curve ablation, `circuits.parquet`, the curve figures, CPR and CMD, and the
//! circuit files `export` asks for.

use std::path::Path;

use actpatch_circuits::{
    circuits_faithfulness, faithfulness_curve, mean_scores, top_edges, Circuit, Curve, EdgePair,
    Graph, Method, PairScores,
};
use actpatch_model::HookedTransformer;
use actpatch_report::curves::{CircuitRow, CurvePlot, CurveSeries, SCOPE_PAIR};
use actpatch_report::ImageFormat;

use super::circuit_intervals;
use super::folder::create_subfolder;
use crate::experiment::circuit::CurveChoices;
use crate::experiment::{CircuitSpec, Experiment, FigureFormat};
use crate::manifest::CircuitArea;
use crate::options::RunOptions;
use crate::validate::PairPlan;
use crate::RunnerError;
use actpatch_concepts::Resamples;

/// What the curves produced.
pub struct CurvesOutcome {
    pub rows: Vec<CircuitRow>,
    /// (method, ablation, CPR, CMD), method as `eap-ig-inputs(5)`.
    pub areas: Vec<CircuitArea>,
    /// Figures, relative to the run folder.
    pub figures: Vec<String>,
    /// Exported circuit files, relative to the run folder.
    pub files: Vec<String>,
}

/// One method's scores on every pair (every edge scored).
pub struct MethodScores<'a> {
    pub method: Method,
    pub per_pair: &'a [PairScores],
}

/// Runs every curve, writes `circuits.parquet`, the figures and the exported circuits.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &HookedTransformer,
    experiment: &Experiment,
    spec: &CircuitSpec,
    options: &RunOptions,
    (run_id, run_dir): (&str, &Path),
    (graph, plans, pairs): (&Graph, &[&PairPlan], &[EdgePair]),
    methods: &[MethodScores],
) -> Result<CurvesOutcome, RunnerError> {
    let choices = spec.curves().map_err(RunnerError::Input)?;
    let base = CircuitRow {
        run_id: run_id.to_string(),
        experiment: experiment.experiment.name.clone(),
        model: model.source().to_string(),
        select: choices.select.name().to_string(),
        ..CircuitRow::default()
    };
    let mut outcome = CurvesOutcome {
        rows: Vec::new(),
        areas: Vec::new(),
        figures: Vec::new(),
        files: Vec::new(),
    };
    let mut series = Vec::new();
    let resamples = circuit_intervals::resamples(experiment, plans);
    for m in methods.iter().filter(|_| spec.faithfulness) {
        let scores = mean_scores(m.per_pair);
        for &ablation in &choices.ablations {
            let (rows, area, line) = method_curve(
                model,
                (options, &resamples, experiment.statistics.level),
                (graph, plans, pairs),
                (m.method, &scores),
                (ablation, &choices),
                &base,
            )?;
            outcome.rows.extend(rows);
            outcome.areas.push(area);
            series.push(line);
        }
        outcome.files.extend(export(
            run_dir,
            graph,
            (m.method, &scores),
            spec,
            choices.select,
        )?);
    }
    outcome.rows.extend(evaluate_files(
        model,
        spec,
        options,
        (graph, plans, pairs),
        &choices.ablations,
        &base,
    )?);
    actpatch_report::curves::write_circuits(&run_dir.join("circuits.parquet"), &outcome.rows)
        .map_err(RunnerError::write_run(run_dir))?;
    if !series.is_empty() {
        outcome.figures = draw(experiment, run_dir, &series)?;
    }
    Ok(outcome)
}

/// One method's curve under one ablation: its rows, CPR and CMD, and its line.
fn method_curve(
    model: &HookedTransformer,
    (options, resamples, level): (&RunOptions, &Resamples, f64),
    (graph, plans, pairs): (&Graph, &[&PairPlan], &[EdgePair]),
    (method, scores): (Method, &[f32]),
    (ablation, choices): (actpatch_circuits::Ablation, &CurveChoices),
    base: &CircuitRow,
) -> Result<(Vec<CircuitRow>, CircuitArea, CurveSeries), RunnerError> {
    options.say(format!(
        "circuit: faithfulness of {method} circuits at {} sizes, {} ablation",
        choices.sizes.len(),
        ablation.name()
    ));
    let curve = faithfulness_curve(
        model,
        graph,
        pairs,
        scores,
        (ablation, choices.select),
        &choices.sizes,
    )
    .map_err(|source| RunnerError::Circuit {
        during: format!("evaluating the circuits of {method}"),
        source: Box::new(source),
    })?;
    let row = CircuitRow {
        method: method.name().to_string(),
        steps: method.steps() as u32,
        ablation: ablation.name().to_string(),
        ..base.clone()
    };
    let intervals =
        (plans.len() >= 2).then(|| circuit_intervals::areas_of(&curve, resamples, level));
    let area = CircuitArea {
        method: method.to_string(),
        ablation: ablation.name().to_string(),
        cpr: curve.cpr,
        cmd: curve.cmd,
        cpr_interval: intervals.map(|(cpr, _)| [cpr.low, cpr.high]),
        cmd_interval: intervals.map(|(_, cmd)| [cmd.low, cmd.high]),
    };
    let line = CurveSeries {
        name: format!("{method} · {}", ablation.name()),
        points: curve
            .points
            .iter()
            .map(|p| (p.fraction, p.faithfulness))
            .collect(),
    };
    Ok((curve_rows(&row, &curve, plans), area, line))
}

/// `export`'s circuit files: the method's circuit at each fraction, in the library's
/// graph JSON with `in_graph` set.
fn export(
    run_dir: &Path,
    graph: &Graph,
    (method, scores): (Method, &[f32]),
    spec: &CircuitSpec,
    select: actpatch_circuits::Select,
) -> Result<Vec<String>, RunnerError> {
    let mut files = Vec::new();
    for &fraction in &spec.export {
        let n = ((fraction * graph.edges.len() as f64) as usize).min(graph.edges.len());
        let in_graph = top_edges(graph, scores, n, select);
        let name = format!("circuits/{}.{fraction}.json", file_stem(method));
        let text = actpatch_circuits::json::graph_json(graph, scores, Some(&in_graph));
        actpatch_report::atomic::write_bytes_atomic(&run_dir.join(&name), text.as_bytes())
            .map_err(RunnerError::write_run(run_dir))?;
        files.push(name);
    }
    Ok(files)
}

/// A circuit file of `[circuit] evaluate`, read and checked against `graph` (exit 2
/// naming the file otherwise).
pub fn read_circuit_file(graph: &Graph, file: &Path) -> Result<Vec<bool>, RunnerError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        RunnerError::Input(format!(
            "[circuit] evaluate: cannot read {}: {e}",
            file.display()
        ))
    })?;
    actpatch_circuits::json::read_circuit(graph, &text).map_err(|reason| {
        RunnerError::Input(format!(
            "[circuit] evaluate: {} is not a circuit of this model: {reason}",
            file.display()
        ))
    })
}

/// The rows of every `[circuit] evaluate` file under every curve ablation: method
/// `file`, the file's name in `circuit_file`.
fn evaluate_files(
    model: &HookedTransformer,
    spec: &CircuitSpec,
    options: &RunOptions,
    (graph, plans, pairs): (&Graph, &[&PairPlan], &[EdgePair]),
    ablations: &[actpatch_circuits::Ablation],
    base: &CircuitRow,
) -> Result<Vec<CircuitRow>, RunnerError> {
    let mut rows = Vec::new();
    for file in &spec.evaluate {
        let circuit = Circuit::given(graph, read_circuit_file(graph, file)?);
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        for &ablation in ablations {
            options.say(format!(
                "circuit: faithfulness of {}, {} ablation",
                file.display(),
                ablation.name()
            ));
            let curve = circuits_faithfulness(
                model,
                graph,
                pairs,
                ablation,
                std::slice::from_ref(&circuit),
            )
            .map_err(|source| RunnerError::Circuit {
                during: format!("evaluating {}", file.display()),
                source: Box::new(source),
            })?;
            let row = CircuitRow {
                method: "file".into(),
                ablation: ablation.name().to_string(),
                select: String::new(),
                circuit_file: name.clone(),
                ..base.clone()
            };
            rows.extend(curve_rows(&row, &curve, plans));
        }
    }
    Ok(rows)
}

/// `eap-ig-inputs-5`, `eap`.
pub fn file_stem(method: Method) -> String {
    match method.steps() {
        0 => method.name().to_string(),
        steps => format!("{}-{steps}", method.name()),
    }
}

/// A curve's rows: over every pair, then each pair's own.
fn curve_rows(base: &CircuitRow, curve: &Curve, plans: &[&PairPlan]) -> Vec<CircuitRow> {
    let mut rows = Vec::new();
    for point in &curve.points {
        rows.push(CircuitRow {
            scope: "all".into(),
            n_pairs: plans.len() as u32,
            fraction: point.fraction,
            edges_requested: point.requested as u32,
            edges_after_pruning: point.edges as u32,
            logit_diff: point.logit_diff,
            faithfulness: point.faithfulness,
            logit_diff_empty: curve.ld_empty,
            logit_diff_full: curve.ld_full,
            ..base.clone()
        });
        for (p, plan) in plans.iter().enumerate() {
            let (ld, empty, full) = (
                f64::from(point.per_pair[p]),
                f64::from(curve.empty_per_pair[p]),
                f64::from(curve.full_per_pair[p]),
            );
            rows.push(CircuitRow {
                scope: SCOPE_PAIR.into(),
                pair: Some(plan.name.clone()),
                n_pairs: 1,
                fraction: point.fraction,
                edges_requested: point.requested as u32,
                edges_after_pruning: point.edges as u32,
                logit_diff: ld,
                faithfulness: (ld - empty) / (full - empty),
                logit_diff_empty: empty,
                logit_diff_full: full,
                ..base.clone()
            });
        }
    }
    rows
}

/// `figures/faithfulness.{png,svg}` (linear size axis) and `faithfulness_log.*`; the
/// report shows each in the first of the run's formats.
fn draw(
    experiment: &Experiment,
    run_dir: &Path,
    series: &[CurveSeries],
) -> Result<Vec<String>, RunnerError> {
    let mut figures = Vec::new();
    for (stem, log_x) in [("faithfulness", false), ("faithfulness_log", true)] {
        let plot = CurvePlot {
            title: format!("{}: circuit faithfulness", experiment.experiment.name),
            series: series.to_vec(),
            log_x,
        };
        figures.extend(save_formats(experiment, run_dir, stem, |path, format| {
            plot.save(path, format)
        })?);
    }
    Ok(figures)
}

/// Saves `figures/{stem}.*` in each of the run's formats with `save`; the first one's
/// name (for the report).
pub(super) fn save_formats(
    experiment: &Experiment,
    run_dir: &Path,
    stem: &str,
    save: impl Fn(&Path, ImageFormat) -> actpatch_report::Result<()>,
) -> Result<Option<String>, RunnerError> {
    create_subfolder(run_dir, "figures")?;
    let mut first = None;
    for format in &experiment.output.formats {
        let (format, ext) = match format {
            FigureFormat::Png => (ImageFormat::Png, "png"),
            FigureFormat::Svg => (ImageFormat::Svg, "svg"),
        };
        let name = format!("figures/{stem}.{ext}");
        save(&run_dir.join(&name), format).map_err(RunnerError::write_run(run_dir))?;
        first.get_or_insert(name);
    }
    Ok(first)
}
