//! What each sender writes into the residual stream on a prompt, and what an ablation
//! puts in its place.

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::graph::Graph;
use crate::Result;

/// What the senders wrote on one prompt.
pub struct SenderRun {
    /// Every sender's output in the graph's sender order: `[sender, pos, d_model]`.
    pub outputs: Tensor,
    /// Each layer's `hook_attn_out` (its heads' outputs and the output bias):
    /// `[1, pos, d_model]` per layer.
    pub attn_out: Vec<Tensor>,
}

/// The senders' outputs on one prompt.
pub fn sender_run(model: &HookedTransformer, graph: &Graph, tokens: &[u32]) -> Result<SenderRun> {
    let mut points = vec![HookPoint::Embed];
    for layer in 0..graph.n_layers {
        points.push(HookPoint::block(layer, BlockSite::Z));
        points.push(HookPoint::block(layer, BlockSite::AttnOut));
        points.push(HookPoint::block(layer, BlockSite::MlpOut));
    }
    let cache = model.cache_activations(&[tokens.to_vec()], CacheFilter::only(points))?;
    let mut parts = vec![cache.get(HookPoint::Embed)?.clone()]; // [1, pos, d_model]
    for layer in 0..graph.n_layers {
        let z = cache.get(HookPoint::block(layer, BlockSite::Z))?; // [1, pos, head, d_head]
        let results = model.head_results(layer, z)?; // [1, pos, head, d_model]
        parts.push(results.squeeze(0)?.transpose(0, 1)?); // [head, pos, d_model]
        parts.push(
            cache
                .get(HookPoint::block(layer, BlockSite::MlpOut))?
                .clone(),
        );
    }
    let attn_out = (0..graph.n_layers)
        .map(|layer| {
            Ok(cache
                .get(HookPoint::block(layer, BlockSite::AttnOut))?
                .clone())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SenderRun {
        outputs: Tensor::cat(&parts, 0)?.contiguous()?, // [sender, pos, d_model]
        attn_out,
    })
}
