//! LayerNorm of the last axis with constant weight and bias, as TransformerLens writes
//! it (`(x − mean) / √(var + eps) · w + b`), its backward pass to `x` only.

use actpatch_simd as simd;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{applies, constant, values, width, with_gradient};
use crate::fused::{for_chunks, for_rows};
use crate::Result;

/// LayerNorm by constant `weight` and `bias` (`[width]` each).
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-frozen-weight"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout)?;
        let mut out = vec![0f32; x.len()];
        for_rows(x, &mut out, width(layout), |x, o| {
            simd::layer_norm_row(x, &self.weight, &self.bias, self.eps, o)
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = LayerNormGrad {
            weight: &self.weight,
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// `(x, grad)` → the gradient of LayerNorm's input (same shapes).
struct LayerNormGrad<'a> {
    weight: &'a [f32],
    eps: f32,
}

impl CustomOp2 for LayerNormGrad<'_> {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, grad) = with_gradient(
            self.name(),
            (x_storage, x_layout),
            (grad_storage, grad_layout),
        )?;
        let w = width(x_layout);
        if self.weight.len() != w {
            candle_core::bail!(
                "layer-norm-grad: {} weights for rows of {w}",
                self.weight.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        for_chunks(&mut out, w, |i, o| {
            let at = i * w..(i + 1) * w;
            simd::layer_norm_row_grad(&x[at.clone()], self.weight, self.eps, &grad[at], o);
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// LayerNorm of the last axis of `x` `[..., width]` when a gradient is taken through `x`
/// on the CPU (f32); `None` otherwise.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let w = x.dims().last().copied().unwrap_or(0);
    if !applies(x) || w == 0 || weight.elem_count() != w || bias.elem_count() != w {
        return Ok(None);
    }
    let op = LayerNorm {
        weight: constant(weight)?,
        bias: constant(bias)?,
        eps: eps as f32,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}
