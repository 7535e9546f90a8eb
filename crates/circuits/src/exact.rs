//! Exact edge effects: for each edge `s → r`, the clean run in which receiver `r`'s
//! input alone reads the ablated output of `s` in place of the clean one (every other
//! receiver reads the clean stream; everything after `r` is recomputed), minus the
//! clean run's logit difference. Every (pair, edge) is a row; rows whose receivers sit
//! in one block (its heads' queries, keys and values and its MLP) — or at the logits —
//! run from that block on as one batched pass, pairs of one length together.

use actpatch_hooks::Hooks;
use actpatch_model::{EdgeInputs, FromPosition, HookedTransformer, Readout, ReceiverInputs};
use candle_core::Tensor;

use crate::batches::batches;
use crate::gradients::{answer_columns, logit_diff_values};
use crate::graph::{Graph, Qkv, Receiver};
use crate::prefix::CleanPrefixes;
use crate::runs::{EdgePair, PairRuns};
use crate::Result;

/// Rows × positions per pass.
const ROW_POSITIONS_PER_PASS: usize = 512;

/// The block an edge's pass starts at: its receiver's layer (`n_layers` for the
/// logits). The edges of one block share batched passes, so a sharded run gives each
/// block's edges to one shard, and every edge is computed in the same batch as in one
/// process: the same value bit for bit.
pub fn exact_group(graph: &Graph, edge: usize) -> usize {
    match graph.receivers[graph.edges[edge].receiver] {
        Receiver::Head { layer, .. } | Receiver::Mlp { layer } => layer,
        Receiver::Logits => graph.n_layers,
    }
}

/// The exact effect of each edge in `edges` on every pair (the other entries 0).
pub(crate) fn exact_scores(
    model: &HookedTransformer,
    graph: &Graph,
    pairs: &[EdgePair],
    runs: &[PairRuns],
    edges: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let mut scores = vec![vec![0f32; graph.edges.len()]; pairs.len()];
    if edges.is_empty() {
        return Ok(scores);
    }
    let prefixes = CleanPrefixes::of_pairs(runs);
    // (start block, length, first position, pair, edge): the order rows run in.
    let mut rows: Vec<(usize, usize, usize, usize, usize)> = (0..pairs.len())
        .flat_map(|p| edges.iter().map(move |&e| (p, e)))
        .map(|(p, e)| {
            let (len, from) = (pairs[p].clean.len(), runs[p].first_position);
            (exact_group(graph, e), len, from, p, e)
        })
        .collect();
    rows.sort_unstable();
    let shape = |r: &(usize, usize, usize, usize, usize)| (r.0, r.1, r.2);
    let positions = |(_, len, from): &(usize, usize, usize)| len - from;
    for range in batches(&rows, shape, (positions, ROW_POSITIONS_PER_PASS)) {
        let (block, _, from) = shape(&rows[range.start]);
        let chunk: Vec<(usize, usize)> = rows[range].iter().map(|r| (r.3, r.4)).collect();
        let lds = patched_pass(
            model,
            graph,
            (pairs, runs, &prefixes),
            (block, from),
            &chunk,
        )?;
        for ((p, e), ld) in chunk.iter().zip(lds) {
            scores[*p][*e] = ld - runs[*p].clean.logit_diff;
        }
    }
    Ok(scores)
}

