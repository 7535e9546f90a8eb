//! The methods that score edges from gradients: which runs each averages the receivers'
//! gradients over, and the edge scores `Δ_s · g_r` from them.

use actpatch_hooks::{BlockSite, HookPoint};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::gradients::GradRow;
use crate::graph::{Graph, Sender};
use crate::prefix::CleanPrefixes;
use crate::products::receiver_products;
use crate::runs::PairRuns;
use crate::senders::SenderRun;
use crate::{EdgePair, Method, Result};

/// EAP (the clean run), EAP-IG on the inputs (the library's input interpolation) and
/// clean-corrupted (the clean and the corrupted run): every pair's rows in batched
/// passes, each pair's mean gradient against its `delta`.
pub(crate) fn gradient_scores(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    runs: &[PairRuns],
    method: Method,
) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    for (group, (pair, runs)) in pairs.iter().zip(runs).enumerate() {
        let (clean, corrupted) = (&runs.clean, &runs.corrupted);
        let plain = |tokens: &[u32]| GradRow {
            tokens: tokens.to_vec(),
            answers: pair.answers,
            replace: None,
            group,
            from: runs.first_position,
        };
        match method {
            Method::CleanCorrupted => rows.extend([plain(&pair.clean), plain(&pair.corrupted)]),
            Method::EapIgInputs { steps } => rows.extend(input_steps(
                pair,
                (clean, corrupted),
                steps,
                (group, runs.first_position),
            )?),
            _ => rows.push(plain(&pair.clean)),
        }
    }
    let deltas: Vec<&Tensor> = runs.iter().map(|r| &r.delta).collect();
    let prefixes = CleanPrefixes::of_pairs(runs); // each pair's rows share its clean prompt's start
    let products = receiver_products(model, graph, (&rows, &prefixes), &deltas)?;
    Ok(products
        .iter()
        .map(|products| edge_scores(graph, products, None))
        .collect())
}

/// The library's input interpolation: rows of the clean prompt whose token embeddings
/// are `corrupted + k/steps · (clean − corrupted)`, `k = 0 … steps−1` (the clean ones
/// before the first differing token, `from`).
fn input_steps(
    pair: &EdgePair,
    (clean, corrupted): (&SenderRun, &SenderRun),
    steps: usize,
    (group, from): (usize, usize),
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
                group,
                from,
            })
        })
        .collect()
}

/// Principled EAP-IG on activations: per sender group (the input, one layer's heads,
/// one MLP), its output moved `ablated + k/steps · (clean − ablated)`, `k = 1 … steps`,
/// the receivers' gradients averaged, and that group's edges scored. One step is the
/// clean run: EAP.
pub(crate) fn ig_activations(
    model: &HookedTransformer,
    graph: &Graph,
    pair: &EdgePair,
    runs: &PairRuns,
    steps: usize,
) -> Result<Vec<f32>> {
    let (clean, delta) = (&runs.clean, &runs.delta);
    let heads = graph.n_heads;
    // (where the group's output enters, its senders, that point's clean value)
    let mut groups: Vec<(HookPoint, Vec<usize>, Tensor)> =
        vec![(HookPoint::Embed, vec![0], clean.outputs.narrow(0, 0, 1)?)];
    for layer in 0..graph.n_layers {
        let first = graph.sender_index(Sender::Head { layer, head: 0 });
        let attn_out = HookPoint::block(layer, BlockSite::AttnOut);
        groups.push((
            attn_out,
            (first..first + heads).collect(),
            clean.attn_out(layer)?.clone(),
        ));
        let mlp = graph.sender_index(Sender::Mlp { layer });
        let mlp_out = HookPoint::block(layer, BlockSite::MlpOut);
        groups.push((mlp_out, vec![mlp], clean.outputs.narrow(0, mlp, 1)?));
    }
    let mut rows = Vec::with_capacity(groups.len() * steps);
    for (group, (point, senders, clean_value)) in groups.iter().enumerate() {
        // The group's whole ablation at that point: its senders' deltas summed.
        let group_delta = delta.narrow(0, senders[0], senders.len())?.sum_keepdim(0)?; // [1, pos, d_model]
        for k in 1..=steps {
            let away = 1.0 - k as f64 / steps as f64;
            rows.push(GradRow {
                tokens: pair.clean.clone(),
                answers: pair.answers,
                replace: Some((*point, (clean_value + (&group_delta * away)?)?)),
                group,
                from: 0, // the replaced outputs are full length at a block's hook point
            });
        }
    }
    let deltas = vec![delta; groups.len()];
    let from_zero = CleanPrefixes::none(); // every row runs from position 0
    let products = receiver_products(model, graph, (&rows, &from_zero), &deltas)?;
    let mut scores = vec![0f32; graph.edges.len()];
    for ((_, senders, _), products) in groups.iter().zip(&products) {
        let group_scores = edge_scores(graph, products, Some(senders));
        for (s, g) in scores.iter_mut().zip(group_scores) {
            *s += g;
        }
    }
    Ok(scores)
}

/// `Δ_s · g_r` for every edge from `products` (`[sender][receiver]` row-major, of
/// [`receiver_products`]); only the edges from `senders` when given, 0 elsewhere.
fn edge_scores(graph: &Graph, products: &[f32], senders: Option<&[usize]>) -> Vec<f32> {
    let n_receivers = graph.receivers.len();
    graph
        .edges
        .iter()
        .map(|e| match senders {
            Some(list) if !list.contains(&e.sender) => 0.0,
            _ => products[e.sender * n_receivers + e.receiver],
        })
        .collect()
}
