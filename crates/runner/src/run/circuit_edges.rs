//! The rows of `edges.parquet`: every method's score of every edge for each pair, each
//! concept's mean and the mean over all pairs, with the exact effect where it ran and
//! bootstrap intervals on the strongest edges of the means.

use std::collections::BTreeMap;
use std::path::Path;

use actpatch_circuits::{Ablation, Graph, Method, PairScores};
use actpatch_model::HookedTransformer;
use actpatch_report::batched::write_table_batches;
use actpatch_report::edges::EDGES;
use actpatch_report::{EdgeRow, ReportError};

use super::circuit_intervals;
use crate::experiment::Experiment;
use crate::validate::PairPlan;

/// One method's scores on every pair.
pub(super) struct Scored {
    pub method: Method,
    pub per_pair: Vec<PairScores>,
    /// Edges it scored (all but for `exact` on the top edges only).
    pub edges: Vec<usize>,
}

/// What one group of rows of `edges.parquet` averages: one pair, a concept's pairs, or all.
struct Scope {
    kind: &'static str,
    pair: Option<String>,
    concept: Option<String>,
    /// Indices into the run's pairs.
    members: Vec<usize>,
}

/// The scopes of a run: each pair, each concept (when there are several), all pairs.
fn scopes(pairs: &[&PairPlan]) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = pairs
        .iter()
        .enumerate()
        .map(|(i, plan)| Scope {
            kind: "pair",
            pair: Some(plan.name.clone()),
            concept: Some(plan.spec.concept.clone()),
            members: vec![i],
        })
        .collect();
    let mut concepts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, plan) in pairs.iter().enumerate() {
        concepts
            .entry(plan.spec.concept.as_str())
            .or_default()
            .push(i);
    }
    if concepts.len() > 1 {
        scopes.extend(concepts.into_iter().map(|(concept, members)| Scope {
            kind: "concept",
            pair: None,
            concept: Some(concept.to_string()),
            members,
        }));
    }
    scopes.push(Scope {
        kind: "all",
        pair: None,
        concept: None,
        members: (0..pairs.len()).collect(),
    });
    scopes
}

/// Writes `edges.parquet` (`path`) scope by scope — each pair, each concept's mean and
/// the mean over all — so that only one scope's rows are in memory at a time (a real
/// model's table has millions), and returns the `all` scope's rows, all that the
/// report, the figures and the manifest read.
pub(super) fn write_edge_rows(
    path: &Path,
    (experiment, model, run_id): (&Experiment, &HookedTransformer, &str),
    (graph, pairs): (&Graph, &[&PairPlan]),
    scored: &[Scored],
    ablation: Ablation,
) -> Result<Vec<EdgeRow>, ReportError> {
    let base = EdgeRow {
        run_id: run_id.to_string(),
        experiment: experiment.experiment.name.clone(),
        model: model.source().to_string(),
        ablation: ablation.name().to_string(),
        ..EdgeRow::default()
    };
    write_table_batches(path, &EDGES, |sink| {
        let mut all = Vec::new();
        for scope in scopes(pairs) {
            let rows = scope_rows(experiment, (graph, pairs), scored, (&base, &scope));
            sink.write(&rows)?;
            if scope.kind == "all" {
                all = rows;
            }
        }
        Ok(all)
    })
}

