//! Vectorized kernels on f32 slices for actpatch's fused CPU passes and metrics,
//! written so that the compiler vectorizes them: no branches in the loops, `exp` as a
//! polynomial, reductions over 8 explicit lanes. Each kernel is compiled three times,
//! for the x86-64 baseline, with AVX2 and with AVX-512 (the widest the CPU has is chosen
//! at run time). None uses fused multiply-adds and every reduction keeps its 8 lanes,
//! so all three give the same bits on every machine (tested).

/// Lanes of the explicit reductions (one AVX2 register of f32).
const LANES: usize = 8;

/// The instruction sets a kernel is compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(test), allow(dead_code))]
enum Tier {
    Baseline,
    Avx2,
    Avx512,
}

#[cfg(test)]
thread_local! {
    /// The widest tier this test thread lets kernels use.
    static WIDEST: std::cell::Cell<Tier> = const { std::cell::Cell::new(Tier::Avx512) };
}

/// Whether kernels may use `tier` (always, outside this crate's tests).
#[inline(always)]
#[cfg_attr(not(test), allow(unused_variables))]
fn allowed(tier: Tier) -> bool {
    #[cfg(test)]
    return WIDEST.with(|widest| tier <= widest.get());
    #[cfg(not(test))]
    true
}

/// Runs `$body` compiled for the widest of AVX-512, AVX2 and the baseline target that
/// the CPU has.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::allowed($crate::Tier::Avx512)
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the CPU has these AVX-512 subsets (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::allowed($crate::Tier::Avx2) && std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

mod grad;

pub use grad::{gelu_tanh_grad, layer_norm_row_grad, rms_norm_row_grad, silu_times_grad};

/// `e^x` to within 2 ulp (Cephes' `expf`: range reduction by ln 2, a degree-6
/// polynomial, the exponent set by bits); inputs are clamped to ±87.3, so results stay
/// finite and normal (`e^-87.3` ≈ 1.2e-38 stands in for 0).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 87.3);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // Wrapping integer ops: no overflow checks (any profile), so the loop vectorizes.
    let scale = f32::from_bits(((n as i32).wrapping_add(127) as u32).wrapping_shl(23));
    e * scale
}

/// `e^x` in f64 to within a few ulp: range reduction by ln 2 (in two parts), the Taylor
/// series to degree 12 on |r| ≤ ln 2 / 2 (its remainder is below 2e-16), the exponent
/// set by bits; inputs are clamped to [−708, 709].
#[inline(always)]
fn exp64(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5 · 2^52: adding it rounds to the nearest integer, held in the low bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-708.0, 709.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 479_001_600.0; // 1/12!
    for k in (1..12).rev() {
        p = p * r + 1.0 / FACTORIALS[k];
    }
    let e = p * r + 1.0;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()); // n, two's complement
    e * f64::from_bits(n_bits.wrapping_add(1023).wrapping_shl(52))
}

/// k! for k = 0..=11.
const FACTORIALS: [f64; 12] = [
    1.0,
    1.0,
    2.0,
    6.0,
    24.0,
    120.0,
    720.0,
    5_040.0,
    40_320.0,
    362_880.0,
    3_628_800.0,
    39_916_800.0,
];

/// GPT-2's `gelu_new` (the tanh approximation), `0.5 x (1 + tanh(u))` with
/// `u = √(2/π) (x + 0.044715 x³)`, written as `x / (1 + e^(-2u))` (the same function).
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    x / (1.0 + exp(-2.0 * u))
}

dispatch!(
    pub fn gelu_tanh(values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = gelu_tanh_one(*v);
        }
    }
);

dispatch!(
    pub fn gelu_tanh_times(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = gelu_tanh_one(*g) * *u;
        }
    }
);

dispatch!(
    pub fn silu_times(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = *g / (1.0 + exp(-*g)) * *u;
        }
    }
);

/// Σ `values`, over 8 lanes then across them (a fixed order).
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += *v;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Σ (values − shift)², over 8 lanes then across them.
#[inline(always)]
fn sum_squares(values: &[f32], shift: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            let c = *v - shift;
            *lane += c * c;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| (v - shift) * (v - shift)).sum::<f32>()
}

/// Σ a·b, over 8 lanes then across them.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += *x * *y;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// `out += weight · x`.
#[inline(always)]
pub fn add_scaled(out: &mut [f32], weight: f32, x: &[f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += weight * *x;
    }
}

dispatch!(
    pub fn layer_norm_row(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
        // TransformerLens's order: centre, scale = √(mean(x_c²) + eps), x_c / scale · w + b.
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let scale = (sum_squares(x, mean) / n + eps).sqrt();
        for (((o, x), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
            *o = (*x - mean) / scale * *w + *b;
        }
    }
);

dispatch!(
    pub fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        // scale = √(mean(x²) + eps), x / scale · w.
        let scale = (sum_squares(x, 0.0) / x.len() as f32 + eps).sqrt();
        for ((o, x), w) in out.iter_mut().zip(x).zip(weight) {
            *o = *x / scale * *w;
        }
    }
);

dispatch!(
    pub fn add_into(out: &mut [f32], x: &[f32]) {
        for (o, x) in out.iter_mut().zip(x) {
            *o += *x;
        }
    }
);

/// Per row of logits `row` `[d_vocab]`: `(log Σ e^row, Σ weights · row)` in f64 (within
/// a few ulp), the two terms of the log-probabilities and of a cross-entropy against
/// `weights` (a distribution).
pub fn log_sum_exp_and_dot(row: &[f32], weights: &[f64]) -> (f64, f64) {
    let max = max(row);
    let (sum, dot) = exp_sum_and_dot(row, max, weights);
    (sum.ln() + max as f64, dot)
}

dispatch!(
    fn max(values: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, v) in lanes.iter_mut().zip(chunk) {
                *lane = if *v > *lane { *v } else { *lane };
            }
        }
        lanes
            .iter()
            .chain(rest)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }
);

dispatch!(
    fn exp_sum_and_dot(row: &[f32], shift: f32, weights: &[f64]) -> (f64, f64) {
        let mut sums = [0f64; LANES];
        let mut dots = [0f64; LANES];
        let chunks = row.chunks_exact(LANES).zip(weights.chunks_exact(LANES));
        let at = row.len() / LANES * LANES;
        for (chunk, w) in chunks {
            for (((sum, dot), x), w) in sums.iter_mut().zip(dots.iter_mut()).zip(chunk).zip(w) {
                *sum += exp64(*x as f64 - shift as f64);
                *dot += *w * *x as f64;
            }
        }
        let (mut sum, mut dot) = (sums.iter().sum::<f64>(), dots.iter().sum::<f64>());
        for (x, w) in row[at..].iter().zip(&weights[at..]) {
            sum += exp64(*x as f64 - shift as f64);
            dot += *w * *x as f64;
        }
        (sum, dot)
    }
);

#[cfg(test)]
mod tests;
