//! Derivatives of the element-wise kernels, for backward passes.

use super::{exp, sum, sum_squares, LANES};

dispatch!(
    /// `out = grad · gelu_new'(x)`: with `s = 1 / (1 + e^(-2u))`, `gelu_new(x) = x · s`
    /// and its derivative is `s + 2 x s (1 − s) u'`, `u' = √(2/π) (1 + 3 · 0.044715 x²)`.
    pub fn gelu_tanh_grad(x: &[f32], grad: &[f32], out: &mut [f32]) {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        for ((o, x), g) in out.iter_mut().zip(x).zip(grad) {
            let x = *x;
            let u = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
            let s = 1.0 / (1.0 + exp(-2.0 * u));
            *o = *g * (s + 2.0 * x * s * (1.0 - s) * du);
        }
    }
);

dispatch!(
    /// The gradient of [`crate::layer_norm_row`]'s input `x` from its output's `grad`:
    /// with `x̂ = (x − mean) / scale` and `g = grad · weight`,
    /// `out = (g − mean(g) − x̂ · mean(g · x̂)) / scale`.
    pub fn layer_norm_row_grad(x: &[f32], weight: &[f32], eps: f32, grad: &[f32], out: &mut [f32]) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let scale = (sum_squares(x, mean) / n + eps).sqrt();
        let mut g_lanes = [0f32; LANES];
        let mut gx_lanes = [0f32; LANES];
        let at = x.len() / LANES * LANES;
        let chunks =
            (x.chunks_exact(LANES).zip(weight.chunks_exact(LANES))).zip(grad.chunks_exact(LANES));
        for ((x, w), g) in chunks {
            for l in 0..LANES {
                let g = g[l] * w[l];
                g_lanes[l] += g;
                gx_lanes[l] += g * ((x[l] - mean) / scale);
            }
        }
        let (mut g_sum, mut gx_sum) = (g_lanes.iter().sum::<f32>(), gx_lanes.iter().sum::<f32>());
        for ((x, w), g) in x[at..].iter().zip(&weight[at..]).zip(&grad[at..]) {
            g_sum += *g * *w;
            gx_sum += *g * *w * ((*x - mean) / scale);
        }
        let (g_mean, gx_mean) = (g_sum / n, gx_sum / n);
        for (((o, x), w), g) in out.iter_mut().zip(x).zip(weight).zip(grad) {
            let x_hat = (*x - mean) / scale;
            *o = (*g * *w - g_mean - x_hat * gx_mean) / scale;
        }
    }
);

dispatch!(
    /// The gradient of [`crate::rms_norm_row`]'s input `x` from its output's `grad`:
    /// with `x̂ = x / scale` and `g = grad · weight`, `out = (g − x̂ · mean(g · x̂)) / scale`.
    pub fn rms_norm_row_grad(x: &[f32], weight: &[f32], eps: f32, grad: &[f32], out: &mut [f32]) {
        let n = x.len() as f32;
        let scale = (sum_squares(x, 0.0) / n + eps).sqrt();
        let mut gx_lanes = [0f32; LANES];
        let at = x.len() / LANES * LANES;
        let chunks =
            (x.chunks_exact(LANES).zip(weight.chunks_exact(LANES))).zip(grad.chunks_exact(LANES));
        for ((x, w), g) in chunks {
            for l in 0..LANES {
                gx_lanes[l] += g[l] * w[l] * (x[l] / scale);
            }
        }
        let mut gx_sum = gx_lanes.iter().sum::<f32>();
        for ((x, w), g) in x[at..].iter().zip(&weight[at..]).zip(&grad[at..]) {
            gx_sum += *g * *w * (*x / scale);
        }
        let gx_mean = gx_sum / n;
        for (((o, x), w), g) in out.iter_mut().zip(x).zip(weight).zip(grad) {
            *o = (*g * *w - (*x / scale) * gx_mean) / scale;
        }
    }
);

