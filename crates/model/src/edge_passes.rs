//! The edge graph's passes ([`crate::edges`]): whole forward passes, passes from a
//! block or a position on, single blocks, and the pieces gradient methods take apart
//! (head input projections, head results, attention input gradients).

use actpatch_hooks::Hooks;
use candle_core::Tensor;

use crate::attention::KvPrefix;
use crate::edges::{ungroup_heads, EdgeInputs, FromPosition, ReceiverInputs};
use crate::kernels::Kernels;
use crate::partial::last_position_block;
use crate::{layers, Architecture, HookedTransformer, Readout, Result};

impl HookedTransformer {
    /// tokens `[batch, pos]` → logits with every receiver of the edge graph reading
    /// its own input where `inputs` says so ([`edges`]; with
    /// [`EdgeInputs::from_position`], the blocks run the positions from its start on,
    /// the embedding's hook points seeing them all); `differentiable` runs the
    /// kernels gradients can be taken through. Errors for families without an edge
    /// graph ([`ModelError::NoEdgeGraph`]).
    pub fn forward_edges(
        &self,
        tokens: &Tensor,
        hooks: &mut Hooks,
        readout: Readout,
        inputs: &EdgeInputs,
        differentiable: bool,
    ) -> Result<Tensor> {
        let mut resid = self.arch.embed(tokens, hooks)?; // [batch, pos, d_model]
        if let Some(from) = &inputs.from_position {
            let pos = resid.dim(1)?;
            if from.start >= pos {
                let reason = format!(
                    "a pass from position {} of a {pos}-token prompt",
                    from.start
                );
                return Err(candle_core::Error::Msg(reason).into());
            }
            resid = resid
                .narrow(1, from.start, pos - from.start)?
                .contiguous()?; // the positions from `start`
        }
        self.forward_edges_from(0, resid, hooks, readout, inputs, differentiable)
    }

    /// [`HookedTransformer::forward_edges`] from block `start` on, given the residual
    /// stream entering it `[batch, pos, d_model]` (positions from 0, or from
    /// [`EdgeInputs::from_position`]'s start): the blocks before
    /// are the caller's (e.g. a clean run's `resid_pre`, when nothing before `start`
    /// changes). `start = n_layers` runs the final norm and unembedding alone.
    pub fn forward_edges_from(
        &self,
        start: usize,
        resid_pre: Tensor,
        hooks: &mut Hooks,
        readout: Readout,
        inputs: &EdgeInputs,
        differentiable: bool,
    ) -> Result<Tensor> {
        let (_, pos, _) = resid_pre.dims3()?;
        let kernels = match differentiable {
            true => Kernels::Differentiable,
            false => Kernels::Fused,
        };
        let first_position = inputs.from_position.as_ref().map_or(0, |from| from.start);
        let frame = self
            .arch
            .frame(first_position, pos, resid_pre.device())?
            .with_kernels(kernels);
        let n_layers = self.dims().n_layers;
        // Next-token logits read the last block at the last position only.
        let last_only = !differentiable
            && pos > 1
            && hooks.is_idle()
            && matches!(
                readout,
                Readout::LastPosition | Readout::LastPositionColumns(_)
            );
        let mut resid = resid_pre;
        for layer in start..n_layers {
            let receivers = inputs.layer(layer);
            let prefix = self.edge_prefix(inputs, layer, receivers)?;
            resid = match receivers {
                Some(receivers) => (self.arch).block_forward_edges(
                    layer,
                    resid,
                    (&frame, prefix.as_ref()),
                    receivers,
                    hooks,
                )?,
                None if layer + 1 == n_layers && last_only => {
                    let positions = (first_position, pos);
                    last_position_block(self.arch.as_ref(), layer, resid, positions, prefix, hooks)?
                } // [batch, 1, d_model]
                None => (self.arch).block_forward(layer, resid, &frame, prefix.as_ref(), hooks)?,
            };
        }
        if let Some(delta) = &inputs.logits {
            let len = resid.dim(1)?; // pos, or 1 after a last-position block
            resid = layers::add(&resid, &delta.narrow(1, pos - len, len)?)?; // the logits' own input
        }
        self.arch.readout(&resid, hooks, readout)
    }

    /// Each query head's gradient at its q, k and v input, `[batch, head, pos, d_model]`
    /// each, from the gradients at its projections' outputs `[batch, pos, head, d_head]`
    /// (what [`ReceiverInputs::projected`] probes; keys and values per query head) and
    /// the residual stream entering block `layer` `[batch, pos, d_model]`: each
    /// projection's transpose, then the first norm's backward pass.
    pub fn attention_input_gradients(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        grads: [&Tensor; 3],
    ) -> Result<[Tensor; 3]> {
        self.check_layer(layer)?;
        self.arch.attention_input_gradients(layer, resid_pre, grads)
    }

    /// Block `layer`'s query (`input` 0), key (1) or value (2) projection of one query
    /// head per row: row `r` of `x` `[rows, pos, d_model]` (a residual stream entering
    /// the block) through the first norm and head `heads[r]`'s columns →
    /// `[rows, pos, d_head]`. What one receiver would read if only its own input were
    /// `x` (exact edge effects pass the difference as [`ReceiverInputs::projected`]).
    pub fn head_input_projections(
        &self,
        (layer, input): (usize, usize),
        heads: &[usize],
        x: &Tensor,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let n_heads = self.dims().n_heads;
        (self.arch).head_input_projections((layer, input, n_heads), heads, x)
    }

