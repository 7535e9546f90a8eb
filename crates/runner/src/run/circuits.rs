//! The circuit stage of a run (`[circuit]`): every method's edge scores on the swept
//! pairs, exact effects of the top edges, `edges.parquet` and one circuit file per
//! method in the EAP-IG library's graph JSON (`circuits/`).

use std::path::Path;
use std::time::Instant;

use actpatch_circuits::{Ablation, Graph, Method};
use actpatch_model::HookedTransformer;
use actpatch_report::EdgeRow;

use super::circuit_curves::{self, CurvesOutcome, MethodScores};
use super::circuit_edges::{self, Scored};
pub(super) use super::circuit_scores::ExactSource;
use super::circuit_scores::{
    edge_pairs_of, exact_edge_list, exact_run, score_methods, ScoreContext,
};
use super::circuit_shards;
use super::folder::create_subfolder;
use crate::experiment::{CircuitSpec, Experiment};
use crate::options::RunOptions;
use crate::validate::PairPlan;
use crate::RunnerError;
use actpatch_report::circuit_graph::{method_label, CircuitGraph, DrawnEdge};
use actpatch_report::curves::Areas;
use actpatch_report::edges::{methods_of, strongest};

/// What the circuit stage wrote, for the report and the manifest.
pub struct CircuitOutcome {
    /// The rows of `edges.parquet` over every pair (its `all` scope).
    pub rows: Vec<EdgeRow>,
    /// The circuit drawn (`figures/circuit.*`), relative to the run folder.
    pub figures: Vec<String>,
    /// Circuit files, relative to the run folder.
    pub files: Vec<String>,
    pub top: usize,
    pub seconds: f64,
    /// The faithfulness curves, when `[circuit] faithfulness` is on.
    pub curves: Option<CurvesOutcome>,
}

impl CircuitOutcome {
    /// Each method's `top` strongest edges over every pair, the first method first.
    pub fn top_edges(&self) -> Vec<crate::manifest::TopEdge> {
        let mut top = Vec::new();
        for (method, steps) in methods_of(&self.rows) {
            let label = method_label(&method, steps);
            top.extend(
                strongest(&self.rows, (&method, steps), self.top)
                    .into_iter()
                    .map(|r| crate::manifest::TopEdge {
                        method: label.clone(),
                        sender: r.sender.clone(),
                        receiver: r.receiver.clone(),
                        receiver_input: r.receiver_input.clone(),
                        score: r.score,
                        exact: r.exact,
                    }),
            );
        }
        top
    }

    /// The report's sections: the edges, then the curves.
    pub fn report_section(&self) -> String {
        let mut section = actpatch_report::edges::render_section(
            &self.rows,
            self.top,
            &self.files,
            &self.figures,
        );
        if let Some(curves) = &self.curves {
            let areas: Vec<Areas> = curves
                .areas
                .iter()
                .map(|a| Areas {
                    method: a.method.clone(),
                    ablation: a.ablation.clone(),
                    cpr: a.cpr,
                    cmd: a.cmd,
                    cpr_interval: a.cpr_interval,
                    cmd_interval: a.cmd_interval,
                })
                .collect();
            section.push_str(&actpatch_report::curves::render_section(
                &curves.rows,
                &areas,
                &curves.figures,
            ));
        }
        section
    }
}

