//! The scores of the circuit stage: the gradient methods' on every edge, and which
//! edges get exact effects and how they are computed.

use actpatch_circuits::{attribute, exact_edges, Ablation, EdgePair, Graph, Method, PairScores};
use actpatch_model::HookedTransformer;

use super::circuit_edges::Scored;
use crate::experiment::CircuitSpec;
use crate::options::RunOptions;
use crate::validate::PairPlan;
use crate::RunnerError;

/// Where a run's exact edge effects come from.
#[derive(Clone, Copy)]
pub(crate) enum ExactSource {
    /// Computed here (a single-process run).
    Compute,
    /// Read from the parts the run's `count` shards wrote (a merge).
    Shards { count: usize },
}

/// The model, graph, pairs and options a circuit stage scores with.
pub(super) type ScoreContext<'a> = (
    &'a HookedTransformer,
    &'a Graph,
    &'a [EdgePair],
    &'a RunOptions,
);

/// The swept pairs as token ids and answers.
pub(super) fn edge_pairs_of(pairs: &[&PairPlan]) -> Vec<EdgePair> {
    pairs
        .iter()
        .filter_map(|p| {
            let answers = p.answers?;
            Some(EdgePair {
                clean: p.clean_tokens.clone(),
                corrupted: p.corrupted_tokens.clone(),
                answers: [answers.correct, answers.incorrect],
            })
        })
        .collect()
}

/// Every method of `methods` but `exact`, on every edge.
pub(super) fn score_methods(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    (methods, ablation): (&[Method], Ablation),
    options: &RunOptions,
) -> Result<Vec<Scored>, RunnerError> {
    let mut scored = Vec::new();
    for method in methods.iter().copied().filter(|m| *m != Method::Exact) {
        options.say(format!(
            "circuit: {method} over {} edges, {} pairs",
            graph.edges.len(),
            pairs.len()
        ));
        let per_pair = attribute(model, graph, pairs, method, ablation).map_err(|source| {
            RunnerError::Circuit {
                during: format!("scoring edges with {method}"),
                source: Box::new(source),
            }
        })?;
        scored.push(Scored {
            method,
            per_pair,
            edges: (0..graph.edges.len()).collect(),
        });
    }
    Ok(scored)
}

/// The edges `exact` runs on: every edge when `methods` lists it, or the top
/// `exact_top` edges of the first other method (by |mean score|, ties by index);
/// `None` when the run has no exact effects. `scored` needs only that first method.
pub(super) fn exact_edge_list(
    spec: &CircuitSpec,
    methods: &[Method],
    graph: &Graph,
    scored: &[Scored],
) -> Option<Vec<usize>> {
    match (spec.exact_top, methods.contains(&Method::Exact)) {
        (Some(n), _) => {
            let mean = actpatch_circuits::mean_scores(&scored.first()?.per_pair);
            let mut order: Vec<usize> = (0..mean.len()).collect();
            order.sort_by(|a, b| mean[*b].abs().total_cmp(&mean[*a].abs()).then(a.cmp(b)));
            order.truncate(n.min(mean.len()));
            Some(order)
        }
        (None, true) => Some((0..graph.edges.len()).collect()),
        (None, false) => None,
    }
}

/// The exact effects of `edges` on every pair.
pub(super) fn exact_run(
    (model, graph, pairs, options): ScoreContext,
    ablation: Ablation,
    edges: &[usize],
) -> Result<Vec<PairScores>, RunnerError> {
    options.say(format!(
        "circuit: exact effects of {} edges, {} pairs",
        edges.len(),
        pairs.len()
    ));
    exact_edges(model, graph, pairs, ablation, edges).map_err(|source| RunnerError::Circuit {
        during: "measuring exact edge effects".into(),
        source: Box::new(source),
    })
}
