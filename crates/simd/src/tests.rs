//! The kernels against their definitions and library functions, and every instruction
//! set against the baseline, bit for bit.

use super::*;

#[test]
fn exp_is_within_two_ulp_of_the_library_exp() {
    let mut worst = 0f64;
    for i in -8700..=8700 {
        let x = i as f32 / 100.0;
        let want = (x as f64).exp();
        let got = exp(x) as f64;
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 2.5e-7, "relative error {worst:e}");
}

#[test]
fn exp64_is_within_a_few_ulp_of_the_library_exp() {
    let mut worst = 0f64;
    for i in -70_800..=70_890 {
        let x = i as f64 / 100.0 + 0.001_234_5;
        let want = x.exp();
        worst = worst.max(((exp64(x) - want) / want).abs());
    }
    assert!(worst < 1e-15, "relative error {worst:e}");
}

#[test]
fn log_sum_exp_matches_f64() {
    let row: Vec<f32> = (0..50_001)
        .map(|i| ((i * 7919) % 2003) as f32 / 17.0 - 40.0)
        .collect();
    let weights: Vec<f64> = (0..50_001).map(|i| 1.0 / (1.0 + i as f64)).collect();
    let (lse, dot) = log_sum_exp_and_dot(&row, &weights);
    let max = row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(*x as f64));
    let want = row
        .iter()
        .map(|x| (*x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    let want_dot: f64 = row.iter().zip(&weights).map(|(x, w)| *x as f64 * w).sum();
    assert!((lse - want).abs() < 1e-12, "{lse} vs {want}");
    assert!(
        (dot - want_dot).abs() < 1e-9 * want_dot.abs(),
        "{dot} vs {want_dot}"
    );
}

#[test]
fn gelu_matches_the_tanh_formula() {
    let mut values: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 100.0).collect();
    let want: Vec<f64> = values
        .iter()
        .map(|&x| {
            let x = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        })
        .collect();
    gelu_tanh(&mut values);
    for (got, want) in values.iter().zip(want) {
        let gap = (*got as f64 - want).abs();
        assert!(gap <= 1e-6 * want.abs().max(1e-3), "{got} vs {want}");
    }
}

#[test]
fn norms_match_their_definitions() {
    let x: Vec<f32> = (0..37)
        .map(|i| ((i * 7919) % 101) as f32 / 7.0 - 5.0)
        .collect();
    let w: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 50.0).collect();
    let b: Vec<f32> = (0..37).map(|i| i as f32 / 100.0).collect();
    let mut out = vec![0f32; 37];
    layer_norm_row(&x, &w, &b, 1e-5, &mut out);
    let n = x.len() as f64;
    let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    for i in 0..37 {
        let want = (x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
        assert!((out[i] as f64 - want).abs() < 1e-5, "{i}");
    }
    rms_norm_row(&x, &w, 1e-6, &mut out);
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
    for i in 0..37 {
        let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64;
        assert!((out[i] as f64 - want).abs() < 1e-5, "{i}");
    }
    assert!(
        (dot(&x, &w) as f64 - x.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum::<f64>()).abs()
            < 1e-3
    );
}
/// Every kernel's output under each tier the CPU has, as bits.
fn outputs_at(tier: Tier) -> Vec<Vec<u64>> {
    WIDEST.with(|widest| widest.set(tier));
    let n = 1003; // not a multiple of any vector width
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2003) as f32 / 97.0 - 10.0)
        .collect();
    let y: Vec<f32> = (0..n)
        .map(|i| ((i * 104_729) % 997) as f32 / 331.0 - 1.5)
        .collect();
    let weights: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64)).collect();
    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits() as u64).collect::<Vec<u64>>();
    let mut outputs = Vec::new();
    let mut out = x.clone();
    gelu_tanh(&mut out);
    outputs.push(bits32(&out));
    gelu_tanh_times(&x, &y, &mut out);
    outputs.push(bits32(&out));
    silu_times(&x, &y, &mut out);
    outputs.push(bits32(&out));
    layer_norm_row(&x, &y, &x, 1e-5, &mut out);
    outputs.push(bits32(&out));
    rms_norm_row(&x, &y, 1e-6, &mut out);
    outputs.push(bits32(&out));
    out.copy_from_slice(&y);
    add_into(&mut out, &x);
    outputs.push(bits32(&out));
    gelu_tanh_grad(&x, &y, &mut out);
    outputs.push(bits32(&out));
    layer_norm_row_grad(&x, &y, 1e-5, &x, &mut out);
    outputs.push(bits32(&out));
    rms_norm_row_grad(&x, &y, 1e-6, &x, &mut out);
    outputs.push(bits32(&out));
    let mut d_up = vec![0f32; n];
    silu_times_grad(&x, &y, &y, &mut out, &mut d_up);
    outputs.push(bits32(&out));
    outputs.push(bits32(&d_up));
    let (lse, dot) = log_sum_exp_and_dot(&x, &weights);
    outputs.push(vec![lse.to_bits(), dot.to_bits()]);
    WIDEST.with(|widest| widest.set(Tier::Avx512));
    outputs
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    let baseline = outputs_at(Tier::Baseline);
    for tier in [Tier::Avx2, Tier::Avx512] {
        let got = outputs_at(tier);
        for (kernel, (got, want)) in got.iter().zip(&baseline).enumerate() {
            assert!(
                got == want,
                "kernel {kernel} under {tier:?} differs from the baseline"
            );
        }
    }
}