dispatch!(
    /// The gradients of [`crate::silu_times`]'s inputs from its output's `grad`: with
    /// `s = 1 / (1 + e^(−gate))`, `silu(gate) = gate · s` and
    /// `silu'(gate) = s (1 + gate (1 − s))`, so `d_up = grad · gate · s` and
    /// `d_gate = grad · up · s (1 + gate (1 − s))`.
    pub fn silu_times_grad(
        gate: &[f32],
        up: &[f32],
        grad: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) {
        let inputs = gate.iter().zip(up).zip(grad);
        for ((((g, u), d), dg), du) in inputs.zip(d_gate.iter_mut()).zip(d_up.iter_mut()) {
            let s = 1.0 / (1.0 + exp(-*g));
            *du = *d * (*g * s);
            *dg = *d * *u * (s * (1.0 + *g * (1.0 - s)));
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// `gelu_new` and LayerNorm in f64, for central differences.
    fn gelu64(x: f64) -> f64 {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        0.5 * x * (1.0 + u.tanh())
    }

    fn layer_norm64(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let scale = (var + eps).sqrt();
        x.iter()
            .zip(w)
            .map(|(v, w)| (v - mean) / scale * *w as f64)
            .collect()
    }

    #[test]
    fn gelu_grad_is_the_derivative() {
        let x: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let grad: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 3) as f32).collect();
        let mut out = vec![0f32; x.len()];
        gelu_tanh_grad(&x, &grad, &mut out);
        for ((x, g), got) in x.iter().zip(&grad).zip(&out) {
            let (x, h) = (*x as f64, 1e-5);
            let want = *g as f64 * (gelu64(x + h) - gelu64(x - h)) / (2.0 * h);
            assert!(
                (*got as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "{x}: {got} vs {want}"
            );
        }
    }

    fn rms_norm64(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
        let scale = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
        x.iter()
            .zip(w)
            .map(|(v, w)| v / scale * *w as f64)
            .collect()
    }

    /// Checks a norm's row gradient kernel `grad_row(x, w, grad, out)` against central
    /// differences of `Σ_j grad_j · norm64(x, w)_j` on one row.
    fn assert_norm_gradient(
        grad_row: impl Fn(&[f32], &[f32], &[f32], &mut [f32]),
        norm64: impl Fn(&[f64], &[f32]) -> Vec<f64>,
    ) {
        let x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 7.0 - 5.0)
            .collect();
        let w: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 50.0).collect();
        let grad: Vec<f32> = (0..37)
            .map(|i| ((i * 31) % 13) as f32 / 6.0 - 1.0)
            .collect();
        let mut out = vec![0f32; 37];
        grad_row(&x, &w, &grad, &mut out);
        let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        let loss = |x: &[f64]| -> f64 {
            let y = norm64(x, &w);
            y.iter().zip(&grad).map(|(y, g)| y * *g as f64).sum()
        };
        for i in 0..37 {
            let (mut up, mut down, h) = (x64.clone(), x64.clone(), 1e-6);
            up[i] += h;
            down[i] -= h;
            let want = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (out[i] as f64 - want).abs() < 1e-4,
                "{i}: {} vs {want}",
                out[i]
            );
        }
    }

    #[test]
    fn layer_norm_grad_is_the_gradient() {
        assert_norm_gradient(
            |x, w, grad, out| layer_norm_row_grad(x, w, 1e-5, grad, out),
            |x, w| layer_norm64(x, w, 1e-5),
        );
    }

    #[test]
    fn rms_norm_grad_is_the_gradient() {
        assert_norm_gradient(
            |x, w, grad, out| rms_norm_row_grad(x, w, 1e-6, grad, out),
            |x, w| rms_norm64(x, w, 1e-6),
        );
    }

    #[test]
    fn silu_times_grad_is_the_gradient() {
        let gate: Vec<f32> = (-600..=600).map(|i| i as f32 / 50.0).collect();
        let up: Vec<f32> = (0..gate.len())
            .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let grad: Vec<f32> = (0..gate.len()).map(|i| 1.0 + (i % 3) as f32).collect();
        let (mut d_gate, mut d_up) = (vec![0f32; gate.len()], vec![0f32; gate.len()]);
        silu_times_grad(&gate, &up, &grad, &mut d_gate, &mut d_up);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for i in 0..gate.len() {
            let (g, u, d, h) = (gate[i] as f64, up[i] as f64, grad[i] as f64, 1e-5);
            let want_gate = d * u * (silu(g + h) - silu(g - h)) / (2.0 * h);
            let want_up = d * silu(g);
            assert!(
                (d_gate[i] as f64 - want_gate).abs() < 1e-5 * want_gate.abs().max(1.0),
                "{g}: {} vs {want_gate}",
                d_gate[i]
            );
            assert!((d_up[i] as f64 - want_up).abs() < 1e-5 * want_up.abs().max(1.0));
        }
    }
}
