//! The pairs edge attribution runs on, and what every method reads off their clean and
//! corrupted runs: each sender's output, and what an ablation puts in its place.

use actpatch_model::{HookedTransformer, ModelError};
use candle_core::Tensor;

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
    /// The first position at which an ablated output can differ from the clean one:
    /// under patching, where the prompts first differ (the positions before are the
    /// same in both runs, so every `delta` is 0 there); 0 under the other ablations.
    /// At most the last position. Passes that patch edges run from here on.
    pub first_position: usize,
}

impl PairRuns {
    /// What each sender writes when ablated: `[sender, pos, d_model]`.
    pub fn ablated(&self) -> Result<Tensor> {
        Ok((&self.clean.outputs + &self.delta)?)
    }
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
        .zip(pairs)
        .enumerate()
        .map(|(i, ((clean, corrupted), pair))| {
            let ablated = match (&means, ablation) {
                (Some(means), _) => means[i].clone(),
                (None, Ablation::Zero) => clean.outputs.zeros_like()?,
                (None, _) => corrupted.outputs.clone(),
            };
            let delta = (ablated - &clean.outputs)?; // [sender, pos, d_model]
            Ok(PairRuns {
                clean,
                corrupted,
                delta,
                first_position: first_position(pair, ablation),
            })
        })
        .collect()
}

/// [`PairRuns::first_position`].
fn first_position(pair: &EdgePair, ablation: Ablation) -> usize {
    let len = pair.clean.len();
    match ablation {
        Ablation::Patching => (pair.clean.iter().zip(&pair.corrupted))
            .position(|(a, b)| a != b)
            .unwrap_or(len)
            .min(len.saturating_sub(1)),
        Ablation::Zero | Ablation::Mean => 0,
    }
}

/// What every method checks first: pairs, a family with an edge graph, the ablation
/// and steps, equal lengths.
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

/// Each pair's mean ablation: every sender's mean output, position by position, over
/// the corrupted prompts of the pair's token length (each length needs two prompts at
/// least).
fn mean_outputs(pairs: &[EdgePair], runs: &[(SenderRun, SenderRun)]) -> Result<Vec<Tensor>> {
    let mut lengths: Vec<usize> = pairs.iter().map(|p| p.corrupted.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut means = Vec::with_capacity(lengths.len());
    for &length in &lengths {
        let outputs: Vec<Tensor> = pairs
            .iter()
            .zip(runs)
            .filter(|(p, _)| p.corrupted.len() == length)
            .map(|(_, (_, corrupted))| corrupted.outputs.unsqueeze(0))
            .collect::<std::result::Result<_, _>>()?;
        if outputs.len() < 2 {
            let single = lengths
                .iter()
                .filter(|l| pairs.iter().filter(|p| p.corrupted.len() == **l).count() < 2)
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CircuitError::MeanNeedsPrompts {
                prompts: pairs.len(),
                lengths: lengths.len(),
                single,
            });
        }
        means.push((length, Tensor::cat(&outputs, 0)?.mean(0)?)); // [sender, pos, d_model]
    }
    pairs
        .iter()
        .map(|p| {
            let (_, mean) = means
                .iter()
                .find(|(l, _)| *l == p.corrupted.len())
                .ok_or(CircuitError::NoPairs)?;
            Ok(mean.clone())
        })
        .collect()
}
