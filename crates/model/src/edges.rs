//! The edge graph's forward pass: every receiver of a block reads its own input.
//!
//! In an ordinary pass every head's query, key and value and the MLP read the same
//! residual stream. Edge attribution and edge patching (the EAP-IG library's graph,
//! TransformerLens's `use_split_qkv_input` with `ungroup_grouped_query_attention`)
//! give each receiver an input of its own: `hook_q_input`, `hook_k_input`,
//! `hook_v_input` `[batch, pos, head, d_model]` and `hook_mlp_in` `[batch, pos,
//! d_model]`. Here a block takes them as differences from its residual stream
//! ([`ReceiverInputs`]): zeros to differentiate with respect to (the gradient at a
//! receiver's input), or the corrupted-minus-clean output of the senders whose edges
//! into it are cut.
//!
//! Keys and values become per query head (each query head reads its own key and value
//! input, as the library's ungrouped graph has it): where a block gets a key or value
//! input, its `hook_k` / `hook_v` are `[batch, pos, head, d_head]`, not per key/value
//! head.

use actpatch_hooks::Hooks;
use candle_core::Tensor;

use crate::attention::{Frame, KvPrefix};
use crate::fused::heads::{project_heads, HeadSlots, RowNorm};
use crate::layers::Linear;
use crate::Result;

/// One block's receiver inputs, as differences from what they read in an ordinary
/// pass: `None` leaves that input alone.
#[derive(Debug, Clone, Default)]
pub struct ReceiverInputs {
    /// Added to each query head's input (the block's residual stream before its first
    /// norm). `[batch, pos, head, d_model]`
    pub q: Option<Tensor>,
    /// Added to each query head's key input. `[batch, pos, head, d_model]`
    pub k: Option<Tensor>,
    /// Added to each query head's value input. `[batch, pos, head, d_model]`
    pub v: Option<Tensor>,
    /// Added to the MLP's input (`hook_mlp_in`, before its norm); the residual stream
    /// goes on without it. `[batch, pos, d_model]`
    pub mlp: Option<Tensor>,
    /// Added to each query head's query, key and value right after their projections
    /// (keys and values then per query head): `[batch, pos, head, d_head]` each. Zeros
    /// to differentiate with respect to: [`crate::HookedTransformer::attention_input_gradients`]
    /// turns their gradients into the gradients at the q, k and v inputs, without a
    /// copy of the stream per head in the differentiated graph.
    pub projected: Option<[Tensor; 3]>,
    /// The edges from this block's own heads into its MLP that are cut, a 0/1 mask
    /// `[batch, head]` (1: cut): the MLP's input loses `Σ_head mask · live output`, the
    /// live outputs being this pass's (circuit evaluation; what the cut heads write
    /// instead belongs in [`Self::mlp`]).
    pub mlp_heads: Option<Tensor>,
}

impl ReceiverInputs {
    /// Whether any attention input is split per head.
    pub fn splits_attention(&self) -> bool {
        self.q.is_some() || self.k.is_some() || self.v.is_some()
    }

    /// `q`, `k`, `v` `[batch, pos, head or kv_head, d_head]` plus [`Self::projected`]
    /// where given (keys and values then per query head).
    pub(crate) fn add_projected(
        &self,
        (q, k, v): (Tensor, Tensor, Tensor),
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let Some([dq, dk, dv]) = &self.projected else {
            return Ok((q, k, v));
        };
        let heads = q.dim(2)?;
        Ok((
            (q + dq)?,
            (ungroup_heads(&k, heads)? + dk)?,
            (ungroup_heads(&v, heads)? + dv)?,
        ))
    }
}

