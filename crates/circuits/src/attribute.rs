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

use actpatch_model::{HookedTransformer, ModelError};
use candle_core::Tensor;

use crate::exact::exact_scores;
use crate::gradient_methods::{gradient_scores, ig_activations};
use crate::graph::Graph;
use crate::senders::{sender_runs, SenderRun};
use crate::{Ablation, CircuitError, Method, Result};

/// One clean/corrupted pair: token ids (equal lengths) and the answers whose logit
/// difference is the metric.
#[derive(Debug, Clone)]
pub struct EdgePair {
    pub clean: Vec<u32>,
    pub corrupted: Vec<u32>,
    /// (correct, incorrect)
    pub answers: [u32; 2],
}

/// One pair's edge scores, in the graph's edge order, in logit-difference units.
#[derive(Debug, Clone)]
pub struct PairScores {
    pub scores: Vec<f32>,
    /// The clean and the corrupted run's logit difference.
    pub ld_clean: f32,
    pub ld_corrupted: f32,
}

/// One pair's runs: its clean and corrupted sender outputs, and the ablated minus the
/// clean outputs `[sender, pos, d_model]`.
pub(crate) struct PairRuns {
    pub clean: SenderRun,
    pub corrupted: SenderRun,
    pub delta: Tensor,
}

impl PairRuns {
    /// What each sender writes when ablated: `[sender, pos, d_model]`.
    pub fn ablated(&self) -> Result<Tensor> {
        Ok((&self.clean.outputs + &self.delta)?)
    }
}

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
            pairs
                .iter()
                .zip(&runs)
                .map(|(pair, runs)| exact_scores(model, graph, pair, runs, &all))
                .collect::<Result<_>>()?
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
    let scores = pairs
        .iter()
        .zip(&runs)
        .map(|(pair, runs)| exact_scores(model, graph, pair, runs, edges))
        .collect::<Result<Vec<_>>>()?;
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

/// Every pair's runs (all prompts of one length batched), and its `delta` under `ablation`.
pub(crate) fn pair_runs(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    ablation: Ablation,
) -> Result<Vec<PairRuns>> {
    let prompts: Vec<(&[u32], [u32; 2])> = pairs
        .iter()
        .flat_map(|p| {
            [
                (p.clean.as_slice(), p.answers),
                (p.corrupted.as_slice(), p.answers),
            ]
        })
        .collect();
    let mut runs = sender_runs(model, graph, &prompts)?.into_iter();
    let mut pairs_runs = Vec::with_capacity(pairs.len());
    while let (Some(clean), Some(corrupted)) = (runs.next(), runs.next()) {
        pairs_runs.push((clean, corrupted));
    }
    let means = match ablation {
        Ablation::Mean => Some(mean_outputs(pairs, &pairs_runs)?),
        _ => None,
    };
    pairs_runs
        .into_iter()
        .map(|(clean, corrupted)| {
            let ablated = match (&means, ablation) {
                (Some(mean), _) => mean.clone(),
                (None, Ablation::Zero) => clean.outputs.zeros_like()?,
                (None, _) => corrupted.outputs.clone(),
            };
            let delta = (ablated - &clean.outputs)?; // [sender, pos, d_model]
            Ok(PairRuns {
                clean,
                corrupted,
                delta,
            })
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

pub(crate) fn check(
    model: &HookedTransformer,
    pairs: &[EdgePair],
    method: Method,
    ablation: Ablation,
) -> Result<()> {
    if pairs.is_empty() {
        return Err(CircuitError::NoPairs);
    }
    if !model.has_edge_graph() {
        let arch = model.dims().arch.name();
        return Err(ModelError::NoEdgeGraph { arch }.into());
    }
    method.check_ablation(ablation)?;
    if method.steps() == 0
        && matches!(
            method,
            Method::EapIgInputs { .. } | Method::EapIgActivations { .. }
        )
    {
        return Err(CircuitError::ZeroSteps);
    }
    for pair in pairs {
        if pair.clean.len() != pair.corrupted.len() {
            return Err(CircuitError::UnequalLengths {
                n_clean: pair.clean.len(),
                n_corrupted: pair.corrupted.len(),
            });
        }
    }
    Ok(())
}

/// Every sender's mean output over the corrupted prompts, per position: they must be
/// at least two, of one token length.
fn mean_outputs(pairs: &[EdgePair], runs: &[(SenderRun, SenderRun)]) -> Result<Tensor> {
    let mut lengths: Vec<usize> = pairs.iter().map(|p| p.corrupted.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    if pairs.len() < 2 || lengths.len() != 1 {
        return Err(CircuitError::MeanNeedsPrompts {
            prompts: pairs.len(),
            lengths: lengths.len(),
        });
    }
    let outputs: Vec<Tensor> = runs
        .iter()
        .map(|(_, c)| c.outputs.unsqueeze(0))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::cat(&outputs, 0)?.mean(0)?) // [sender, pos, d_model]
}
