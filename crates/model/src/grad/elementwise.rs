//! GPT-2's `gelu_new`, and a gated MLP's `silu(gate) · up`, with their derivatives, on
//! every core.

use actpatch_simd as simd;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, map_rows, on_cpu, width, with_gradient, zip_rows};
use crate::fused::SERIAL_ELEMENTS;
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
        map_rows((storage, layout), |x, o| {
            o.copy_from_slice(x);
            simd::gelu_tanh(o);
        })
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
        zip_rows(
            self.name(),
            (x_storage, x_layout),
            (grad_storage, grad_layout),
            simd::gelu_tanh_grad,
        )
    }
}

/// `gelu_new(x)` when a gradient is taken through `x` on the CPU (f32); `None` otherwise.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(GeluTanh)?))
}

/// `silu(gate) · up` (a gated MLP's product), element-wise; backward to both inputs
/// ([`SiluTimesGrad`]).
struct SiluTimes;

impl CustomOp2 for SiluTimes {
    fn name(&self) -> &'static str {
        "silu-times"
    }

    fn cpu_fwd(
        &self,
        gate_storage: &CpuStorage,
        gate_layout: &Layout,
        up_storage: &CpuStorage,
        up_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_rows(
            self.name(),
            (gate_storage, gate_layout),
            (up_storage, up_layout),
            simd::silu_times,
        )
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SiluTimesGrad)?; // [2, ...]
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// `(gate, up, grad)` → the gradients of `gate` and of `up`, stacked on a new first
/// axis (`[2, ...]`).
struct SiluTimesGrad;

impl CustomOp3 for SiluTimesGrad {
    fn name(&self) -> &'static str {
        "silu-times-grad"
    }

    fn cpu_fwd(
        &self,
        gate_storage: &CpuStorage,
        gate_layout: &Layout,
        up_storage: &CpuStorage,
        up_layout: &Layout,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gate, up) = with_gradient(
            self.name(),
            (gate_storage, gate_layout),
            (up_storage, up_layout),
        )?;
        let (_, grad) = with_gradient(
            self.name(),
            (gate_storage, gate_layout),
            (grad_storage, grad_layout),
        )?;
        let (n, w) = (gate.len(), width(gate_layout));
        let mut out = vec![0f32; 2 * n];
        let (d_gate, d_up) = out.split_at_mut(n);
        let row = |(i, (d_gate, d_up)): (usize, (&mut [f32], &mut [f32]))| {
            let at = i * w..i * w + d_gate.len();
            let (gate, up, grad) = (&gate[at.clone()], &up[at.clone()], &grad[at]);
            simd::silu_times_grad(gate, up, grad, d_gate, d_up);
        };
        if n <= SERIAL_ELEMENTS {
            (d_gate.chunks_mut(w).zip(d_up.chunks_mut(w)))
                .enumerate()
                .for_each(row);
        } else {
            (d_gate.par_chunks_mut(w).zip(d_up.par_chunks_mut(w)))
                .with_min_len((SERIAL_ELEMENTS / w).max(1))
                .enumerate()
                .for_each(row);
        }
        let mut dims = vec![2];
        dims.extend_from_slice(gate_layout.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `silu(gate) · up` when a gradient is taken through `gate` or `up` on the CPU (f32)
/// and both have one shape; `None` otherwise.
pub(crate) fn silu_times(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if !(applies(gate) || applies(up)) || !on_cpu(&[gate, up]) || gate.dims() != up.dims() {
        return Ok(None);
    }
    Ok(Some(
        gate.contiguous()?.apply_op2(&up.contiguous()?, SiluTimes)?,
    ))
}
