//! Exact edge effects: for each edge `s → r`, the clean run in which receiver `r`'s
//! input alone reads the ablated output of `s` in place of the clean one (every other
//! receiver reads the clean stream; everything after `r` is recomputed), minus the
//! clean run's logit difference. Edges into one layer's receivers of one kind run as
//! the rows of one batched pass.

use actpatch_hooks::Hooks;
use actpatch_model::{EdgeInputs, HookedTransformer, Readout, ReceiverInputs};
use candle_core::Tensor;

use crate::gradients::logit_diffs;
use crate::graph::{Graph, Qkv, Receiver};
use crate::runs::{EdgePair, PairRuns};
use crate::Result;

/// Rows × positions per pass.
const ROW_POSITIONS_PER_PASS: usize = 512;

/// Where an edge's delta goes: the receiver's layer and input kind (one batched pass
/// per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Head(usize, Qkv),
    Mlp(usize),
    Logits,
}

fn slot_of(receiver: Receiver) -> Slot {
    match receiver {
        Receiver::Head { layer, input, .. } => Slot::Head(layer, input),
        Receiver::Mlp { layer } => Slot::Mlp(layer),
        Receiver::Logits => Slot::Logits,
    }
}

/// The group of edges whose exact effects share batched passes: the edges into one
/// layer's receivers of one input kind (every head's queries, keys or values; the MLP;
/// the logits), as `(first block its passes run, kind 0–4)`, in the order the groups
/// run. A sharded run gives each group to one shard, so every edge is computed in the
/// same batch as in one process, and gets the same value bit for bit.
pub fn exact_group(graph: &Graph, edge: usize) -> (usize, u8) {
    match slot_of(graph.receivers[graph.edges[edge].receiver]) {
        Slot::Head(layer, Qkv::Q) => (layer, 0),
        Slot::Head(layer, Qkv::K) => (layer, 1),
        Slot::Head(layer, Qkv::V) => (layer, 2),
        Slot::Mlp(layer) => (layer, 3),
        Slot::Logits => (graph.n_layers, 4),
    }
}

/// The exact effect of each edge in `edges` (indices into the graph's edges); the other
/// entries 0. Also the clean logit difference.
pub(crate) fn exact_scores(
    model: &HookedTransformer,
    graph: &Graph,
    pair: &EdgePair,
    runs: &PairRuns,
    edges: &[usize],
) -> Result<Vec<f32>> {
    let (ld_clean, streams, delta) = (runs.clean.logit_diff, &runs.clean.streams, &runs.delta);
    let mut scores = vec![0f32; graph.edges.len()];
    let mut by_slot: Vec<(Slot, usize)> = edges
        .iter()
        .map(|&e| (slot_of(graph.receivers[graph.edges[e].receiver]), e))
        .collect();
    by_slot.sort();
    let per_pass = (ROW_POSITIONS_PER_PASS / pair.clean.len().max(1)).max(1);
    let mut start = 0;
    while start < by_slot.len() {
        let slot = by_slot[start].0;
        let mut end = start + 1;
        while end < by_slot.len() && by_slot[end].0 == slot && end - start < per_pass {
            end += 1;
        }
        let chunk: Vec<usize> = by_slot[start..end].iter().map(|(_, e)| *e).collect();
        let lds = patched_pass(model, graph, (pair, streams), delta, slot, &chunk)?;
        for (e, ld) in chunk.iter().zip(lds) {
            scores[*e] = ld - ld_clean;
        }
        start = end;
    }
    Ok(scores)
}

/// One pass of the clean prompt from the receivers' block on (the clean stream
/// before it), a row per edge of `chunk` (all into `slot`).
fn patched_pass(
    model: &HookedTransformer,
    graph: &Graph,
    (pair, streams): (&EdgePair, &[Tensor]),
    delta: &Tensor,
    slot: Slot,
    chunk: &[usize],
) -> Result<Vec<f32>> {
    let (_, pos, d_model) = delta.dims3()?;
    let rows = chunk.len();
    let sender_delta = |e: usize| delta.narrow(0, graph.edges[e].sender, 1); // [1, pos, d_model]
    let mut inputs = EdgeInputs::none(graph.n_layers);
    match slot {
        Slot::Head(layer, input) => {
            let heads = graph.n_heads;
            let per_row = chunk
                .iter()
                .map(|&e| {
                    let head = graph.receivers[graph.edges[e].receiver].head().unwrap_or(0);
                    let one = sender_delta(e)?.unsqueeze(2)?; // [1, pos, 1, d_model]
                    let mut parts = Vec::with_capacity(3);
                    if head > 0 {
                        parts.push(Tensor::zeros(
                            (1, pos, head, d_model),
                            one.dtype(),
                            one.device(),
                        )?);
                    }
                    parts.push(one.clone());
                    if head + 1 < heads {
                        parts.push(Tensor::zeros(
                            (1, pos, heads - head - 1, d_model),
                            one.dtype(),
                            one.device(),
                        )?);
                    }
                    Ok(Tensor::cat(&parts, 2)?)
                })
                .collect::<Result<Vec<_>>>()?;
            let per_head = Some(Tensor::cat(&per_row, 0)?); // [rows, pos, head, d_model]
            let mut receivers = ReceiverInputs::default();
            match input {
                Qkv::Q => receivers.q = per_head,
                Qkv::K => receivers.k = per_head,
                Qkv::V => receivers.v = per_head,
            }
            inputs.layers[layer] = Some(receivers);
        }
        Slot::Mlp(layer) => {
            let per_row = chunk
                .iter()
                .map(|&e| sender_delta(e))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            inputs.layers[layer] = Some(ReceiverInputs {
                mlp: Some(Tensor::cat(&per_row, 0)?),
                ..ReceiverInputs::default()
            });
        }
        Slot::Logits => {
            let per_row = chunk
                .iter()
                .map(|&e| sender_delta(e))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            inputs.logits = Some(Tensor::cat(&per_row, 0)?);
        }
    }
    let start = match slot {
        Slot::Head(layer, _) | Slot::Mlp(layer) => layer,
        Slot::Logits => graph.n_layers,
    };
    let resid = streams[start]
        .broadcast_as((rows, pos, d_model))?
        .contiguous()?; // [rows, pos, d_model]
    let mut hooks = Hooks::none();
    let readout = Readout::LastPosition;
    let logits = model.forward_edges_from(start, resid, &mut hooks, readout, &inputs, false)?;
    Ok(logit_diffs(&logits, &vec![pair.answers; rows])?.to_vec1::<f32>()?)
}
