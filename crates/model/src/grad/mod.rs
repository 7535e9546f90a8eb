//! CPU kernels with backward passes, for the forward passes gradients are taken
//! through (attribution patching): linear maps by constant weights, GELU, SiLU-gated
//! products, LayerNorm and RMSNorm, and attention's scores, softmax and weighted
//! values, each one candle custom op instead of a chain of element-wise ops.
//!
//! candle runs element-wise ops on one thread, and its backward pass computes a
//! gradient for every input of every op (a weight's included, and a buffer of zeros
//! for each to add it to). These ops compute the gradient of their input only, with
//! [`actpatch_simd`]'s kernels on every core. Each function returns `Ok(None)` where
//! it does not apply (another device or dtype, or no gradient tracked through its
//! input); the caller then runs candle's ops, the same numbers within float rounding.

mod attention;
mod elementwise;
mod linear;
mod norm;

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

use actpatch_hooks::{BlockSite, HookPoint, Hooks};

use crate::fused::{for_chunks, for_rows};
use crate::kernels::{softmax_last_dim, Kernels};
use crate::Result;

pub(crate) use elementwise::{gelu_tanh, silu_times};
pub(crate) use linear::linear;
pub(crate) use norm::{layer_norm, rms_norm};

/// Whether `tensors` take the attention ops: f32 on the CPU.
fn on_cpu(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Causal attention's scores `[batch, head, query, key]` (`q · kᵀ · scale`, −∞ for
/// later keys) from `q` `[batch, pos, head, d_head]` and `k` `[batch, pos, kv_head,
/// d_head]`, on the CPU (f32); `None` elsewhere.
fn attention_scores(q: &Tensor, k: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    if !on_cpu(&[q, k]) {
        return Ok(None);
    }
    let op = attention::Scores {
        scale: scale as f32,
    };
    Ok(Some(q.contiguous()?.apply_op2(&k.contiguous()?, op)?))
}

/// Softmax over the last axis, on the CPU (f32); `None` elsewhere.
fn softmax(x: &Tensor) -> Result<Option<Tensor>> {
    if !on_cpu(&[x]) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(attention::Softmax)?))
}

/// `z` `[batch, pos, head, d_head]` from a pattern `[batch, head, query, key]` and values
/// `[batch, pos, kv_head, d_head]`, on the CPU (f32); `None` elsewhere.
fn weighted_values(pattern: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    if !on_cpu(&[pattern, v]) {
        return Ok(None);
    }
    let op = attention::WeightedValues;
    Ok(Some(pattern.contiguous()?.apply_op2(&v.contiguous()?, op)?))
}

/// Causal attention's `z` `[batch, pos, head, d_head]` of layer `layer` from `q`, `k`,
/// `v` (over positions from 0, scores `q · kᵀ · scale`, no cap or window) through
/// `hook_attn_scores` and `hook_pattern`, on the CPU (f32); `None` elsewhere. The same
/// hooks as candle's ops in [`crate::attention`], far fewer steps.
pub(crate) fn attention(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    layer: usize,
    scale: f64,
    hooks: &mut Hooks,
) -> Result<Option<Tensor>> {
    let at = |site| HookPoint::block(layer, site);
    if !on_cpu(&[q, k, v]) {
        return Ok(None);
    }
    let Some(scores) = attention_scores(q, k, scale)? else {
        return Ok(None);
    };
    let scores = hooks.at(at(BlockSite::AttnScores), scores)?; // [batch, head, q_pos, k_pos]
    let pattern = match softmax(&scores)? {
        Some(pattern) => pattern,
        None => softmax_last_dim(&scores, Kernels::Differentiable)?,
    };
    let pattern = hooks.at(at(BlockSite::Pattern), pattern)?;
    weighted_values(&pattern, v) // [batch, pos, head, d_head]
}

/// Whether `x` takes these ops: f32 on the CPU with a gradient tracked through it.
fn applies(x: &Tensor) -> bool {
    x.track_op() && on_cpu(&[x])
}

/// The f32 values of `storage` under `layout`, which must be contiguous.
fn values<'s>(storage: &'s CpuStorage, layout: &Layout) -> candle_core::Result<&'s [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("gradient kernels need contiguous inputs"),
    }
}

