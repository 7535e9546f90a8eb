//! What an architecture file provides. [`crate::HookedTransformer`] builds every
//! forward pass — full ([`crate::HookedTransformer::forward`]) or partial
//! ([`crate::partial`]) — from these pieces, over the shared layers of
//! [`crate::layers`].
//!
//! Adding an architecture: a file with its config, its `Block` and a model struct
//! implementing [`ArchModel`] (its `Block` computes its keys and values twice: with
//! hooks in `forward`, without in `keys_values`, for partial passes — keep them the
//! same computation); an [`crate::Architecture`] variant; its `model_type`s in
//! [`crate::load`]; and, when its hook points differ from the existing families', a
//! `HookSpace` constructor in `actpatch-hooks`. Shared pieces: [`crate::layers`]
//! (linear maps, norms), [`crate::attention`] (masks, scale, soft-cap, sliding window,
//! cached prefixes), [`crate::rotary`] and [`crate::rope`] (rotary tables, scaling).

use actpatch_hooks::{BlockSite, HookSpace, Hooks};
use candle_core::{Device, Tensor};

use crate::attention::{AttentionSpec, Frame, KvPrefix};
use crate::edges::{
    attention_input_gradients, project_one_head_per_row, EdgeBlock, ReceiverInputs,
};
use crate::{ModelDims, Readout, Result};

pub(crate) trait ArchModel: Send + Sync {
    fn dims(&self) -> &ModelDims;

    /// The hook points this architecture has.
    fn hook_space(&self) -> HookSpace;

    /// The token embedding matrix `W_E`, `[d_vocab, d_model]`.
    fn token_embeddings(&self) -> &Tensor;

    /// The factor a token's row of `W_E` is multiplied by before it enters the
    /// residual stream (Gemma's √d_model; 1 elsewhere).
    fn embedding_scale(&self) -> f64 {
        1.0
    }

    /// The hook point whose cached value attention uses as keys (after rotary
    /// embedding where there is one). Values are `attn.hook_v`.
    fn key_site(&self) -> BlockSite;

    /// Layer `layer`'s attention scale, soft-cap and sliding window (`layer` in range).
    fn attention_spec(&self, layer: usize) -> AttentionSpec;

    /// Whether a site's value at one position can reach the other positions of its
    /// own layer, i.e. it is computed before (and feeds) the layer's keys and values.
    /// A patch at any other site of the last layer reaches the final position's logits
    /// only from the final position. Override when a block computes more before its
    /// keys and values (e.g. a norm on the keys).
    fn site_feeds_keys_values(&self, site: BlockSite) -> bool {
        default_feeds_keys_values(site)
    }

    /// tokens `[batch, pos]` → the residual stream entering block 0
    /// `[batch, pos, d_model]`, through the embedding hook points.
    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor>;

    /// The frame of prompt positions `start..start + len`.
    fn frame(&self, start: usize, len: usize, device: &Device) -> Result<Frame>;

    /// Block `layer` on rows holding the positions of `frame`, after `prefix`'s keys
    /// and values: `[batch, len, d_model]` → `[batch, len, d_model]`. Hook points see
    /// frame-relative positions.
    fn block_forward(
        &self,
        layer: usize,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<&KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor>;

    /// Block `layer`'s keys and values at the frame's positions, no hooks:
    /// `[batch, len, d_model]` → (`[batch, len, kv_head, d_head]`, the same).
    fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        frame: &Frame,
    ) -> Result<(Tensor, Tensor)>;

    /// Block `layer`'s part in the edge graph ([`crate::edges`]); `None` for families
    /// without one.
    fn edge_block(&self, _layer: usize) -> Option<&dyn EdgeBlock> {
        None
    }

    /// Block `layer` from position 0 with each receiver reading its own input
    /// ([`crate::edges`]): `[batch, pos, d_model]` → `[batch, pos, d_model]`.
    fn block_forward_edges(
        &self,
        layer: usize,
        resid_pre: Tensor,
        (frame, prefix): (&Frame, Option<&KvPrefix>),
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.edge_block_or_error(layer)?
            .forward_edges(resid_pre, (frame, prefix), inputs, hooks)
    }

    /// Each query head's gradient at its q, k and v input (`[batch, head, pos,
    /// d_model]` each) from the gradients at its projections' outputs (`[batch, pos,
    /// head, d_head]`, keys and values per query head) and the block's input
    /// `resid_pre` `[batch, pos, d_model]` (see [`crate::edges`]).
    fn head_input_projections(
        &self,
        (layer, input, n_heads): (usize, usize, usize),
        heads: &[usize],
        x: &Tensor,
    ) -> Result<Tensor> {
        let block = self.edge_block_or_error(layer)?;
        project_one_head_per_row(block.columns(input), n_heads, heads, x, |rows| {
            block.norm1(rows)
        })
    }

    fn attention_input_gradients(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        grads: [&Tensor; 3],
    ) -> Result<[Tensor; 3]> {
        let block = self.edge_block_or_error(layer)?;
        attention_input_gradients(
            resid_pre,
            grads,
            |i| block.columns(i),
            |x, g, batch| block.ln1_input_gradients(x, g, batch),
        )
    }

    /// Each head's output into the residual stream (`attn.hook_result`; Gemma 2: its
    /// share of the normalized output) from layer `layer`'s `z`: `[batch, pos, head,
    /// d_head]` → `[batch, pos, head, d_model]`.
    fn head_results(&self, layer: usize, z: &Tensor) -> Result<Tensor> {
        self.edge_block_or_error(layer)?.head_outputs(z)
    }

    /// [`ArchModel::edge_block`], or the error that the family has no edge graph.
    fn edge_block_or_error(&self, layer: usize) -> Result<&dyn EdgeBlock> {
        self.edge_block(layer)
            .ok_or(crate::ModelError::NoEdgeGraph {
                arch: self.dims().arch.name(),
            })
    }

    /// Whether attention and MLP read the same residual stream (GPT-NeoX's
    /// `use_parallel_residual`).
    fn parallel_blocks(&self) -> bool {
        false
    }

    /// Final norm and unembedding of `[batch, len, d_model]`.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor>;
}

/// The sites computed before a pre-norm block's keys and values: its input, the first
/// norm, the keys (before and after rotary) and the values.
pub(crate) fn default_feeds_keys_values(site: BlockSite) -> bool {
    matches!(
        site,
        BlockSite::ResidPre
            | BlockSite::Ln1Scale
            | BlockSite::Ln1Normalized
            | BlockSite::K
            | BlockSite::V
            | BlockSite::RotK
    )
}
