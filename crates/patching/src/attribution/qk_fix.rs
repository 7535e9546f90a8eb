//! AtP*'s fix for queries and keys (Kramár et al. 2024, the "QK fix" of AtP*): a
//! patched query or key changes attention scores, and the softmax after them can be
//! saturated, where its gradient says nothing of a large change. So the patched
//! attention pattern is computed exactly, and only the step from the pattern to the
//! logit difference is linear:
//!
//! I_AtPfix(n) = Σ_t (A_patched(t) − A(t))ᵀ · ∂L/∂A(t),
//!
//! summed over the query rows t the patch changes (one row for a query at one
//! position, every row at or after a key's position). Both patterns are computed here
//! the same way from the target's queries and keys, with the layer's own scale,
//! soft-cap (Gemma 2) and mask: A = softmax(cap(q · kᵀ · scale + δ) + mask), δ = 0 for
//! the target's own. With GradDrop (AtP*), ∂L/∂A is taken in each of its rows.

use actpatch_model::AttentionSpec;
use candle_core::{Tensor, D};

use crate::attribution::first_order::Dense;
use crate::{CellAxes, PatchKind, Result};

/// One layer's attention in the target run and what a patch of its queries or keys
/// moves, heads first: `[head, pos, d_head]` each, keys and values repeated over the
/// query heads they serve.
pub(crate) struct Attention {
    /// Queries as attention reads them (after rotary embedding where there is one).
    pub q: Tensor,
    /// Source − target queries (zero where nothing is patched).
    pub q_step: Tensor,
    pub k: Tensor,
    pub k_step: Tensor,
    /// How the layer turns q · k into scores (scale; Gemma 2's soft-cap).
    pub spec: AttentionSpec,
    /// `[head, query, key]`: 0 where a query sees a key, −∞ where the causal mask (or
    /// the sliding window) hides it, as in the target run's `hook_attn_scores`.
    pub mask: Tensor,
    /// Query heads per key/value head.
    pub n_rep: usize,
}

impl Attention {
    /// `[head, query, key]`: the target's q · kᵀ · scale, before any cap or mask.
    fn raw_scores(&self) -> Result<Tensor> {
        Ok((self.q.matmul(&self.k.t()?)? * self.spec.scale)?)
    }

    /// The pattern `[..., head, query, key]` when the raw scores move by `delta`
    /// (`[..., head, query, key]`, broadcast): softmax(cap(q · kᵀ · scale + δ) + mask).
    fn pattern(&self, raw: &Tensor, delta: Option<&Tensor>) -> Result<Tensor> {
        let moved = match delta {
            Some(delta) => raw.broadcast_add(delta)?,
            None => raw.clone(),
        };
        softmax(&self.spec.cap(moved)?.broadcast_add(&self.mask)?)
    }

    /// A_patched − A when every raw score moves by `delta`: both patterns computed the
    /// same way, so that a zero step changes nothing.
    fn pattern_change(&self, delta: &Tensor) -> Result<Tensor> {
        let raw = self.raw_scores()?;
        let patched = self.pattern(&raw, Some(delta))?;
        Ok(patched.broadcast_sub(&self.pattern(&raw, None)?)?)
    }

    /// `[rows, ..., head]` summed over the query heads of each key/value head.
    fn per_kv_head(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let heads = dims.pop().unwrap_or(0);
        dims.extend([heads / self.n_rep, self.n_rep]);
        Ok(x.reshape(dims)?.sum(D::Minus1)?)
    }
}

/// Row-wise softmax over the last axis (−∞ entries get 0).
fn softmax(x: &Tensor) -> Result<Tensor> {
    let exp = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}

/// The estimates of a query kind (`head_q`, `head_q_by_pos`) for one layer, from the
/// pattern's gradient `grad` `[rows, head, query, key]`.
pub(crate) fn queries(kind: PatchKind, attention: &Attention, grad: &Tensor) -> Result<Dense> {
    // Patching query t moves row t of the scores only: δ(t, s) = Δq(t) · k(s) / √d.
    let delta = (attention.q_step.matmul(&attention.k.t()?)? * attention.spec.scale)?; // [head, query, key]
    let change = attention.pattern_change(&delta)?;
    let per_row = grad.broadcast_mul(&change)?.sum(D::Minus1)?; // [rows, head, query]
    match kind.axes() {
        CellAxes::Head => Dense::new(&per_row.sum(D::Minus1)?), // [rows, head]
        _ => Dense::new(&per_row.transpose(1, 2)?.contiguous()?), // [rows, pos, head]
    }
}

/// The estimates of a key kind (`head_k`, `head_k_by_pos`) for one layer, per key/value
/// head, from the pattern's gradient `grad` `[rows, head, query, key]`.
pub(crate) fn keys(kind: PatchKind, attention: &Attention, grad: &Tensor) -> Result<Dense> {
    // Patching key s moves column s of the scores: δ(t, s) = q(t) · Δk(s) / √d.
    let delta = (attention.q.matmul(&attention.k_step.t()?)? * attention.spec.scale)?; // [head, query, key]
    let (heads, n_pos, _) = delta.dims3()?;
    let rows = grad.dim(0)?;
    if kind.axes() == CellAxes::Head {
        let change = attention.pattern_change(&delta)?;
        let per_head = grad
            .broadcast_mul(&change)?
            .sum(D::Minus1)?
            .sum(D::Minus1)?; // [rows, head]
        return Dense::new(&attention.per_kv_head(&per_head)?);
    }
    // One key position at a time: the scores of patch s move in column s only.
    let one_hot =
        Tensor::eye(n_pos, delta.dtype(), delta.device())?.reshape((n_pos, 1, 1, n_pos))?;
    let delta = delta.unsqueeze(0)?.broadcast_mul(&one_hot)?; // [key, head, query, key]
    let change = attention.pattern_change(&delta)?; // [key, head, query, key]
    let change = change
        .reshape((n_pos, heads, n_pos * n_pos))?
        .transpose(0, 1)?
        .contiguous()?; // [head, patched key, query · key]
    let grad = grad
        .reshape((rows, heads, n_pos * n_pos))?
        .permute((1, 2, 0))?
        .contiguous()?; // [head, query · key, rows]
    let per_key = change.matmul(&grad)?.permute((2, 1, 0))?.contiguous()?; // [rows, pos, head]
    Dense::new(&attention.per_kv_head(&per_key)?)
}
