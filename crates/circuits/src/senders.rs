//! What each sender writes into the residual stream on a prompt, and what else the
//! methods read off the same run: the logit difference, the residual stream entering
//! every block, and every block's keys and values (for passes from a later position).

use actpatch_hooks::{BlockSite, HookPoint};
use actpatch_model::{BaseRun, HookedTransformer};
use candle_core::Tensor;

use crate::batches::batches;
use crate::gradients::logit_diff_values;
use crate::graph::Graph;
use crate::Result;

/// What the senders wrote on one prompt.
pub struct SenderRun {
    /// The run as partial passes continue it: every block's input, keys and values.
    pub base: BaseRun,
    /// Every sender's output in the graph's sender order: `[sender, pos, d_model]`.
    pub outputs: Tensor,
    /// The run's logit difference.
    pub logit_diff: f32,
}

impl SenderRun {
    /// Layer `layer`'s `hook_attn_out` (its heads' outputs and the output bias):
    /// `[1, pos, d_model]`.
    pub fn attn_out(&self, layer: usize) -> Result<&Tensor> {
        Ok(self
            .base
            .cache()
            .get(HookPoint::block(layer, BlockSite::AttnOut))?)
    }

    /// The residual stream entering block `layer`, or leaving the last block for
    /// `layer = n_layers`: `[1, pos, d_model]`.
    pub fn stream(&self, layer: usize, n_layers: usize) -> Result<&Tensor> {
        let point = match layer.checked_sub(1) {
            Some(last) if layer == n_layers => HookPoint::block(last, BlockSite::ResidPost),
            _ => HookPoint::resid_pre(layer),
        };
        Ok(self.base.cache().get(point)?)
    }
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
            HookPoint::block(layer, BlockSite::Z),
            HookPoint::block(layer, BlockSite::AttnOut),
            HookPoint::block(layer, BlockSite::MlpOut),
        ]);
    }
    let prompts: Vec<&[u32]> = batch.iter().map(|(tokens, _)| *tokens).collect();
    let bases = model.base_runs(&prompts, points)?; // every block's input, keys and values too
    let logits = Tensor::cat(&bases.iter().map(BaseRun::logits).collect::<Vec<_>>(), 0)?; // [rows, d_vocab]
    let answers: Vec<[u32; 2]> = batch.iter().map(|(_, a)| *a).collect();
    let diffs = logit_diff_values(&logits, &answers)?;
    // Each layer's heads' outputs, all rows in one product: [rows, pos, head, d_model].
    let mut results = Vec::with_capacity(graph.n_layers);
    for layer in 0..graph.n_layers {
        let z = HookPoint::block(layer, BlockSite::Z);
        let z: Vec<&Tensor> = (bases.iter())
            .map(|b| b.cache().get(z))
            .collect::<std::result::Result<_, _>>()?; // [1, pos, head, d_head] each
        results.push(model.head_results(layer, &Tensor::cat(&z, 0)?)?);
    }
    let mut runs = Vec::with_capacity(batch.len());
    for (row, (base, logit_diff)) in bases.into_iter().zip(diffs).enumerate() {
        let at = |point: HookPoint| base.cache().get(point);
        let mut parts = vec![at(HookPoint::Embed)?.clone()]; // [1, pos, d_model]
        for (layer, heads) in results.iter().enumerate() {
            parts.push(heads.get(row)?.transpose(0, 1)?); // [head, pos, d_model]
            parts.push(at(HookPoint::block(layer, BlockSite::MlpOut))?.clone());
        }
        let outputs = Tensor::cat(&parts, 0)?.contiguous()?; // [sender, pos, d_model]
        runs.push(SenderRun {
            base,
            outputs,
            logit_diff,
        });
    }
    Ok(runs)
}
