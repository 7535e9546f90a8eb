//! Fused CPU kernels for forward passes that no gradient is taken through: a linear
//! map with its bias (and a residual stream or a GELU) in one pass over the output,
//! norms, gated MLP activations and attention, each parallel across rows on the same
//! rayon pool as the matrix products.
//!
//! Every function returns `Ok(None)` when it does not apply (another device or dtype,
//! or an input a gradient is tracked through, [`Tensor::track_op`]); the caller then
//! computes the same numbers with plain tensor ops. The numbers agree within float
//! rounding (`exp` and the order of sums differ; see [`actpatch_simd`]).

pub(crate) mod attention;
pub(crate) mod heads;
pub(crate) mod matmul;

use actpatch_simd as simd;
use candle_core::{DType, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Rows of at most this many elements in all run on the calling thread: below it, rayon's
/// hand-off costs more than the second core saves.
pub(crate) const SERIAL_ELEMENTS: usize = 1 << 14;

/// Whether `tensors` can take a fused kernel: f32 on the CPU, no gradient tracked.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// The f32 values of a tensor's storage under `layout` when contiguous.
fn contiguous_f32<'s>(storage: &'s Storage, layout: &Layout) -> Result<&'s [f32]> {
    let Storage::Cpu(cpu) = storage else {
        return Err(candle_core::Error::Msg("fused kernels run on the CPU only".into()).into());
    };
    let data = cpu.as_slice::<f32>()?;
    let (from, to) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused kernels need contiguous inputs".into()))?;
    Ok(&data[from..to])
}

/// Runs `f` over the contiguous f32 values of `x`.
pub(crate) fn with_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    f(contiguous_f32(&storage, layout)?)
}

/// `f(input row, output row)` for every row of width `width`, in parallel when large.
pub(crate) fn for_rows(
    input: &[f32],
    out: &mut [f32],
    width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    if out.len() <= SERIAL_ELEMENTS {
        for (x, o) in input.chunks(width).zip(out.chunks_mut(width)) {
            f(x, o);
        }
    } else {
        (input.par_chunks(width).zip(out.par_chunks_mut(width)))
            .with_min_len((SERIAL_ELEMENTS / width).max(1))
            .for_each(|(x, o)| f(x, o));
    }
}

/// `f(output chunk)` over chunks of `width` elements, in parallel when large.
pub(crate) fn for_chunks(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() <= SERIAL_ELEMENTS {
        for (i, o) in out.chunks_mut(width).enumerate() {
            f(i, o);
        }
    } else {
        out.par_chunks_mut(width)
            .with_min_len((SERIAL_ELEMENTS / width).max(1))
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    }
}

/// `x @ weight + bias` with the bias added as the product's starting value (one pass
/// over the output): `x` `[.., in]`, `weight` `[in, out]` (any strides), `bias` `[out]`.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    linear_then(x, weight, bias, false)
}

/// GPT-2's `gelu_new` of [`linear`], applied to each output row as it is finished.
pub(crate) fn linear_gelu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    linear_then(x, weight, bias, true)
}

fn linear_then(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    gelu: bool,
) -> Result<Option<Tensor>> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    if !applies(&inputs) || weight.rank() != 2 {
        return Ok(None);
    }
    let (d_in, d_out) = weight.dims2()?;
    let mut out_shape = x.dims().to_vec();
    match out_shape.last_mut() {
        Some(last) if *last == d_in => *last = d_out,
        _ => return Ok(None), // the plain path reports the shape error
    }
    let bias_values = match bias {
        Some(bias) if bias.elem_count() == d_out => Some(with_values(bias, |b| Ok(b.to_vec()))?),
        Some(_) => return Ok(None),
        None => None,
    };
    let x = x.contiguous()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let x_values = contiguous_f32(&x_storage, x_layout)?;
    let product = |w: matmul::WeightView| matmul::product(x_values, w, bias_values.as_deref());
    let Some(mut out) = matmul::with_weight(weight, product)? else {
        return Ok(None);
    };
    if gelu {
        for_chunks(&mut out, d_out, |_, row| simd::gelu_tanh(row));
    }
    Ok(Some(Tensor::from_vec(out, out_shape, x.device())?))
}

/// `a + b` (equal shapes).
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !applies(&[a, b]) || a.dims() != b.dims() {
        return Ok(None);
    }
    let mut out = with_values(a, |a| Ok(a.to_vec()))?;
    let width = *a.dims().last().unwrap_or(&1);
    with_values(b, |b| {
        for_chunks(&mut out, width.max(1), |i, row| {
            simd::add_into(row, &b[i * row.len()..][..row.len()])
        });
        Ok(())
    })?;
    Ok(Some(Tensor::from_vec(out, a.dims(), a.device())?))
}

/// GPT-2's `gelu_new` of `x`.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(&[x]) {
        return Ok(None);
    }
    let mut out = with_values(x, |x| Ok(x.to_vec()))?;
    let width = *x.dims().last().unwrap_or(&1);
    for_chunks(&mut out, width.max(1), |_, row| simd::gelu_tanh(row));
    Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?))
}

/// The activation of a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Llama's SiLU.
    Silu,
    /// Gemma's tanh GELU.
    GeluTanh,
}

/// `act(gate) * up` (equal shapes).
pub(crate) fn gated(gate: &Tensor, up: &Tensor, act: Gate) -> Result<Option<Tensor>> {
    if !applies(&[gate, up]) || gate.dims() != up.dims() {
        return Ok(None);
    }
    let width = *gate.dims().last().unwrap_or(&1);
    let mut out = vec![0f32; gate.elem_count()];
    with_values(gate, |g| {
        with_values(up, |u| {
            for_chunks(&mut out, width.max(1), |i, row| {
                let (g, u) = (&g[i * width..][..width], &u[i * width..][..width]);
                match act {
                    Gate::Silu => simd::silu_times(g, u, row),
                    Gate::GeluTanh => simd::gelu_tanh_times(g, u, row),
                }
            });
            Ok(())
        })
    })?;
    Ok(Some(Tensor::from_vec(out, gate.dims(), gate.device())?))
}

/// LayerNorm of the last axis of `x`: `(x − mean) / √(var + eps) · weight + bias`.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !applies(&[x, weight, bias]) {
        return Ok(None);
    }
    let width = *x.dims().last().unwrap_or(&0);
    if width == 0 || weight.elem_count() != width || bias.elem_count() != width {
        return Ok(None);
    }
    let mut out = vec![0f32; x.elem_count()];
    with_values(x, |x| {
        with_values(weight, |w| {
            with_values(bias, |b| {
                for_rows(x, &mut out, width, |x, o| {
                    simd::layer_norm_row(x, w, b, eps as f32, o)
                });
                Ok(())
            })
        })
    })?;
    Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?))
}

/// RMSNorm of the last axis of `x`: `x / √(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !applies(&[x, weight]) {
        return Ok(None);
    }
    let width = *x.dims().last().unwrap_or(&0);
    if width == 0 || weight.elem_count() != width {
        return Ok(None);
    }
    let mut out = vec![0f32; x.elem_count()];
    with_values(x, |x| {
        with_values(weight, |w| {
            for_rows(x, &mut out, width, |x, o| {
                simd::rms_norm_row(x, w, eps as f32, o)
            });
            Ok(())
        })
    })?;
    Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?))
}