/// One pass from block `block` on (each row's pair's clean stream before it) and from
/// position `from` on (the clean run's keys and values before it), a row per (pair,
/// edge) of `chunk`, every edge into that block or (`n_layers`) the logits.
fn patched_pass(
    model: &HookedTransformer,
    graph: &Graph,
    (pairs, runs, prefixes): (&[EdgePair], &[PairRuns], &CleanPrefixes),
    (block, from): (usize, usize),
    chunk: &[(usize, usize)],
) -> Result<Vec<f32>> {
    let len = pairs[chunk[0].0].clean.len() - from;
    let stream = |p: usize| -> Result<Tensor> {
        let resid_pre = runs[p].clean.stream(block, graph.n_layers)?; // [1, pos, d_model]
        Ok(resid_pre.narrow(1, from, len)?)
    };
    let resid = Tensor::cat(
        &chunk
            .iter()
            .map(|(p, _)| stream(*p))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?; // [rows, pos, d_model]
    let mut inputs = edge_inputs(model, graph, runs, (block, from), chunk, &resid)?;
    if from > 0 {
        let of_rows: Vec<usize> = chunk.iter().map(|(p, _)| *p).collect();
        let per_layer = (0..graph.n_layers)
            .map(|layer| match layer >= block {
                true => prefixes.rows(layer, from, &of_rows).map(Some), // [rows, from, kv_head, d_head] each
                false => Ok(None),
            })
            .collect::<Result<_>>()?;
        inputs.from_position = Some(FromPosition {
            start: from,
            layers: per_layer,
        });
    }
    let answers: Vec<[u32; 2]> = chunk.iter().map(|(p, _)| pairs[*p].answers).collect();
    let (columns, answers) = answer_columns(&answers);
    let readout = Readout::LastPositionColumns(&columns); // the answers' logits only
    let mut hooks = Hooks::none();
    let logits = model.forward_edges_from(block, resid, &mut hooks, readout, &inputs, false)?; // [rows, columns]
    logit_diff_values(&logits, &answers)
}

/// The pass's receiver inputs: each row's sender delta (from position `from`) into its
/// edge's receiver in block `block`, or into the logits (`n_layers`); `resid` `[rows,
/// pos, d_model]` is the stream entering the block.
fn edge_inputs(
    model: &HookedTransformer,
    graph: &Graph,
    runs: &[PairRuns],
    (block, from): (usize, usize),
    chunk: &[(usize, usize)],
    resid: &Tensor,
) -> Result<EdgeInputs> {
    let len = resid.dim(1)?;
    // Row r's sender delta where its edge goes into `wanted`, else 0: `[rows, pos, d_model]`.
    let deltas_into = |wanted: &dyn Fn(Receiver) -> bool| -> Result<Option<Tensor>> {
        if !chunk.iter().any(|(_, e)| wanted(receiver(graph, *e))) {
            return Ok(None);
        }
        let per_row = chunk
            .iter()
            .map(|&(p, e)| {
                let delta = runs[p].delta.narrow(0, graph.edges[e].sender, 1)?; // [1, pos, d_model]
                let delta = delta.narrow(1, from, len)?;
                Ok(match wanted(receiver(graph, e)) {
                    true => delta,
                    false => delta.zeros_like()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Tensor::cat(&per_row, 0)?))
    };
    let mut inputs = EdgeInputs::none(graph.n_layers);
    match block == graph.n_layers {
        true => inputs.logits = deltas_into(&|r| matches!(r, Receiver::Logits))?,
        false => {
            let mut receivers = ReceiverInputs {
                mlp: deltas_into(&|r| matches!(r, Receiver::Mlp { .. }))?,
                ..ReceiverInputs::default()
            };
            let mut projected = Vec::with_capacity(3);
            for kind in [Qkv::Q, Qkv::K, Qkv::V] {
                let into = |r: Receiver| matches!(r, Receiver::Head { input, .. } if input == kind);
                projected.push(match deltas_into(&into)? {
                    Some(deltas) => Some(head_patch(
                        model,
                        graph,
                        (block, kind),
                        chunk,
                        resid,
                        &deltas,
                    )?),
                    None => None,
                });
            }
            if projected.iter().any(Option::is_some) {
                let zeros = Tensor::zeros(
                    (
                        chunk.len(),
                        resid.dim(1)?,
                        graph.n_heads,
                        model.dims().d_head,
                    ),
                    resid.dtype(),
                    resid.device(),
                )?;
                let [q, k, v]: [Option<Tensor>; 3] = projected
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("three projections".into()))?;
                let or_zeros = |t: Option<Tensor>| t.unwrap_or_else(|| zeros.clone());
                receivers.projected = Some([or_zeros(q), or_zeros(k), or_zeros(v)]);
            }
            inputs.layers[block] = Some(receivers);
        }
    }
    Ok(inputs)
}

fn receiver(graph: &Graph, edge: usize) -> Receiver {
    graph.receivers[graph.edges[edge].receiver]
}

/// Head inputs of kind `kind` in block `layer`, one per row: what each row's receiver
/// head projects from its clean stream plus `deltas` (0 for rows patching something
/// else, which then project exactly what they did), minus what it projects from the
/// clean stream, at that head only: `[rows, pos, head, d_head]`, for
/// [`ReceiverInputs::projected`]. The block runs its shared projections, and only one
/// head per row is projected apart.
fn head_patch(
    model: &HookedTransformer,
    graph: &Graph,
    (layer, kind): (usize, Qkv),
    chunk: &[(usize, usize)],
    resid: &Tensor,
    deltas: &Tensor,
) -> Result<Tensor> {
    let which = match kind {
        Qkv::Q => 0,
        Qkv::K => 1,
        Qkv::V => 2,
    };
    let heads: Vec<usize> = (chunk.iter())
        .map(|(_, e)| receiver(graph, *e).head().unwrap_or(0))
        .collect();
    let project = |x: &Tensor| model.head_input_projections((layer, which), &heads, x);
    let moved = (project(&(resid + deltas)?)? - project(resid)?)?; // [rows, pos, d_head]
    let one_hot: Vec<f32> = (heads.iter())
        .flat_map(|&h| (0..graph.n_heads).map(move |j| if j == h { 1.0 } else { 0.0 }))
        .collect();
    let one_hot = Tensor::from_vec(one_hot, (heads.len(), 1, graph.n_heads, 1), resid.device())?;
    Ok(one_hot.broadcast_mul(&moved.unsqueeze(2)?)?) // [rows, pos, head, d_head]
}