/// One scope's rows: every method's mean score of every edge it scored over the scope's
/// pairs, with the exact effect where it ran, and intervals on the strongest edges of a
/// scope of several pairs.
fn scope_rows(
    experiment: &Experiment,
    (graph, pairs): (&Graph, &[&PairPlan]),
    scored: &[Scored],
    (base, scope): (&EdgeRow, &Scope),
) -> Vec<EdgeRow> {
    let exact = scored.iter().find(|s| s.method == Method::Exact);
    let n = scope.members.len() as f64;
    let mean_of = |s: &Scored, edge: usize| -> f64 {
        (scope.members.iter())
            .map(|&i| f64::from(s.per_pair[i].scores[edge]))
            .sum::<f64>()
            / n
    };
    let first = &scored[0].per_pair;
    let gap = (scope.members.iter())
        .map(|&i| f64::from(first[i].ld_clean - first[i].ld_corrupted))
        .sum::<f64>()
        / n;
    let scope_row = EdgeRow {
        scope: scope.kind.to_string(),
        pair: scope.pair.clone(),
        concept: scope.concept.clone(),
        n_pairs: scope.members.len() as u32,
        ..base.clone()
    };
    let mut rows = Vec::with_capacity(scored.iter().map(|s| s.edges.len()).sum());
    for s in scored {
        for &edge in &s.edges {
            let score = mean_of(s, edge);
            let exact = exact
                .filter(|e| s.method != Method::Exact && e.edges.contains(&edge))
                .map(|e| mean_of(e, edge));
            let mut row = edge_row(&scope_row, graph, edge, s.method);
            row.score = score;
            row.normalized = if gap != 0.0 { score / gap } else { f64::NAN };
            row.exact = exact;
            row.error = exact.map(|x| score - x);
            rows.push(row);
        }
    }
    if scope.kind != "pair" {
        add_intervals(&mut rows, experiment, (scope, pairs), (graph, scored));
    }
    rows
}

/// Bootstrap intervals on the mean score of each method's `[circuit] top` strongest
/// edges in a scope of several pairs (`rows`: that scope's rows).
fn add_intervals(
    rows: &mut [EdgeRow],
    experiment: &Experiment,
    (scope, pairs): (&Scope, &[&PairPlan]),
    (graph, scored): (&Graph, &[Scored]),
) {
    let top = experiment.circuit.as_ref().map_or(0, |c| c.top);
    if scope.members.len() < 2 || top == 0 {
        return;
    }
    let members: Vec<&PairPlan> = scope.members.iter().map(|i| pairs[*i]).collect();
    let resamples = circuit_intervals::resamples(experiment, &members);
    let names: BTreeMap<String, usize> = graph
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| (graph.edge_name(e), i))
        .collect();
    for s in scored {
        let mut of_method: Vec<usize> = (0..rows.len())
            .filter(|i| {
                rows[*i].method == s.method.name() && rows[*i].steps == s.method.steps() as u32
            })
            .collect();
        of_method.sort_by(|a, b| rows[*b].score.abs().total_cmp(&rows[*a].score.abs()));
        for &i in of_method.iter().take(top) {
            let Some(&edge) = names.get(&rows[i].edge) else {
                continue;
            };
            let values: Vec<f64> = scope
                .members
                .iter()
                .map(|&p| f64::from(s.per_pair[p].scores[edge]))
                .collect();
            if let Some(interval) =
                circuit_intervals::mean_of(&values, &resamples, experiment.statistics.level)
            {
                rows[i].ci_low = Some(interval.low);
                rows[i].ci_high = Some(interval.high);
            }
        }
    }
}

/// `base` with edge `edge` of `graph` and `method` filled in (scores left for the caller).
fn edge_row(base: &EdgeRow, graph: &Graph, edge: usize, method: Method) -> EdgeRow {
    let e = graph.edges[edge];
    let sender = graph.senders[e.sender];
    let receiver = graph.receivers[e.receiver];
    EdgeRow {
        method: method.name().to_string(),
        steps: method.steps() as u32,
        edge: graph.edge_name(&e),
        sender: sender.to_string(),
        receiver: actpatch_circuits::graph::ReceiverNode(receiver).to_string(),
        receiver_input: receiver.input_name().to_string(),
        sender_hook: sender.hook(),
        sender_head: sender.head().map(|h| h as u32),
        receiver_hook: receiver.hook(graph.n_layers),
        receiver_head: receiver.head().map(|h| h as u32),
        ..base.clone()
    }
}
