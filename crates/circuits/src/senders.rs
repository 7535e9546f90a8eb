//! What each sender writes into the residual stream on a prompt, and what else the
//! methods read off the same run: the logit difference and the residual stream
//! entering every block.

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Hooks};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;

use crate::batches::batches;
use crate::gradients::logit_diffs;
use crate::graph::Graph;
use crate::Result;

/// What the senders wrote on one prompt.
pub struct SenderRun {
    /// Every sender's output in the graph's sender order: `[sender, pos, d_model]`.
    pub outputs: Tensor,
    /// Each layer's `hook_attn_out` (its heads' outputs and the output bias):
    /// `[1, pos, d_model]` per layer.
    pub attn_out: Vec<Tensor>,
    /// The residual stream entering each block, then leaving the last:
    /// `n_layers + 1` tensors `[1, pos, d_model]`.
    pub streams: Vec<Tensor>,
    /// The run's logit difference.
    pub logit_diff: f32,
}

/// Prompts of one batched pass: rows × positions.
const ROW_POSITIONS_PER_PASS: usize = 1024;

/// The runs of `prompts` (token ids, answers), prompts of one length batched.
pub fn sender_runs(
    model: &HookedTransformer,
    graph: &Graph,
    prompts: &[(&[u32], [u32; 2])],
) -> Result<Vec<SenderRun>> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|i| prompts[*i].0.len());
    let mut runs: Vec<Option<SenderRun>> = (0..prompts.len()).map(|_| None).collect();
    let length = |i: &usize| prompts[*i].0.len();
    for range in batches(&order, length, (|len: &usize| *len, ROW_POSITIONS_PER_PASS)) {
        let members = &order[range];
        let batch: Vec<(&[u32], [u32; 2])> = members.iter().map(|i| prompts[*i]).collect();
        for (i, run) in members.iter().zip(batch_runs(model, graph, &batch)?) {
            runs[*i] = Some(run);
        }
    }
    Ok(runs.into_iter().flatten().collect())
}

/// One forward pass of prompts of one length.
fn batch_runs(
    model: &HookedTransformer,
    graph: &Graph,
    batch: &[(&[u32], [u32; 2])],
) -> Result<Vec<SenderRun>> {
    let last = graph.n_layers.saturating_sub(1);
    let mut points = vec![
        HookPoint::Embed,
        HookPoint::block(last, BlockSite::ResidPost),
    ];
    for layer in 0..graph.n_layers {
        points.extend([
            HookPoint::resid_pre(layer),
            HookPoint::block(layer, BlockSite::Z),
            HookPoint::block(layer, BlockSite::AttnOut),
            HookPoint::block(layer, BlockSite::MlpOut),
        ]);
    }
    let rows: Vec<Vec<u32>> = batch.iter().map(|(tokens, _)| tokens.to_vec()).collect();
    let tokens = model.tokens_tensor(&rows)?;
    let mut hooks = Hooks::caching(CacheFilter::only(points));
    let logits = model.forward(&tokens, &mut hooks, Readout::LastPosition)?; // [rows, d_vocab]
    let answers: Vec<[u32; 2]> = batch.iter().map(|(_, a)| *a).collect();
    let diffs = logit_diffs(&logits, &answers)?.to_vec1::<f32>()?;
    let cache = hooks.into_cache();
    let at = |point: HookPoint| cache.get(point);
    let mut results = Vec::with_capacity(graph.n_layers);
    for layer in 0..graph.n_layers {
        let z = at(HookPoint::block(layer, BlockSite::Z))?; // [rows, pos, head, d_head]
        results.push(model.head_results(layer, z)?); // [rows, pos, head, d_model]
    }
    let mut runs = Vec::with_capacity(batch.len());
    for (row, logit_diff) in diffs.into_iter().enumerate() {
        let one = |t: &Tensor| t.narrow(0, row, 1); // [1, ...]
        let mut parts = vec![one(at(HookPoint::Embed)?)?]; // [1, pos, d_model]
        let mut attn_out = Vec::with_capacity(graph.n_layers);
        let mut streams = Vec::with_capacity(graph.n_layers + 1);
        for (layer, heads) in results.iter().enumerate() {
            parts.push(one(heads)?.squeeze(0)?.transpose(0, 1)?); // [head, pos, d_model]
            parts.push(one(at(HookPoint::block(layer, BlockSite::MlpOut))?)?);
            attn_out.push(one(at(HookPoint::block(layer, BlockSite::AttnOut))?)?);
            streams.push(one(at(HookPoint::resid_pre(layer))?)?);
        }
        streams.push(one(at(HookPoint::block(last, BlockSite::ResidPost))?)?);
        runs.push(SenderRun {
            outputs: Tensor::cat(&parts, 0)?.contiguous()?, // [sender, pos, d_model]
            attn_out,
            streams,
            logit_diff,
        });
    }
    Ok(runs)
}
