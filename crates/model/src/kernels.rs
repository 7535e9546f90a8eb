//! Which kernels a forward pass uses: candle-nn's fused softmax and rotary embedding
//! (fastest, no backward pass) or plain tensor ops that gradients can be taken through.

use candle_core::{Tensor, D};

use crate::Result;

/// The kernels of a forward pass. candle-nn's fused softmax and rotary embedding have
/// no backward pass; a pass that gradients are taken through uses plain tensor ops
/// (the same numbers within float rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// candle-nn's fused kernels: fastest, no gradients.
    #[default]
    Fused,
    /// Plain differentiable tensor ops.
    Differentiable,
}

/// Softmax over the last axis with `kernels`. `[..., n]` → `[..., n]`; entries of
/// `-inf` (masked) get 0.
pub fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Fused => Ok(candle_nn::ops::softmax_last_dim(x)?),
        Kernels::Differentiable => {
            // The shift only keeps exp in range; softmax does not depend on it.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let exp = x.broadcast_sub(&max)?.exp()?;
            Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
        }
    }
}

/// `x` `[batch, pos, head, 2 · half]` rotated by `cos`, `sin` `[pos, half]` in the
/// `rotate_half` layout: halves `(x1, x2)` → `(x1 cos − x2 sin, x2 cos + x1 sin)`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Fused => Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)?),
        Kernels::Differentiable => {
            let (batch, pos, heads, d_head) = x.dims4()?;
            let half = d_head / 2;
            let shape = (batch, pos, heads, half);
            let cos = cos.reshape((1, pos, 1, half))?.broadcast_as(shape)?;
            let sin = sin.reshape((1, pos, 1, half))?.broadcast_as(shape)?;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let out1 = ((&x1 * &cos)? - (&x2 * &sin)?)?;
            let out2 = ((&x2 * &cos)? + (&x1 * &sin)?)?;
            Ok(Tensor::cat(&[&out1, &out2], D::Minus1)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_gap(a: &Tensor, b: &Tensor) -> f32 {
        let gap = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        gap.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn differentiable_kernels_give_the_fused_numbers() {
        let device = Device::Cpu;
        let x = crate::test_tensors::randn(0f32, 1.0, (2, 5, 3, 8), 1);
        let cos = crate::test_tensors::randn(0f32, 1.0, (5, 4), 2);
        let sin = crate::test_tensors::randn(0f32, 1.0, (5, 4), 3);
        let fused = rope(&x, &cos, &sin, Kernels::Fused).unwrap();
        let plain = rope(&x, &cos, &sin, Kernels::Differentiable).unwrap();
        assert!(max_gap(&fused, &plain) < 1e-5);
        // A causal mask over the last axis: −∞ above the diagonal.
        let mask: Vec<f32> = (0..64)
            .map(|i| match i % 8 > i / 8 {
                true => f32::NEG_INFINITY,
                false => 0.0,
            })
            .collect();
        let mask = Tensor::from_vec(mask, (8, 8), &device).unwrap();
        let scores = crate::test_tensors::randn(0f32, 1.0, (2, 3, 8, 8), 4); // [batch, head, query, key]
        let scores = scores.broadcast_add(&mask).unwrap();
        let fused = softmax_last_dim(&scores, Kernels::Fused).unwrap();
        let plain = softmax_last_dim(&scores, Kernels::Differentiable).unwrap();
        assert!(max_gap(&fused, &plain) < 1e-6);
    }
}
