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

use actpatch_hooks::{BlockSite, HookPoint};
use actpatch_model::{HookedTransformer, ModelError};
use candle_core::Tensor;

use crate::exact::exact_scores;
use crate::gradients::{receiver_gradients, GradRow};
use crate::graph::{Graph, Sender};
use crate::senders::{sender_run, SenderRun};
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
    let runs = sender_runs(model, graph, pairs, ablation)?;
    pairs
        .iter()
        .zip(&runs)
        .map(|(pair, (clean, corrupted, delta))| {
            score_pair(model, graph, pair, (clean, corrupted), delta, method)
        })
        .collect()
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
    let runs = sender_runs(model, graph, pairs, ablation)?;
    pairs
        .iter()
        .zip(&runs)
        .map(|(pair, (_, _, delta))| {
            let (scores, ld_clean) = exact_scores(model, graph, pair, delta, edges)?;
            let ld_corrupted = crate::exact::logit_diff(model, &pair.corrupted, pair.answers)?;
            Ok(PairScores {
                scores,
                ld_clean,
                ld_corrupted,
            })
        })
        .collect()
}

/// Each pair's clean and corrupted sender outputs, and the ablated minus the clean
/// outputs `[sender, pos, d_model]`.
fn sender_runs(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    ablation: Ablation,
) -> Result<Vec<(SenderRun, SenderRun, Tensor)>> {
    let runs = pairs
        .iter()
        .map(|pair| {
            Ok((
                sender_run(model, graph, &pair.clean)?,
                sender_run(model, graph, &pair.corrupted)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let means = match ablation {
        Ablation::Mean => Some(mean_outputs(pairs, &runs)?),
        _ => None,
    };
    runs.into_iter()
        .map(|(clean, corrupted)| {
            let ablated = match (&means, ablation) {
                (Some(mean), _) => mean.clone(),
                (None, Ablation::Zero) => clean.outputs.zeros_like()?,
                (None, _) => corrupted.outputs.clone(),
            };
            let delta = (ablated - &clean.outputs)?; // [sender, pos, d_model]
            Ok((clean, corrupted, delta))
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

fn check(
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

/// One pair's scores with `delta` (ablated − clean sender outputs).
fn score_pair(
    model: &HookedTransformer,
    graph: &Graph,
    pair: &EdgePair,
    (clean, corrupted): (&SenderRun, &SenderRun),
    delta: &Tensor,
    method: Method,
) -> Result<PairScores> {
    let plain = |tokens: &[u32]| GradRow {
        tokens: tokens.to_vec(),
        answers: pair.answers,
        replace: None,
    };
    let (scores, ld_clean) = match method {
        Method::Eap => {
            let (grads, lds) = receiver_gradients(model, graph, &[plain(&pair.clean)])?;
            (edge_scores(graph, delta, &grads[0], None)?, lds[0])
        }
        Method::CleanCorrupted => {
            let rows = [plain(&pair.clean), plain(&pair.corrupted)];
            let (grads, lds) = receiver_gradients(model, graph, &rows)?;
            (edge_scores(graph, delta, &mean_of(&grads)?, None)?, lds[0])
        }
        Method::EapIgInputs { steps } => {
            let (grads, _) =
                receiver_gradients(model, graph, &input_steps(pair, clean, corrupted, steps)?)?;
            let ld_clean = crate::exact::logit_diff(model, &pair.clean, pair.answers)?;
            (
                edge_scores(graph, delta, &mean_of(&grads)?, None)?,
                ld_clean,
            )
        }
        Method::EapIgActivations { steps } => {
            ig_activations(model, graph, pair, clean, delta, steps)?
        }
        Method::Exact => {
            let all: Vec<usize> = (0..graph.edges.len()).collect();
            exact_scores(model, graph, pair, delta, &all)?
        }
    };
    let ld_corrupted = crate::exact::logit_diff(model, &pair.corrupted, pair.answers)?;
    Ok(PairScores {
        scores,
        ld_clean,
        ld_corrupted,
    })
}

/// The library's input interpolation: rows whose token embeddings are
/// `corrupted + k/steps · (clean − corrupted)`, `k = 0 … steps−1`, on the clean prompt.
fn input_steps(
    pair: &EdgePair,
    clean: &SenderRun,
    corrupted: &SenderRun,
    steps: usize,
) -> Result<Vec<GradRow>> {
    let clean_embed = clean.outputs.narrow(0, 0, 1)?; // [1, pos, d_model]
    let corrupted_embed = corrupted.outputs.narrow(0, 0, 1)?;
    let step = (&clean_embed - &corrupted_embed)?;
    (0..steps)
        .map(|k| {
            let embed = (&corrupted_embed + (&step * (k as f64 / steps as f64))?)?;
            Ok(GradRow {
                tokens: pair.clean.clone(),
                answers: pair.answers,
                replace: Some((HookPoint::Embed, embed)),
            })
        })
        .collect()
}

/// Principled EAP-IG on activations: per sender group (the input, one layer's heads, one
/// MLP), its output moved `ablated + k/steps · (clean − ablated)`, `k = 1 … steps`, the
/// receivers' gradients averaged, and that group's edges scored.
fn ig_activations(
    model: &HookedTransformer,
    graph: &Graph,
    pair: &EdgePair,
    clean: &SenderRun,
    delta: &Tensor,
    steps: usize,
) -> Result<(Vec<f32>, f32)> {
    let mut scores = vec![0f32; graph.edges.len()];
    let heads = graph.n_heads;
    let mut groups: Vec<(HookPoint, Vec<usize>, Tensor)> = Vec::new(); // (point, senders, clean value)
    groups.push((HookPoint::Embed, vec![0], clean.outputs.narrow(0, 0, 1)?));
    for layer in 0..graph.n_layers {
        let first = graph.sender_index(Sender::Head { layer, head: 0 });
        groups.push((
            HookPoint::block(layer, BlockSite::AttnOut),
            (first..first + heads).collect(),
            clean.attn_out[layer].clone(),
        ));
        let mlp = graph.sender_index(Sender::Mlp { layer });
        groups.push((
            HookPoint::block(layer, BlockSite::MlpOut),
            vec![mlp],
            clean.outputs.narrow(0, mlp, 1)?,
        ));
    }
    for (point, senders, clean_value) in groups {
        let first = senders[0];
        // The group's whole ablation at that point: its senders' deltas summed.
        let group_delta = delta.narrow(0, first, senders.len())?.sum_keepdim(0)?; // [1, pos, d_model]
        let rows = (1..=steps)
            .map(|k| {
                let away = 1.0 - k as f64 / steps as f64;
                Ok(GradRow {
                    tokens: pair.clean.clone(),
                    answers: pair.answers,
                    replace: Some((point, (&clean_value + (&group_delta * away)?)?)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (grads, _) = receiver_gradients(model, graph, &rows)?;
        let group_scores = edge_scores(graph, delta, &mean_of(&grads)?, Some(&senders))?;
        for (s, g) in scores.iter_mut().zip(group_scores) {
            *s += g;
        }
    }
    let ld_clean = crate::exact::logit_diff(model, &pair.clean, pair.answers)?;
    Ok((scores, ld_clean))
}

/// The mean of equally shaped tensors.
fn mean_of(tensors: &[Tensor]) -> Result<Tensor> {
    let stacked = Tensor::stack(tensors, 0)?;
    Ok(stacked.mean(0)?)
}

/// `Δ_s · g_r` for every edge (only those from `senders` when given; 0 elsewhere):
/// `delta` `[sender, pos, d_model]`, `grads` `[receiver, pos, d_model]`.
pub(crate) fn edge_scores(
    graph: &Graph,
    delta: &Tensor,
    grads: &Tensor,
    senders: Option<&[usize]>,
) -> Result<Vec<f32>> {
    let (n_senders, pos, d_model) = delta.dims3()?;
    let n_receivers = grads.dim(0)?;
    let delta = delta.reshape((n_senders, pos * d_model))?;
    let grads = grads.reshape((n_receivers, pos * d_model))?;
    let products = delta.matmul(&grads.t()?)?; // [sender, receiver]
    let products = products.to_vec2::<f32>()?;
    Ok(graph
        .edges
        .iter()
        .map(|e| match senders {
            Some(list) if !list.contains(&e.sender) => 0.0,
            _ => products[e.sender][e.receiver],
        })
        .collect())
}