/// Checks, before anything is written, that the run's circuit can be computed: a
/// family with an edge graph, pairs of equal lengths, enough prompts to average.
pub(super) fn check(
    model: &HookedTransformer,
    experiment: &Experiment,
    pairs: &[&PairPlan],
) -> Result<(), RunnerError> {
    let Some(spec) = &experiment.circuit else {
        return Ok(());
    };
    let (_, ablation) = spec.resolve().map_err(RunnerError::Input)?;
    if !model.has_edge_graph() {
        return Err(RunnerError::model(
            actpatch_model::ModelError::NoEdgeGraph {
                arch: model.dims().arch.name(),
            },
        ));
    }
    for plan in pairs {
        if plan.gaussian.is_some() || plan.answers.is_none() {
            return Err(RunnerError::Input(format!(
                "[circuit] pair `{}`: edge attribution needs a corrupted prompt and two answers (Gaussian-noise pairs have no corrupted sender outputs)",
                plan.name
            )));
        }
        if plan.clean_tokens.len() != plan.corrupted_tokens.len() {
            return Err(RunnerError::Input(format!(
                "[circuit] pair `{}`: the clean prompt has {} tokens and the corrupted one {}; edge attribution compares them position by position. Reword one prompt so both have the same token length, or leave the pair out of circuit runs.",
                plan.name,
                plan.clean_tokens.len(),
                plan.corrupted_tokens.len()
            )));
        }
    }
    let graph = Graph::of_model(model);
    let edges = graph.edges.len();
    for file in &spec.evaluate {
        circuit_curves::read_circuit_file(&graph, file)?;
    }
    let curves = spec.curves().map_err(RunnerError::Input)?;
    for size in &curves.sizes {
        if let actpatch_circuits::Size::Edges(n) = size {
            if *n > edges {
                return Err(RunnerError::Input(format!(
                    "[circuit] sizes: {n} edges, but this model's graph has {edges}; give at most {edges}, or a fraction such as 0.1"
                )));
            }
        }
    }
    let curved = spec.faithfulness || !spec.evaluate.is_empty();
    let means = curved && curves.ablations.contains(&Ablation::Mean);
    if ablation == Ablation::Mean || means {
        let count = |length: usize| {
            pairs
                .iter()
                .filter(|p| p.corrupted_tokens.len() == length)
                .count()
        };
        let mut single: Vec<usize> = pairs
            .iter()
            .map(|p| p.corrupted_tokens.len())
            .filter(|l| count(*l) < 2)
            .collect();
        single.sort_unstable();
        single.dedup();
        if !single.is_empty() {
            let single: Vec<String> = single.iter().map(|l| l.to_string()).collect();
            return Err(RunnerError::Input(format!(
                "[circuit] mean ablation averages each sender's output over the corrupted prompts of each token length, position by position, so every length needs two pairs at least; these lengths have one: {} tokens. Use \"patching\" or \"zero\", or add pairs of those lengths",
                single.join(", ")
            )));
        }
    }
    Ok(())
}

