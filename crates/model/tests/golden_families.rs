//! Llama 3.x, Qwen2.5, Qwen3, Gemma 2 and Pythia (GPT-NeoX) loaded from Hugging Face
//! folders against transformers, on the tiny random checkpoints of
//! `tests/fixtures/tiny-<family>/` (what is checked: `common/families.rs`).

use crate::common;

use actpatch_model::HookedTransformer;
use common::families::check_family;
use common::{fixture, flatten, golden};
use serde_json::Value;

fn check(fixture_name: &str, arch: &str) {
    let model = HookedTransformer::from_dir(fixture(fixture_name)).unwrap();
    assert_eq!(model.dims().arch.name(), arch);
    check_family(&model, fixture_name);
}

#[test]
fn llama3_matches_transformers() {
    check("tiny-llama3", "llama");
}

#[test]
fn llama3_rope_frequencies_match_transformers() {
    let path = fixture("tiny-llama3").join("config.json");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rope = actpatch_model::rope::RopeConfig::from_config(&config, 10_000.0, &path).unwrap();
    let got = rope.inv_freq(16);
    let (_, want) = flatten(&golden("tiny-llama3")["rope_inv_freq"]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let w = w.unwrap();
        assert!(((*g as f64) - w).abs() <= w.abs() * 1e-6, "{got:?}");
    }
}

#[test]
fn qwen2_matches_transformers() {
    check("tiny-qwen2", "llama");
}

#[test]
fn qwen3_matches_transformers() {
    check("tiny-qwen3", "llama");
}

#[test]
fn gemma2_matches_transformers() {
    check("tiny-gemma2", "gemma2");
}

#[test]
fn pythia_matches_transformers() {
    check("tiny-pythia", "gpt_neox");
}
