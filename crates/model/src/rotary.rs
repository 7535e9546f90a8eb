//! Rotary position embeddings: the inverse frequencies of a model (see
//! [`crate::rope`] for how a config's `rope_scaling` sets them) and the tables that
//! rotate queries and keys.

use candle_core::{Device, Tensor};

use crate::kernels::{rope, Kernels};
use crate::Result;

/// Rotary position embeddings (Su et al. 2021) in the Hugging Face Llama layout: each
/// head's first and second halves are the two coordinates of a rotated pair
/// (`rotate_half`, not interleaved), with frequencies `theta^(-2i / d_head)`.
pub struct Rotary {
    inv_freq: Vec<f32>, // [d_head / 2]
}

impl Rotary {
    /// From inverse frequencies `[rotary_dim / 2]` (see [`crate::rope::RopeConfig::inv_freq`]);
    /// a head's dimensions past `rotary_dim` pass through unrotated.
    pub fn from_inv_freq(inv_freq: Vec<f32>) -> Self {
        Rotary { inv_freq }
    }

    /// The cosines and sines of positions `start..start + pos`. Angles are products in
    /// f32, as Hugging Face computes them, so long contexts round the same way.
    pub fn tables_from(&self, start: usize, pos: usize, device: &Device) -> Result<RotaryTables> {
        let half = self.inv_freq.len();
        let angles: Vec<f32> = (start..start + pos)
            .flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| (*a as f64).cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().map(|a| (*a as f64).sin() as f32).collect();
        Ok(RotaryTables {
            cos: Tensor::from_vec(cos, (pos, half), device)?, // [pos, d_head / 2]
            sin: Tensor::from_vec(sin, (pos, half), device)?, // [pos, d_head / 2]
            kernels: Kernels::Fused,
        })
    }
}

/// Rotary tables for one forward pass.
pub struct RotaryTables {
    cos: Tensor, // [pos, d_head / 2]
    sin: Tensor, // [pos, d_head / 2]
    /// Fused or differentiable rotation (see [`Kernels`]).
    pub(crate) kernels: Kernels,
}

impl RotaryTables {
    /// The tables of several frames one after another, each repeated for its rows:
    /// the rotary tables of a frame of spans.
    pub fn stacked(parts: &[(&RotaryTables, usize)]) -> Result<RotaryTables> {
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for (tables, rows) in parts {
            for _ in 0..*rows {
                cos.push(tables.cos.clone());
                sin.push(tables.sin.clone());
            }
        }
        Ok(RotaryTables {
            cos: Tensor::cat(&cos, 0)?, // [Σ rows · pos, d_head / 2]
            sin: Tensor::cat(&sin, 0)?,
            kernels: Kernels::Fused,
        })
    }

    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_head]`, rotated by position:
    /// `x * cos + rotate_half(x) * sin` on the first `rotary_dim` dimensions, the rest
    /// unchanged (partial rotary, GPT-NeoX).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let d_head = x.dim(3)?;
        let rotary_dim = 2 * self.cos.dim(1)?;
        if rotary_dim == d_head {
            return rope(x, &self.cos, &self.sin, self.kernels);
        }
        let rotated = rope(
            &x.narrow(3, 0, rotary_dim)?,
            &self.cos,
            &self.sin,
            self.kernels,
        )?;
        let passed = x.narrow(3, rotary_dim, d_head - rotary_dim)?;
        Ok(Tensor::cat(&[&rotated, &passed], 3)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_tables_rotate_halves() {
        // Position 1, frequency 1 for the first pair: (x, y) in the two halves → rotated.
        let rotary = Rotary::from_inv_freq(crate::rope::RopeConfig::plain(10_000.0).inv_freq(4));
        let tables = rotary.tables_from(0, 2, &Device::Cpu).unwrap();
        let x = Tensor::new(
            &[[[[1f32, 0.0, 0.0, 0.0]]], [[[1f32, 0.0, 0.0, 0.0]]]],
            &Device::Cpu,
        )
        .unwrap()
        .reshape((1, 2, 1, 4))
        .unwrap();
        let got: Vec<f32> = tables
            .apply(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (c, s) = (1f32.cos(), 1f32.sin());
        let want = [1.0, 0.0, 0.0, 0.0, c, 0.0, s, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
