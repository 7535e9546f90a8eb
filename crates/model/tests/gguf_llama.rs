//! GGUF loading, offline: the tiny Llama fixture written as llama.cpp's converter writes
//! it (f32, tensors renamed, q/k rows permuted for interleaved rotary, tokenizer in the
//! metadata) must reproduce the TransformerLens golden values of the safetensors model.

mod common;

use std::path::{Path, PathBuf};

use actpatch_model::{HookedTransformer, ModelError};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::fixture;
use common::golden_checks as checks;

const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// llama.cpp's `permute`: within each head, rows `[2, d_head / 2]` → `[d_head / 2, 2]`.
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    w.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn gguf_name(hf: &str) -> String {
    let renamed = [
        ("model.embed_tokens.", "token_embd."),
        ("model.norm.", "output_norm."),
        ("model.layers.", "blk."),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    renamed
        .iter()
        .fold(hf.to_string(), |name, (a, b)| name.replace(a, b))
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

/// The tiny Llama as a GGUF file; `edit` may change the metadata before writing.
fn write_tiny_gguf(tag: &str, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-gguf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-llama.gguf");

    let weights = candle_core::safetensors::load(
        fixture("tiny-llama").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, tensor) in &weights {
        let tensor = if name.contains("q_proj") {
            permute(tensor, HEADS)
        } else if name.contains("k_proj") {
            permute(tensor, KV_HEADS)
        } else {
            tensor.clone()
        };
        tensors.push((
            gguf_name(name),
            QTensor::quantize(&tensor, GgmlDType::F32).unwrap(),
        ));
    }

    let tok: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-llama").join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    let specials: Vec<u64> = tok["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let types =
        (0..tokens.len() as u64).map(|i| Value::I32(if specials.contains(&i) { 3 } else { 1 }));
    let merges = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()));

    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(2)),
        ("llama.context_length".into(), Value::U32(64)),
        ("llama.embedding_length".into(), Value::U32(32)),
        ("llama.feed_forward_length".into(), Value::U32(64)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        ("llama.rope.freq_base".into(), Value::F32(100_000.0)),
        ("llama.rope.dimension_count".into(), Value::U32(8)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
    ];
    edit(&mut metadata);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}

fn cleanup(path: &Path) {
    if let Some(dir) = path.parent() {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn tiny_llama_from_gguf_matches_the_golden_values() {
    let path = write_tiny_gguf("golden", |_| {});
    let model = HookedTransformer::from_dir(&path).unwrap();
    assert_eq!(model.dims().n_kv_heads, 2);
    assert_eq!(model.files().gguf(), Some(path.as_path()));
    checks::tokens_with_bos_match_transformer_lens(&model, "tiny-llama");
    checks::last_position_logits_match(&model, "tiny-llama");
    checks::logit_differences_match(&model, "tiny-llama");
    checks::every_cached_activation_matches(&model, "tiny-llama", 1 + 2 * 20 + 2);
    cleanup(&path);
}

fn load_err(tag: &str, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> ModelError {
    let path = write_tiny_gguf(tag, edit);
    let err = HookedTransformer::from_dir(&path)
        .err()
        .expect("loading should fail");
    cleanup(&path);
    err
}

fn set(metadata: &mut [(String, Value)], key: &str, value: Value) {
    if let Some(entry) = metadata.iter_mut().find(|(k, _)| k == key) {
        entry.1 = value;
    }
}

#[test]
fn unsupported_gguf_architecture_names_it_and_the_supported_ones() {
    let err = load_err("arch", |m| {
        set(m, "general.architecture", Value::String("falcon".into()))
    });
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{msg}"
    );
    assert!(msg.contains("falcon") && msg.contains("llama"), "{msg}");
}

#[test]
fn missing_metadata_names_the_key() {
    let err = load_err("key", |m| m.retain(|(k, _)| k != "llama.block_count")).to_string();
    assert!(err.contains("llama.block_count"), "{err}");
}

#[test]
fn sentencepiece_tokenizer_is_refused_by_name() {
    let err = load_err("spm", |m| {
        set(m, "tokenizer.ggml.model", Value::String("llama".into()))
    })
    .to_string();
    assert!(
        err.contains("tokenizer.ggml.model `llama`") && err.contains("gpt2"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("actpatch-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.gguf");
    std::fs::write(&path, b"not a gguf file at all").unwrap();
    let err = HookedTransformer::from_dir(&path)
        .err()
        .expect("loading should fail");
    assert!(matches!(err, ModelError::Gguf { .. }), "{err}");
    assert!(err.to_string().contains("broken.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