/// What a family's block offers the edge graph; [`crate::arch::ArchModel`]'s edge
/// methods run on it.
pub(crate) trait EdgeBlock: Send + Sync {
    /// The block on the positions of `frame`, after `prefix`'s keys and values (per
    /// query head where attention inputs are split), with each receiver reading its
    /// own input.
    fn forward_edges(
        &self,
        resid_pre: Tensor,
        frame: (&Frame, Option<&KvPrefix>),
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<Tensor>;

    /// Where query (0), key (1) or value (2) heads' columns sit.
    fn columns(&self, i: usize) -> HeadColumns<'_>;

    /// The first norm on rows `[.., d_model]` (no hook points).
    fn norm1(&self, x: &Tensor) -> Result<Tensor>;

    /// The first norm's input gradients: `x` `[batch · pos, d_model]`, `grads` `[n,
    /// batch · pos, d_model]` at its output → `[batch, n, pos, d_model]`.
    fn ln1_input_gradients(&self, x: &Tensor, grads: &Tensor, batch: usize) -> Result<Tensor>;

    /// Each head's output into the residual stream from `z`:
    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_model]`.
    fn head_outputs(&self, z: &Tensor) -> Result<Tensor>;
}

/// Every block's receiver inputs (`None`: the block runs as usual).
#[derive(Debug, Clone, Default)]
pub struct EdgeInputs {
    pub layers: Vec<Option<ReceiverInputs>>,
    /// Added to the last block's output before the final norm only (the `logits`
    /// receiver, `blocks.{last}.hook_resid_post`). `[batch, pos, d_model]`
    pub logits: Option<Tensor>,
    /// A pass of the positions from a start on only, for rows whose earlier positions
    /// no input changes: the residual stream and every delta then hold positions
    /// `start..`.
    pub from_position: Option<FromPosition>,
}

/// Where a pass of [`EdgeInputs`] starts, and what its positions attend to before.
#[derive(Debug, Clone)]
pub struct FromPosition {
    pub start: usize,
    /// Per layer, the keys and values of positions `0..start`, `[batch or 1, start,
    /// kv_head, d_head]` each, as [`crate::BaseRun::keys_values`] gives them (`None`
    /// for the layers before the pass's first block).
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl EdgeInputs {
    /// No receiver differs in any of `n_layers` blocks.
    pub fn none(n_layers: usize) -> Self {
        EdgeInputs {
            layers: vec![None; n_layers],
            logits: None,
            from_position: None,
        }
    }

    pub fn layer(&self, layer: usize) -> Option<&ReceiverInputs> {
        self.layers.get(layer).and_then(|inputs| inputs.as_ref())
    }
}

/// Each head's own copy of the residual stream plus its delta:
/// `[batch, pos, d_model]` + `[batch, pos, head, d_model]` → `[batch, pos, head, d_model]`.
pub(crate) fn per_head_input(resid: &Tensor, delta: &Tensor) -> Result<Tensor> {
    Ok(resid.unsqueeze(2)?.broadcast_add(delta)?)
}

/// A norm applied to every head's input: `[batch, pos, head, d_model]` → the same,
/// through `norm` on `[batch, pos · head, d_model]`.
pub(crate) fn norm_per_head(
    x: &Tensor,
    norm: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (batch, pos, heads, d_model) = x.dims4()?;
    let flat = x.reshape((batch, pos * heads, d_model))?;
    Ok(norm(&flat)?.reshape((batch, pos, heads, d_model))?)
}

/// Where one projection's per-head columns sit in a linear map's output: head `j`'s
/// element `e` is column `offset + j · stride + e` (stride `d_head` for maps of one kind,
/// `3 · d_head` for GPT-NeoX's per-head `[q, k, v]` blocks).
#[derive(Clone, Copy)]
pub(crate) struct HeadColumns<'a> {
    pub linear: &'a Linear,
    pub offset: usize,
    pub stride: usize,
    pub src_heads: usize,
    pub d_head: usize,
}

impl<'a> HeadColumns<'a> {
    /// Query (0), key (1) or value (2) heads of three separate projections (Llama,
    /// Gemma 2): `n_heads` query heads, `n_kv_heads` key and value heads.
    pub(crate) fn separate(
        [q, k, v]: [&'a Linear; 3],
        i: usize,
        (n_heads, n_kv_heads, d_head): (usize, usize, usize),
    ) -> Self {
        let (linear, src_heads) = match i {
            0 => (q, n_heads),
            1 => (k, n_kv_heads),
            _ => (v, n_kv_heads),
        };
        HeadColumns {
            linear,
            offset: 0,
            stride: d_head,
            src_heads,
            d_head,
        }
    }

    /// The columns' indices, head by head.
    fn indices(&self, device: &candle_core::Device) -> Result<Tensor> {
        let ids: Vec<u32> = (0..self.src_heads)
            .flat_map(|j| (0..self.d_head).map(move |e| (self.offset + j * self.stride + e) as u32))
            .collect();
        Ok(Tensor::from_vec(ids, self.src_heads * self.d_head, device)?)
    }

    /// The weight per source head: `[src_head, d_model, d_head]`.
    fn weight(&self) -> Result<Tensor> {
        let weight = self.linear.weight(); // [d_model, out]
        let d_model = weight.dim(0)?;
        let picked = match self.stride == self.d_head {
            // Heads side by side: one narrow, no copy.
            true => weight.narrow(1, self.offset, self.src_heads * self.d_head)?,
            false => weight.index_select(&self.indices(weight.device())?, 1)?, // [d_model, src · d_head]
        };
        Ok(picked
            .reshape((d_model, self.src_heads, self.d_head))?
            .transpose(0, 1)?)
    }

    /// The bias per source head: `[src_head, 1, d_head]`.
    fn bias(&self) -> Result<Option<Tensor>> {
        let Some(bias) = self.linear.bias() else {
            return Ok(None);
        };
        let picked = match self.stride == self.d_head {
            true => bias.narrow(0, self.offset, self.src_heads * self.d_head)?,
            false => bias.index_select(&self.indices(bias.device())?, 0)?,
        };
        Ok(Some(picked.reshape((self.src_heads, 1, self.d_head))?))
    }
}

/// One query head's projection per row: row `r` of `x` `[rows, pos, d_model]` through
/// `norm` and the columns of query head `heads[r]` (source head `heads[r] / group`
/// under grouped-query attention), bias included → `[rows, pos, d_head]`.
pub(crate) fn project_one_head_per_row(
    columns: HeadColumns,
    n_heads: usize,
    heads: &[usize],
    x: &Tensor,
    norm: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let group = (n_heads / columns.src_heads.max(1)).max(1);
    let source: Vec<u32> = heads.iter().map(|h| (h / group) as u32).collect();
    let source = Tensor::from_vec(source, heads.len(), x.device())?;
    let weight = (columns.weight()?.contiguous()?).index_select(&source, 0)?; // [rows, d_model, d_head]
    let mut out = norm(x)?.matmul(&weight)?; // [rows, pos, d_head]
    if let Some(bias) = columns.bias()? {
        out = out.broadcast_add(&bias.contiguous()?.index_select(&source, 0)?)?;
        // [rows, 1, d_head]
    }
    Ok(out)
}

/// Each query head's projection of its own normalized input by `columns` (query head
/// `h` uses source head `h / (heads / src_heads)`, grouped-query attention's sharing):
/// `[batch, pos, head, d_model]` → `[batch, pos, head, d_head]`.
pub(crate) fn project_per_head(columns: HeadColumns, x: &Tensor) -> Result<Tensor> {
    let (batch, pos, heads, d_model) = x.dims4()?;
    let d_head = columns.d_head;
    let group = heads / columns.src_heads.max(1);
    let weight = ungroup(&columns.weight()?, group)?.contiguous()?; // [head, d_model, d_head]
    let rows = x
        .permute((2, 0, 1, 3))?
        .contiguous()?
        .reshape((heads, batch * pos, d_model))?;
    let mut out = rows.matmul(&weight)?; // [head, batch · pos, d_head]
    if let Some(bias) = columns.bias()? {
        out = out.broadcast_add(&ungroup(&bias, group)?)?;
    }
    Ok(out
        .reshape((heads, batch, pos, d_head))?
        .permute((1, 2, 0, 3))?
        .contiguous()?)
}

/// One projection (`columns`: query, key or value) of every query head from its own
/// input `resid + delta[.., head, ..]` through the first norm (`norm` on `[batch, pos ·
/// head, d_model]` rows; `row_norm`, the same norm row by row, lets a fused kernel skip
/// the copy of the stream per head): `[batch, pos, d_model]` and `[batch, pos, head,
/// d_model]` → `[batch, pos, head, d_head]`.
pub(crate) fn project_own_inputs(
    (resid, delta): (&Tensor, &Tensor),
    columns: HeadColumns,
    norm: impl Fn(&Tensor) -> Result<Tensor>,
    row_norm: RowNorm,
) -> Result<Tensor> {
    let slots = HeadSlots {
        offset: columns.offset,
        stride: columns.stride,
        d_head: columns.d_head,
        group: (delta.dim(2)? / columns.src_heads.max(1)).max(1),
    };
    let weights = (columns.linear.weight(), columns.linear.bias());
    if let Some(out) = project_heads(resid, delta, row_norm, weights, slots)? {
        return Ok(out);
    }
    let x = per_head_input(resid, delta)?; // [batch, pos, head, d_model]
    project_per_head(columns, &norm_per_head(&x, norm)?)
}

/// Queries `[batch, pos, head, d_head]` and keys and values (per query head when any
/// attention input is split), each head's from its own input where `inputs` has one:
/// `plain` gives the shared ones (computed only when some input is not split), `norm`
/// the first norm on `[batch, pos · head, d_model]` rows and row by row
/// ([`project_own_inputs`]), `columns` where each projection's heads sit.
pub(crate) fn split_qkv<'a>(
    resid_pre: &Tensor,
    inputs: &ReceiverInputs,
    plain: impl FnOnce() -> Result<(Tensor, Tensor, Tensor)>,
    (norm, row_norm): (impl Fn(&Tensor) -> Result<Tensor>, RowNorm),
    columns: impl Fn(usize) -> HeadColumns<'a>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let all_split = inputs.q.is_some() && inputs.k.is_some() && inputs.v.is_some();
    let shared = match all_split {
        true => None,
        false => Some(plain()?),
    };
    let heads = columns(0).src_heads;
    let split = |delta: Option<&Tensor>, i: usize| -> Result<Tensor> {
        match (delta, &shared) {
            (Some(delta), _) => project_own_inputs((resid_pre, delta), columns(i), &norm, row_norm),
            (None, Some((q, k, v))) => ungroup_heads([q, k, v][i], heads),
            (None, None) => {
                Err(candle_core::Error::Msg("split_qkv: no shared inputs".into()).into())
            }
        }
    };
    Ok((
        split(inputs.q.as_ref(), 0)?,
        split(inputs.k.as_ref(), 1)?,
        split(inputs.v.as_ref(), 2)?,
    ))
}

/// Repeats each entry of the leading axis `group` times in a row:
/// `[n, ...]` → `[n · group, ...]` (`ungroup(x)[i] = x[i / group]`).
fn ungroup(x: &Tensor, group: usize) -> Result<Tensor> {
    if group <= 1 {
        return Ok(x.clone());
    }
    let mut shape = x.dims().to_vec();
    let n = shape[0];
    let mut expanded = vec![n, group];
    expanded.extend_from_slice(&shape[1..]);
    shape[0] = n * group;
    Ok(x.unsqueeze(1)?.broadcast_as(expanded)?.reshape(shape)?)
}

/// Keys or values per key/value head repeated for every query head of its group:
/// `[batch, pos, kv_head, d_head]` → `[batch, pos, head, d_head]`.
pub(crate) fn ungroup_heads(kv: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, pos, kv_heads, d_head) = kv.dims4()?;
    if kv_heads == heads {
        return Ok(kv.clone());
    }
    let group = heads / kv_heads.max(1);
    Ok(kv
        .unsqueeze(3)?
        .broadcast_as((batch, pos, kv_heads, group, d_head))?
        .reshape((batch, pos, heads, d_head))?)
}

