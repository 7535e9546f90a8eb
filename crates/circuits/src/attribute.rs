//! Edge scores: what each method estimates (or, for `exact`, measures) of the change
//! in the logit difference when one edge carries the ablated sender output into the
//! clean run — the EAP-IG library's direction and units.
//!
//! Every gradient method scores an edge `s → r` as `Δ_s · g_r`, summed over positions
//! and `d_model`: `Δ_s` the ablated minus the clean output of sender `s`
//! (`[pos, d_model]`), `g_r` the gradient of the logit difference at receiver `r`'s
//! input, averaged over the method's runs. All senders against all receivers is one
//! matrix product `[sender, pos·d] × [pos·d, receiver]` per pair; the graph's edges
//! are read off it.

use actpatch_model::HookedTransformer;

use crate::exact::exact_scores;
use crate::gradient_methods::{gradient_scores, ig_activations};
use crate::graph::Graph;
use crate::runs::{check, pair_runs, EdgePair, PairRuns, PairScores};
use crate::{Ablation, Method, Result};

/// Scores every edge of `graph` on every pair with `method`, `ablation` giving what an
/// ablated sender writes. The mean over pairs is [`mean_scores`].
pub fn attribute(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    method: Method,
    ablation: Ablation,
) -> Result<Vec<PairScores>> {
    check(model, pairs, method, ablation)?;
    let runs = pair_runs(model, graph, pairs, ablation)?;
    let scores: Vec<Vec<f32>> = match method {
        Method::Eap | Method::CleanCorrupted | Method::EapIgInputs { .. } => {
            gradient_scores(model, graph, pairs, &runs, method)?
        }
        Method::EapIgActivations { steps } => pairs
            .iter()
            .zip(&runs)
            .map(|(pair, runs)| ig_activations(model, graph, pair, runs, steps))
            .collect::<Result<_>>()?,
        Method::Exact => {
            let all: Vec<usize> = (0..graph.edges.len()).collect();
            exact_scores(model, graph, pairs, &runs, &all)?
        }
    };
    Ok(with_baselines(scores, &runs))
}

/// The exact effect of each edge in `edges` (indices into the graph's edges; the other
/// entries 0) on every pair, under `ablation`.
pub fn exact_edges(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    ablation: Ablation,
    edges: &[usize],
) -> Result<Vec<PairScores>> {
    check(model, pairs, Method::Exact, ablation)?;
    let runs = pair_runs(model, graph, pairs, ablation)?;
    let scores = exact_scores(model, graph, pairs, &runs, edges)?;
    Ok(with_baselines(scores, &runs))
}

fn with_baselines(scores: Vec<Vec<f32>>, runs: &[PairRuns]) -> Vec<PairScores> {
    scores
        .into_iter()
        .zip(runs)
        .map(|(scores, runs)| PairScores {
            scores,
            ld_clean: runs.clean.logit_diff,
            ld_corrupted: runs.corrupted.logit_diff,
        })
        .collect()
}

/// The mean of each edge's score over pairs (the library's mean over items).
pub fn mean_scores(per_pair: &[PairScores]) -> Vec<f32> {
    let n_edges = per_pair.first().map_or(0, |p| p.scores.len());
    let mut mean = vec![0f64; n_edges];
    for pair in per_pair {
        for (m, s) in mean.iter_mut().zip(&pair.scores) {
            *m += f64::from(*s);
        }
    }
    let n = per_pair.len().max(1) as f64;
    mean.into_iter().map(|m| (m / n) as f32).collect()
}