/// Runs `[circuit]` on `pairs` and writes its tables and files into `run_dir`.
pub(super) fn run(
    model: &HookedTransformer,
    experiment: &Experiment,
    options: &RunOptions,
    (run_id, run_dir): (&str, &Path),
    pairs: &[&PairPlan],
    exact_source: ExactSource,
) -> Result<Option<CircuitOutcome>, RunnerError> {
    let Some(spec) = &experiment.circuit else {
        return Ok(None);
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let clock = Instant::now();
    let (methods, ablation) = spec.resolve().map_err(RunnerError::Input)?;
    let graph = Graph::of_model(model);
    let edge_pairs = edge_pairs_of(pairs);
    let mut scored = score_methods(model, &graph, &edge_pairs, (&methods, ablation), options)?;
    options.stop_point(run_dir)?;
    let context = (model, &graph, edge_pairs.as_slice(), options);
    if let Some(exact) = exact_scores(
        context,
        (spec, &methods, ablation),
        &scored,
        (run_dir, exact_source),
    )? {
        scored.push(exact);
    }
    options.stop_point(run_dir)?;
    let rows = circuit_edges::write_edge_rows(
        &run_dir.join("edges.parquet"),
        (experiment, model, run_id),
        (&graph, pairs),
        &scored,
        ablation,
    )
    .map_err(RunnerError::write_run(run_dir))?; // the `all` scope's rows
    let mut files = write_circuit_files(run_dir, &graph, &scored, ablation)?;
    let figures = draw_circuit(experiment, run_dir, &graph, &rows, spec.top)?;
    let curves = match spec.faithfulness || !spec.evaluate.is_empty() {
        true => {
            let methods: Vec<MethodScores> = scored
                .iter()
                .filter(|s| s.edges.len() == graph.edges.len())
                .map(|s| MethodScores {
                    method: s.method,
                    per_pair: &s.per_pair,
                })
                .collect();
            let context = (&graph, pairs, edge_pairs.as_slice());
            let curves = circuit_curves::run(
                model,
                experiment,
                spec,
                options,
                (run_id, run_dir),
                context,
                &methods,
            )?;
            files.extend(curves.files.iter().cloned());
            Some(curves)
        }
        false => None,
    };
    Ok(Some(CircuitOutcome {
        rows,
        figures,
        files,
        top: spec.top,
        seconds: clock.elapsed().as_secs_f64(),
        curves,
    }))
}

/// The `exact` method's scores, when the run has any: computed, or from the shards'
/// parts in `run_dir`.
pub(super) fn exact_scores(
    (model, graph, pairs, options): ScoreContext,
    (spec, methods, ablation): (&CircuitSpec, &[Method], Ablation),
    scored: &[Scored],
    (run_dir, source): (&Path, ExactSource),
) -> Result<Option<Scored>, RunnerError> {
    let Some(edges) = exact_edge_list(spec, methods, graph, scored) else {
        return Ok(None);
    };
    let per_pair = match source {
        ExactSource::Compute => exact_run((model, graph, pairs, options), ablation, &edges)?,
        ExactSource::Shards { count } => circuit_shards::read_parts(run_dir, count, graph, &edges)?,
    };
    Ok(Some(Scored {
        method: Method::Exact,
        per_pair,
        edges,
    }))
}

/// `circuits/<method>.json`: the mean scores over every pair in the library's graph JSON.
fn write_circuit_files(
    run_dir: &Path,
    graph: &Graph,
    scored: &[Scored],
    ablation: Ablation,
) -> Result<Vec<String>, RunnerError> {
    let dir = create_subfolder(run_dir, "circuits")?;
    let mut files = Vec::new();
    for s in scored.iter().filter(|s| s.edges.len() == graph.edges.len()) {
        let name = format!(
            "{}.{}.json",
            circuit_curves::file_stem(s.method),
            ablation.name()
        );
        let mean = actpatch_circuits::mean_scores(&s.per_pair);
        let text = actpatch_circuits::json::graph_json(graph, &mean, None);
        actpatch_report::atomic::write_bytes_atomic(&dir.join(&name), text.as_bytes())
            .map_err(RunnerError::write_run(run_dir))?;
        files.push(format!("circuits/{name}"));
    }
    Ok(files)
}

/// `figures/circuit.*`: the first method's `top` strongest edges over every pair.
fn draw_circuit(
    experiment: &Experiment,
    run_dir: &Path,
    graph: &Graph,
    rows: &[EdgeRow],
    top: usize,
) -> Result<Vec<String>, RunnerError> {
    let Some((method, steps)) = methods_of(rows).into_iter().next() else {
        return Ok(Vec::new());
    };
    let of_method = strongest(rows, (&method, steps), top);
    let drawing = CircuitGraph {
        title: format!(
            "{}: the {} strongest edges ({})",
            experiment.experiment.name,
            of_method.len(),
            method
        ),
        n_layers: graph.n_layers,
        n_heads: graph.n_heads,
        edges: of_method
            .iter()
            .map(|r| DrawnEdge {
                sender: r.sender.clone(),
                receiver: r.receiver.clone(),
                input: r.receiver_input.clone(),
                score: r.score,
            })
            .collect(),
    };
    let figure = circuit_curves::save_formats(experiment, run_dir, "circuit", |path, format| {
        drawing.save(path, format)
    })?;
    Ok(figure.into_iter().collect())
}
