//! The norms of the last axis with constant weights, as TransformerLens writes them —
//! LayerNorm `(x − mean) / √(var + eps) · w + b` and RMSNorm `x / √(mean(x²) + eps) · w`
//! — with their backward passes to `x` only.

use actpatch_simd as simd;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{applies, constant, map_rows, width, zip_rows};
use crate::Result;

/// Which norm, with what only LayerNorm has.
enum Norm {
    Layer { bias: Vec<f32> },
    Rms,
}

/// A norm by a constant `weight` (`[width]`).
struct FrozenNorm {
    norm: Norm,
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for FrozenNorm {
    fn name(&self) -> &'static str {
        match self.norm {
            Norm::Layer { .. } => "layer-norm-frozen-weight",
            Norm::Rms => "rms-norm-frozen-weight",
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (weight, eps) = (&self.weight[..], self.eps);
        match &self.norm {
            Norm::Layer { bias } => map_rows((storage, layout), |x, o| {
                simd::layer_norm_row(x, weight, bias, eps, o)
            }),
            Norm::Rms => map_rows((storage, layout), |x, o| {
                simd::rms_norm_row(x, weight, eps, o)
            }),
        }
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &NormGrad(self))?,
        ))
    }
}

/// `(x, grad)` → the gradient of the norm's input (same shapes).
struct NormGrad<'a>(&'a FrozenNorm);

impl CustomOp2 for NormGrad<'_> {
    fn name(&self) -> &'static str {
        match self.0.norm {
            Norm::Layer { .. } => "layer-norm-grad",
            Norm::Rms => "rms-norm-grad",
        }
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = width(x_layout);
        let FrozenNorm { norm, weight, eps } = self.0;
        if weight.len() != w {
            candle_core::bail!("{}: {} weights for rows of {w}", self.name(), weight.len());
        }
        let x = (x_storage, x_layout);
        zip_rows(
            self.name(),
            x,
            (grad_storage, grad_layout),
            |x, grad, o| match norm {
                Norm::Layer { .. } => simd::layer_norm_row_grad(x, weight, *eps, grad, o),
                Norm::Rms => simd::rms_norm_row_grad(x, weight, *eps, grad, o),
            },
        )
    }
}

/// `norm` of the last axis of `x` `[..., width]` by `weight` (`[width]`) when a gradient
/// is taken through `x` on the CPU (f32); `None` otherwise.
fn frozen_norm(x: &Tensor, norm: Norm, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let w = x.dims().last().copied().unwrap_or(0);
    let bias_fits = match &norm {
        Norm::Layer { bias } => bias.len() == w,
        Norm::Rms => true,
    };
    if !applies(x) || w == 0 || weight.elem_count() != w || !bias_fits {
        return Ok(None);
    }
    let op = FrozenNorm {
        norm,
        weight: constant(weight)?,
        eps: eps as f32,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

/// LayerNorm of the last axis of `x` `[..., width]` when a gradient is taken through `x`
/// on the CPU (f32); `None` otherwise.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    let bias = constant(bias)?;
    frozen_norm(x, Norm::Layer { bias }, weight, eps)
}

/// RMSNorm of the last axis of `x` `[..., width]` when a gradient is taken through `x` on
/// the CPU (f32); `None` otherwise.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    frozen_norm(x, Norm::Rms, weight, eps)
}