/// The MLP's input: `resid_mid` plus the block's MLP delta, less the live outputs of
/// the heads whose edges into it are cut ([`ReceiverInputs::mlp_heads`]; `cut_live`
/// gives `Σ_head mask · live output` `[batch, pos, d_model]` for a mask `[batch,
/// head]`, e.g. [`masked_head_outputs`]). `[batch, pos, d_model]`
pub(crate) fn mlp_input(
    resid_mid: &Tensor,
    inputs: Option<&ReceiverInputs>,
    cut_live: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let Some(inputs) = inputs else {
        return Ok(resid_mid.clone());
    };
    let mut mlp_in = match &inputs.mlp {
        Some(delta) => crate::layers::add(resid_mid, delta)?, // hook_mlp_in
        None => resid_mid.clone(),
    };
    if let Some(mask) = &inputs.mlp_heads {
        mlp_in = (mlp_in - cut_live(mask)?)?;
    }
    Ok(mlp_in)
}

/// `Σ_head mask · (head's output into the residual stream)` without a copy per head:
/// `z` `[batch, pos, head, d_head]` masked head by head (`mask` `[batch, head]`) through
/// `W_O` without its bias → `[batch, pos, d_model]`.
pub(crate) fn masked_head_outputs(z: &Tensor, mask: &Tensor, w_o: &Linear) -> Result<Tensor> {
    let (batch, pos, heads, d_head) = z.dims4()?;
    let mask = mask.to_dtype(z.dtype())?.reshape((batch, 1, heads, 1))?;
    let masked = z
        .broadcast_mul(&mask)?
        .reshape((batch, pos, heads * d_head))?;
    let weight = w_o.weight(); // [head · d_head, d_model]
    if let Some(out) = crate::fused::linear(&masked, weight, None)? {
        return Ok(out);
    }
    Ok(masked.broadcast_matmul(weight)?)
}

