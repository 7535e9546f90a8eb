//! The Llama family's config variants on the tiny Llama fixture: which biases each
//! `model_type` loads, untied unembeddings, and the errors for what is not supported.

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint};
use actpatch_model::{HookedTransformer, ModelError};
use candle_core::{Device, Tensor};
use common::{fixture, golden, ids, max_abs_diff};

/// A copy of the tiny Llama folder with `config.json` fields overridden and the
/// weights edited.
fn variant(
    tag: &str,
    config: serde_json::Value,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-llama-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture("tiny-llama").join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (key, value) in config.as_object().unwrap() {
        cfg[key] = value.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut weights = candle_core::safetensors::load(
        fixture("tiny-llama").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    edit(&mut weights);
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    dir
}

fn clean_tokens() -> Vec<u32> {
    ids(&golden("tiny-llama")["pairs"]["landmarks"]["clean_tokens"])
}

fn filled(value: f32, n: usize) -> Tensor {
    Tensor::full(value, n, &Device::Cpu).unwrap()
}

#[test]
fn qwen2_value_bias_shifts_every_heads_z_by_the_bias() {
    // Attention rows sum to 1, so a value bias b adds b to every z of the heads it feeds.
    let dir = variant("qwen2", serde_json::json!({ "model_type": "qwen2" }), |w| {
        for layer in 0..2 {
            let name = |p: &str| format!("model.layers.{layer}.self_attn.{p}.bias");
            w.insert(name("q_proj"), filled(0.0, 32));
            w.insert(name("k_proj"), filled(0.0, 16));
            w.insert(
                name("v_proj"),
                filled(if layer == 0 { 0.25 } else { 0.0 }, 16),
            );
        }
    });
    let qwen = HookedTransformer::from_dir(&dir).unwrap();
    let llama = HookedTransformer::from_dir(fixture("tiny-llama")).unwrap();
    let z = HookPoint::block(0, BlockSite::Z);
    let (_, got) = qwen
        .run_with_cache(&[clean_tokens()], CacheFilter::only([z]))
        .unwrap();
    let (_, plain) = llama
        .run_with_cache(&[clean_tokens()], CacheFilter::only([z]))
        .unwrap();
    let shifted = (plain.get(z).unwrap() + 0.25).unwrap();
    assert!(max_abs_diff(got.get(z).unwrap(), &shifted) < 1e-5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn untied_unembedding_reads_lm_head() {
    // lm_head = 2 × embedding doubles every logit.
    let dir = variant(
        "untied",
        serde_json::json!({ "tie_word_embeddings": false }),
        |w| {
            let doubled = (w["model.embed_tokens.weight"].clone() * 2.0).unwrap();
            w.insert("lm_head.weight".into(), doubled);
        },
    );
    let untied = HookedTransformer::from_dir(&dir).unwrap();
    let tied = HookedTransformer::from_dir(fixture("tiny-llama")).unwrap();
    let a = untied.logits(&[clean_tokens()]).unwrap();
    let b = (tied.logits(&[clean_tokens()]).unwrap() * 2.0).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn untied_without_lm_head_names_the_tensor() {
    let dir = variant(
        "no-head",
        serde_json::json!({ "tie_word_embeddings": false }),
        |_| {},
    );
    let err = HookedTransformer::from_dir(&dir).err().expect("must fail");
    assert!(
        matches!(&err, ModelError::MissingTensor { tensor, .. } if tensor == "lm_head.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn attention_bias_without_bias_tensors_names_the_tensor() {
    let dir = variant(
        "attn-bias",
        serde_json::json!({ "attention_bias": true }),
        |_| {},
    );
    let err = HookedTransformer::from_dir(&dir)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.bias"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mistral_context_is_capped_at_its_sliding_window() {
    let dir = variant(
        "mistral",
        serde_json::json!({ "model_type": "mistral", "sliding_window": 16 }),
        |_| {},
    );
    let model = HookedTransformer::from_dir(&dir).unwrap();
    assert_eq!(model.dims().n_ctx, 16);
    let err = model.to_tokens(&"word ".repeat(20), true).unwrap_err();
    assert!(
        matches!(err, ModelError::PromptTooLong { n_ctx: 16, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unsupported_configs_say_what_is_supported() {
    let cases = [
        (
            "gemma",
            serde_json::json!({ "model_type": "gemma" }),
            "llama (LlamaForCausalLM)",
        ),
        (
            "partial",
            serde_json::json!({ "partial_rotary_factor": 0.5 }),
            "partial_rotary_factor = 0.5 is not supported",
        ),
        (
            "scaling",
            serde_json::json!({ "rope_scaling": { "rope_type": "yarn", "factor": 8.0 } }),
            "rope_scaling.rope_type = \"yarn\" is not supported (supported: none (null or rope_type \"default\") and \"llama3\")",
        ),
        (
            "llama3-incomplete",
            serde_json::json!({ "rope_scaling": { "rope_type": "llama3", "factor": 8.0 } }),
            "needs `low_freq_factor`",
        ),
        (
            "qwen3-moe",
            serde_json::json!({ "model_type": "qwen3_moe" }),
            "gemma2 (Gemma2ForCausalLM)",
        ),
        (
            "act",
            serde_json::json!({ "hidden_act": "gelu" }),
            "supported: silu",
        ),
        (
            "heads",
            serde_json::json!({ "num_key_value_heads": 3 }),
            "multiple of num_key_value_heads",
        ),
    ];
    for (tag, config, expected) in cases {
        let dir = variant(tag, config, |_| {});
        let err = HookedTransformer::from_dir(&dir)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains(expected), "{tag}: {err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
