//! GPT-2's `gelu_new` with its derivative, on every core.

use actpatch_simd as simd;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{applies, values, width, with_gradient};
use crate::fused::{for_chunks, for_rows};
use crate::Result;

/// `gelu_new(x)`, element-wise; backward `grad · gelu_new'(x)` ([`GeluTanhGrad`]).
struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout)?;
        let mut out = vec![0f32; x.len()];
        for_rows(x, &mut out, width(layout), |x, o| {
            o.copy_from_slice(x);
            simd::gelu_tanh(o);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &GeluTanhGrad)?,
        ))
    }
}

/// `(x, grad)` → `grad · gelu_new'(x)` (same shapes).
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
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
        let mut out = vec![0f32; x.len()];
        for_chunks(&mut out, w, |i, o| {
            let at = i * w..i * w + o.len();
            simd::gelu_tanh_grad(&x[at.clone()], &grad[at], o);
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// `gelu_new(x)` when a gradient is taken through `x` on the CPU (f32); `None` otherwise.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(GeluTanh)?))
}
