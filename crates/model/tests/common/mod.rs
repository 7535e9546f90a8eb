//! Shared helpers of the golden tests: fixture paths and JSON-to-number flattening.
#![allow(dead_code)]

pub mod families;
pub mod golden_checks;
pub mod samples;

use std::path::PathBuf;

use candle_core::Tensor;
use serde_json::Value;

/// Every family's fixture.
pub const FIXTURES: [&str; 7] = [
    "tiny-gpt2",
    "tiny-llama",
    "tiny-llama3",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-pythia",
];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

pub fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Nested JSON arrays → (shape, flat values), `null` as `None`.
pub fn flatten(value: &Value) -> (Vec<usize>, Vec<Option<f64>>) {
    let mut shape = Vec::new();
    let mut cursor = value;
    while let Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    let mut flat = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Option<f64>>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Null => out.push(None),
            other => out.push(other.as_f64()),
        }
    }
    walk(value, &mut flat);
    (shape, flat)
}

pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Asserts `actual` equals the golden `expected` within `tol`; `null` entries must be -inf.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Value, tol: f64) {
    let (shape, want) = flatten(expected);
    assert_eq!(actual.dims(), shape.as_slice(), "{name}: shape");
    let got: Vec<f32> = actual.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        match w {
            None => assert!(
                g.is_infinite() && *g < 0.0,
                "{name}[{i}]: expected masked (-inf), got {g}"
            ),
            Some(w) => {
                let diff = (*g as f64 - w).abs();
                worst = worst.max(diff);
                assert!(
                    diff <= tol,
                    "{name}[{i}]: got {g}, golden {w} (diff {diff:e})"
                );
            }
        }
    }
    assert!(worst <= tol);
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// log Σ exp(logits), in f64.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|v| (*v as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// The ids of the `k` largest logits, largest first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    order[..k].iter().map(|i| *i as u32).collect()
}

/// The next-token logits `[d_vocab]` of one prompt's token ids.
pub fn next_token_logits(model: &actpatch_model::HookedTransformer, tokens: &[u32]) -> Vec<f32> {
    let tokens = model.tokens_tensor(&[tokens.to_vec()]).unwrap();
    model
        .forward(
            &tokens,
            &mut actpatch_hooks::Hooks::none(),
            actpatch_model::Readout::LastPosition,
        )
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The SmolLM2 GGUF of the real-model tests: `ACTPATCH_SMOLLM2_GGUF`, else where
/// `just fetch-smollm2` puts it.
pub fn gguf_path() -> PathBuf {
    std::env::var_os("ACTPATCH_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}
