//! CPU kernels with backward passes, for the forward passes gradients are taken
//! through (attribution patching): linear maps by constant weights, GELU and
//! LayerNorm, each one candle custom op instead of a chain of element-wise ops.
//!
//! candle runs element-wise ops on one thread, and its backward pass computes a
//! gradient for every input of every op (a weight's included, and a buffer of zeros
//! for each to add it to). These ops compute the gradient of their input only, with
//! [`actpatch_simd`]'s kernels on every core. Each function returns `Ok(None)` where
//! it does not apply (another device or dtype, or no gradient tracked through its
//! input); the caller then runs candle's ops, the same numbers within float rounding.

mod elementwise;
mod layer_norm;
mod linear;

use candle_core::{CpuStorage, DType, Layout, Tensor};

pub(crate) use elementwise::gelu_tanh;
pub(crate) use layer_norm::layer_norm;
pub(crate) use linear::linear;

/// Whether `x` takes these ops: f32 on the CPU with a gradient tracked through it.
fn applies(x: &Tensor) -> bool {
    x.track_op() && x.device().is_cpu() && x.dtype() == DType::F32
}

/// The f32 values of `storage` under `layout`, which must be contiguous.
fn values<'s>(storage: &'s CpuStorage, layout: &Layout) -> candle_core::Result<&'s [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("gradient kernels need contiguous inputs"),
    }
}

/// The f32 values of a constant (weight, bias) on the CPU, copied.
fn constant(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// The width of the last axis of `layout` (1 for a scalar).
fn width(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
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

    fn max_gap(a: &Tensor, b: &Tensor) -> f32 {
        let gap = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        gap.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn kernels_give_candles_values_and_gradients() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (6, 40), &device).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 24), &device).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &device).unwrap();
        let norm_w = Tensor::randn(1f32, 0.1, 40, &device).unwrap();
        let norm_b = Tensor::randn(0f32, 0.1, 40, &device).unwrap();
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
        let weights = Tensor::randn(0f32, 1.0, (6, 24), &device).unwrap();
        let tracked = Var::from_tensor(&x).unwrap();
        assert!(max_gap(&ours(tracked.as_tensor()), &plain(&x)) < 1e-4);
        let gap = max_gap(&grad_of(&x, &weights, ours), &grad_of(&x, &weights, plain));
        assert!(gap < 1e-4, "gradients differ by {gap}");
    }
}