    /// tokens `[batch, pos]` → the residual stream entering block 0 `[batch, pos,
    /// d_model]`, through the embedding hook points.
    pub fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.arch.embed(tokens, hooks)
    }

    /// Block `layer` alone on the residual stream entering it `[batch, pos, d_model]`
    /// (positions from 0), its receivers reading their own inputs where `inputs` says so
    /// ([`edges`]): one step of a pass whose edge inputs depend on the pass itself
    /// (circuit evaluation). Fused kernels.
    pub fn block_edges(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.block_edges_with(layer, resid_pre, inputs, hooks, Kernels::Fused)
    }

    /// [`HookedTransformer::block_edges`] with the kernels gradients can be taken
    /// through: one block of a pass differentiated block by block (the gradient
    /// passes of `actpatch-circuits`, which keep one block's graph at a time).
    pub fn block_edges_differentiable(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.block_edges_with(layer, resid_pre, inputs, hooks, Kernels::Differentiable)
    }

    fn block_edges_with(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
        kernels: Kernels,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let (_, pos, _) = resid_pre.dims3()?;
        let frame = (self.arch.frame(0, pos, resid_pre.device())?).with_kernels(kernels);
        match inputs {
            Some(receivers) => {
                (self.arch).block_forward_edges(layer, resid_pre, (&frame, None), receivers, hooks)
            }
            None => self
                .arch
                .block_forward(layer, resid_pre, &frame, None, hooks),
        }
    }

    /// [`HookedTransformer::block_edges`] on the positions from `start` on, for rows
    /// whose earlier positions no receiver input changes: `resid_pre` `[rows, len,
    /// d_model]` holds positions `start..start + len`, and `prefix` the keys and values
    /// of positions `0..start` `[rows or 1, start, kv_head, d_head]` each, as
    /// [`BaseRun::keys_values`] gives them (keys after rotary where the family has it;
    /// repeated for every query head here where the block splits attention inputs, as
    /// the edge graph's keys and values are per query head).
    pub fn block_edges_from(
        &self,
        layer: usize,
        (resid_pre, start): (Tensor, usize),
        (keys, values): (&Tensor, &Tensor),
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let (_, len, _) = resid_pre.dims3()?;
        let frame = self.arch.frame(start, len, resid_pre.device())?;
        let prefix = (start > 0)
            .then(|| edge_kv_prefix((keys, values), Some(inputs), self.dims().n_heads))
            .transpose()?;
        let prefix = prefix.as_ref();
        (self.arch).block_forward_edges(layer, resid_pre, (&frame, prefix), inputs, hooks)
    }

    /// Layer `layer`'s keys and values before [`EdgeInputs::from_position`], if any.
    fn edge_prefix(
        &self,
        inputs: &EdgeInputs,
        layer: usize,
        receivers: Option<&ReceiverInputs>,
    ) -> Result<Option<KvPrefix>> {
        let Some(FromPosition { start, layers }) = &inputs.from_position else {
            return Ok(None);
        };
        if *start == 0 {
            return Ok(None);
        }
        let Some(Some((keys, values))) = layers.get(layer) else {
            let reason =
                format!("a pass from position {start} has no keys and values of layer {layer}");
            return Err(candle_core::Error::Msg(reason).into());
        };
        Ok(Some(edge_kv_prefix(
            (keys, values),
            receivers,
            self.dims().n_heads,
        )?))
    }

    /// Whether this model's family has an edge graph ([`edges`]).
    pub fn has_edge_graph(&self) -> bool {
        matches!(
            self.dims().arch,
            Architecture::Gpt2 | Architecture::Llama | Architecture::GptNeox | Architecture::Gemma2
        )
    }

    /// Whether attention and MLP read the same residual stream in every block
    /// (GPT-NeoX's `use_parallel_residual`, every Pythia): the edge graph's
    /// `parallel_attn_mlp`.
    pub fn parallel_attn_mlp(&self) -> bool {
        self.arch.parallel_blocks()
    }

    /// Each head's output into the residual stream (TransformerLens's
    /// `attn.hook_result`, without the output bias) from layer `layer`'s `hook_z`:
    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_model]`.
    pub fn head_results(&self, layer: usize, z: &Tensor) -> Result<Tensor> {
        self.check_layer(layer)?;
        self.arch.head_results(layer, z)
    }
}

/// Keys and values `[rows or 1, start, kv_head, d_head]` as a block's prefix: repeated
/// for every query head where `receivers` split the attention inputs (the edge graph's
/// keys and values are then per query head).
fn edge_kv_prefix(
    (keys, values): (&Tensor, &Tensor),
    receivers: Option<&ReceiverInputs>,
    n_heads: usize,
) -> Result<KvPrefix> {
    let per_query_head = receivers.is_some_and(|r| r.splits_attention() || r.projected.is_some());
    Ok(match per_query_head {
        true => KvPrefix::new(
            ungroup_heads(keys, n_heads)?,
            ungroup_heads(values, n_heads)?,
        ),
        false => KvPrefix::new(keys.clone(), values.clone()),
    })
}