/// The f32 values of an op's input and of the gradient of its output, which must have
/// as many values (`op` names the op in the error).
fn with_gradient<'s>(
    op: &str,
    (x, x_layout): (&'s CpuStorage, &Layout),
    (grad, grad_layout): (&'s CpuStorage, &Layout),
) -> candle_core::Result<(&'s [f32], &'s [f32])> {
    let (x, grad) = (values(x, x_layout)?, values(grad, grad_layout)?);
    if x.len() != grad.len() {
        candle_core::bail!("{op}: {} values and {} gradients", x.len(), grad.len());
    }
    Ok((x, grad))
}

/// The f32 values of a constant (weight, bias) on the CPU, copied.
fn constant(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// The width of the last axis of `layout` (1 for a scalar).
fn width(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
}

/// `kernel(input row, output row)` over the rows (last axis) of one contiguous input, on
/// every core when large; the output has the input's shape.
fn map_rows(
    (storage, layout): (&CpuStorage, &Layout),
    kernel: impl Fn(&[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = values(storage, layout)?;
    let mut out = vec![0f32; x.len()];
    for_rows(x, &mut out, width(layout), kernel);
    Ok((CpuStorage::F32(out), layout.shape().clone()))
}

/// `kernel(row of a, row of b, output row)` over the rows (last axis) of two inputs of
/// as many values ([`with_gradient`]; `op` names the op in the error), on every core
/// when large; the output has `a`'s shape.
fn zip_rows(
    op: &str,
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    kernel: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (shape, w) = (a.1.shape().clone(), width(a.1));
    let (a, b) = with_gradient(op, a, b)?;
    let mut out = vec![0f32; a.len()];
    for_chunks(&mut out, w, |i, o| {
        let at = i * w..i * w + o.len();
        kernel(&a[at.clone()], &b[at], o);
    });
    Ok((CpuStorage::F32(out), shape))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var, D};

    use super::*;

    /// The gradient of `Σ weights · f(x)` at `x`.
    fn grad_of(x: &Tensor, weights: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let x = Var::from_tensor(x).unwrap();
        let loss = (f(x.as_tensor()) * weights).unwrap().sum_all().unwrap();
        loss.backward().unwrap().get(x.as_tensor()).unwrap().clone()
    }

    /// `ours` and `plain` agree at `x` (with a gradient tracked through it) within
    /// `tolerance`, and so do the gradients of `Σ weights · f(x)`.
    fn assert_values_and_gradients_agree(
        x: &Tensor,
        weights: &Tensor,
        ours: impl Fn(&Tensor) -> Tensor,
        plain: impl Fn(&Tensor) -> Tensor,
        tolerance: f32,
    ) {
        let tracked = Var::from_tensor(x).unwrap();
        let gap = max_gap(&ours(tracked.as_tensor()), &plain(x));
        assert!(gap < tolerance, "values differ by {gap}");
        let gap = max_gap(&grad_of(x, weights, &ours), &grad_of(x, weights, &plain));
        assert!(gap < tolerance, "gradients differ by {gap}");
    }

    fn max_gap(a: &Tensor, b: &Tensor) -> f32 {
        let gap = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        gap.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn kernels_give_candles_values_and_gradients() {
        let x = crate::test_tensors::randn(0f32, 1.0, (6, 40), 1);
        let w = crate::test_tensors::randn(0f32, 1.0, (40, 24), 2);
        let b = crate::test_tensors::randn(0f32, 1.0, 24, 3);
        let norm_w = crate::test_tensors::randn(1f32, 0.1, 40, 4);
        let norm_b = crate::test_tensors::randn(0f32, 0.1, 40, 5);
        // Kernels of this module: LayerNorm, a linear map, GELU.
        let ours = |x: &Tensor| {
            let normalized = layer_norm(x, &norm_w, &norm_b, 1e-5).unwrap().unwrap();
            let pre = linear(&normalized, &w, Some(&b)).unwrap().unwrap();
            gelu_tanh(&pre).unwrap().unwrap()
        };
        // candle's ops.
        let plain = |x: &Tensor| {
            let centred = x
                .broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap())
                .unwrap();
            let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let scale = (var + 1e-5).unwrap().sqrt().unwrap();
            let normalized = (centred.broadcast_div(&scale).unwrap())
                .broadcast_mul(&norm_w)
                .unwrap()
                .broadcast_add(&norm_b)
                .unwrap();
            let pre = normalized.matmul(&w).unwrap().broadcast_add(&b).unwrap();
            pre.gelu().unwrap()
        };
        let weights = crate::test_tensors::randn(0f32, 1.0, (6, 24), 6);
        assert_values_and_gradients_agree(&x, &weights, ours, plain, 1e-4);
    }

    #[test]
    fn gated_mlp_kernels_give_candles_values_and_gradients() {
        let x = crate::test_tensors::randn(0f32, 1.0, (6, 40), 7);
        let w_gate = crate::test_tensors::randn(0f32, 0.3, (40, 24), 8);
        let w_up = crate::test_tensors::randn(0f32, 0.3, (40, 24), 9);
        let norm_w = crate::test_tensors::randn(1f32, 0.1, 40, 10);
        // Kernels of this module: RMSNorm, two linear maps, silu(gate) · up.
        let ours = |x: &Tensor| {
            let normalized = rms_norm(x, &norm_w, 1e-6).unwrap().unwrap();
            let gate = linear(&normalized, &w_gate, None).unwrap().unwrap();
            let up = linear(&normalized, &w_up, None).unwrap().unwrap();
            silu_times(&gate, &up).unwrap().unwrap()
        };
        // candle's ops.
        let plain = |x: &Tensor| {
            let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let scale = (ms + 1e-6).unwrap().sqrt().unwrap();
            let normalized = (x.broadcast_div(&scale).unwrap())
                .broadcast_mul(&norm_w)
                .unwrap();
            let gate = normalized.matmul(&w_gate).unwrap();
            let up = normalized.matmul(&w_up).unwrap();
            (gate.silu().unwrap() * up).unwrap()
        };
        let weights = crate::test_tensors::randn(0f32, 1.0, (6, 24), 11);
        assert_values_and_gradients_agree(&x, &weights, ours, plain, 1e-4);
    }

    #[test]
    fn attention_gives_candles_values_and_gradients() {
        let device = Device::Cpu;
        let (batch, pos, heads, kv_heads, d_head) = (2, 5, 4, 2, 8);
        let q = crate::test_tensors::randn(0f32, 1.0, (batch, pos, heads, d_head), 12);
        let k = crate::test_tensors::randn(0f32, 1.0, (batch, pos, kv_heads, d_head), 13);
        let v = crate::test_tensors::randn(0f32, 1.0, (batch, pos, kv_heads, d_head), 14);
        // [query, key]: −∞ where a query would see a later key.
        let mask: Vec<f32> = (0..pos * pos)
            .map(|i| {
                if i % pos > i / pos {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (pos, pos), &device).unwrap();
        let scale = 0.3;
        // z of (q, k, v) stacked on the last axis, so that one gradient holds all three.
        let split = |x: &Tensor| {
            let part = |i, heads| x.narrow(2, i, heads).unwrap().contiguous().unwrap();
            (
                part(0, heads),
                part(heads, kv_heads),
                part(heads + kv_heads, kv_heads),
            )
        };
        let ours = |x: &Tensor| {
            let (q, k, v) = split(x);
            let scores = attention_scores(&q, &k, scale).unwrap().unwrap();
            let pattern = softmax(&scores).unwrap().unwrap();
            weighted_values(&pattern, &v).unwrap().unwrap()
        };
        let plain = |x: &Tensor| {
            let (q, k, v) = split(x);
            let heads_first = |x: Tensor| {
                let x = x.transpose(1, 2).unwrap(); // [batch, kv_head, pos, d_head]
                let x = x.unsqueeze(2).unwrap();
                let x = x.broadcast_as((batch, kv_heads, heads / kv_heads, pos, d_head));
                x.unwrap().reshape((batch, heads, pos, d_head)).unwrap()
            };
            let q = q.transpose(1, 2).unwrap().contiguous().unwrap();
            let (k, v) = (heads_first(k), heads_first(v));
            let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let scores = scores.broadcast_add(&mask).unwrap();
            let pattern =
                crate::kernels::softmax_last_dim(&scores, crate::kernels::Kernels::Differentiable);
            let z = pattern.unwrap().matmul(&v).unwrap(); // [batch, head, pos, d_head]
            z.transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let x = Tensor::cat(&[&q, &k, &v], 2).unwrap();
        let weights = crate::test_tensors::randn(0f32, 1.0, (batch, pos, heads, d_head), 15);
        assert_values_and_gradients_agree(&x, &weights, ours, plain, 1e-5);
    }
}
