//! Seeded random tensors for unit tests, so every run checks the same numbers.

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Normal draws N(mean, std²) from a ChaCha8 stream seeded with `seed`.
pub(crate) fn randn(mean: f32, std: f32, shape: impl Into<Shape>, seed: u64) -> Tensor {
    let shape = shape.into();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            // Box–Muller.
            let (u, v): (f32, f32) = (rng.gen(), rng.gen());
            mean + std * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("a shape that matches its values")
}