/// Each head's output into the residual stream, TransformerLens's `attn.hook_result`
/// (the output projection's bias belongs to no head): `z` `[batch, pos, head, d_head]`
/// and `W_O` as a linear map `[head · d_head, d_model]` → `[batch, pos, head, d_model]`.
pub(crate) fn head_results(z: &Tensor, w_o: &Linear) -> Result<Tensor> {
    let (batch, pos, heads, d_head) = z.dims4()?;
    let weight = w_o.weight(); // [head · d_head, d_model]
    let d_model = weight.dim(1)?;
    let weight = weight.reshape((heads, d_head, d_model))?.contiguous()?;
    let rows = z
        .permute((2, 0, 1, 3))?
        .contiguous()?
        .reshape((heads, batch * pos, d_head))?;
    let out = rows.matmul(&weight)?; // [head, batch · pos, d_model]
    Ok(out
        .reshape((heads, batch, pos, d_model))?
        .permute((1, 2, 0, 3))?
        .contiguous()?)
}

/// Each query head's gradient at its q, k and v input from the gradients at its
/// projections' outputs: `g` `[batch, pos, head, d_head]` → `gᵀ · W[head]` through the
/// norm's backward at `resid_pre` `[batch, pos, d_model]`: `[batch, head, pos, d_model]`.
/// `projection(i)` gives query (0), key (1) or value (2)'s linear map, the offset of
/// its columns and its number of heads.
pub(crate) fn attention_input_gradients<'a>(
    resid_pre: &Tensor,
    grads: [&Tensor; 3],
    projection: impl Fn(usize) -> HeadColumns<'a>,
    norm_backward: impl Fn(&Tensor, &Tensor, usize) -> Result<Tensor>,
) -> Result<[Tensor; 3]> {
    let (batch, pos, d_model) = resid_pre.dims3()?;
    let x = resid_pre.reshape((batch * pos, d_model))?;
    let mut out = Vec::with_capacity(3);
    for (i, grad) in grads.iter().enumerate() {
        let (_, _, heads, d_head) = grad.dims4()?;
        let columns = projection(i);
        let group = heads / columns.src_heads.max(1);
        let weight = columns.weight()?.transpose(1, 2)?; // [src_head, d_head, d_model]
        let weight = ungroup(&weight, group)?.contiguous()?; // [head, d_head, d_model]
        let rows =
            grad.permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((heads, batch * pos, d_head))?;
        let normalized = rows.matmul(&weight)?; // [head, batch · pos, d_model]
        out.push(norm_backward(&x, &normalized, batch)?); // [batch, head, pos, d_model]
    }
    let [q, k, v]: [Tensor; 3] = out
        .try_into()
        .map_err(|_| candle_core::Error::Msg("three inputs".into()))?;
    Ok([q, k, v])
}
