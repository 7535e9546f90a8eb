//! What an architecture file provides. [`crate::HookedTransformer`] builds every
//! forward pass from these pieces, so a new architecture is one file implementing
//! [`ArchModel`] over the shared layers of [`crate::layers`].

use actpatch_hooks::{BlockSite, HookSpace, Hooks};
use candle_core::{Device, Tensor};

use crate::layers::{Frame, KvPrefix};
use crate::{ModelDims, Readout, Result};

pub(crate) trait ArchModel: Send + Sync {
    fn dims(&self) -> &ModelDims;

    /// The hook points this architecture has.
    fn hook_space(&self) -> HookSpace;

    /// The hook point whose cached value attention uses as keys.
    fn key_site(&self) -> BlockSite;

    /// tokens `[batch, pos]` → the residual stream entering block 0
    /// `[batch, pos, d_model]`, through the embedding hook points.
    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor>;

    /// The frame of prompt positions `start..start + len`.
    fn frame(&self, start: usize, len: usize, device: &Device) -> Result<Frame>;

    /// Block `layer`: `[batch, len, d_model]` → `[batch, len, d_model]`.
    fn block_forward(
        &self,
        layer: usize,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor>;

    /// Block `layer`'s keys and values at the frame's positions, no hooks.
    fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        frame: &Frame,
    ) -> Result<(Tensor, Tensor)>;

    /// Final norm and unembedding of `[batch, len, d_model]`.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor>;
}
