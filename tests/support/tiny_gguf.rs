//! The tiny Llama fixture written as llama.cpp's converter writes a GGUF file (f32,
//! tensors renamed, q/k rows permuted for interleaved rotary, the tokenizer in the
//! metadata). Shared by the model's and the runner's tests:
//! `#[path = "../../../tests/support/tiny_gguf.rs"] mod tiny_gguf;`.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub use candle_core::quantized::gguf_file::Value as MetadataValue;

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

/// The tiny Llama fixture (`fixture`: its folder) as a GGUF file in a fresh temporary
/// folder named after `tag`; `edit` may change the metadata before writing.
pub fn write_tiny_gguf(
    fixture: &Path,
    tag: &str,
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-gguf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-llama.gguf");

    let weights =
        candle_core::safetensors::load(fixture.join("model.safetensors"), &Device::Cpu).unwrap();
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

    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("tokenizer.json")).unwrap())
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
