//! A fixture written as llama.cpp's converter writes it: f32 tensors under GGUF names
//! (q/k rows permuted for interleaved rotary in `llama` files only), the config as
//! `<arch>.*` metadata, the tokenizer of `tokenizer.json` as `tokenizer.ggml.*`, and
//! Llama 3 rotary scaling as `rope_freqs.weight` (llama.cpp's per-frequency divisors).
//! Shared by the model's and the runner's tests:
//! `#[path = "../../../tests/support/tiny_gguf.rs"] mod tiny_gguf;`.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::Value as Json;

pub use candle_core::quantized::gguf_file::Value as MetadataValue;

/// `tests/fixtures/<name>` of the repository.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Which fixture, as which GGUF architecture, with which `tokenizer.ggml.pre`.
pub struct GgufSpec<'a> {
    pub fixture: &'a str,
    /// `general.architecture`: llama, qwen2 or qwen3.
    pub arch: &'a str,
    pub pre: &'a str,
}

/// The tiny Llama fixture, as SmolLM2's GGUF files are (`pre` = `smollm`).
pub const TINY_LLAMA: GgufSpec = GgufSpec {
    fixture: "tiny-llama",
    arch: "llama",
    pre: "smollm",
};

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
        ("lm_head.", "output."),
        ("model.layers.", "blk."),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
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

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// llama.cpp's converter (`convert_hf_to_gguf.py`, LlamaModel) for `rope_type = llama3`:
/// 1 for high frequencies, `factor` for low ones, interpolated between.
fn llama3_rope_factors(rope: &Json, theta: f64, d_head: usize) -> Vec<f32> {
    let get = |k: &str| rope[k].as_f64().unwrap();
    let (factor, low, high, old) = (
        get("factor"),
        get("low_freq_factor"),
        get("high_freq_factor"),
        get("original_max_position_embeddings"),
    );
    (0..d_head / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / d_head as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor as f32
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

/// The metadata of the fixture's config.json and tokenizer.json.
fn metadata(spec: &GgufSpec, config: &Json, d_head: usize) -> Vec<(String, Value)> {
    let arch = spec.arch;
    let int = |k: &str| Value::U32(config[k].as_u64().unwrap() as u32);
    let rope = config.get("rope_parameters").unwrap_or(config);
    let theta = rope["rope_theta"].as_f64().unwrap_or(10_000.0);
    let tok = read_json(&fixture(spec.fixture).join("tokenizer.json"));
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    let added = tok["added_tokens"].as_array().unwrap();
    for t in added {
        let id = t["id"].as_u64().unwrap() as usize;
        if id >= tokens.len() {
            tokens.resize(id + 1, String::new());
        }
        tokens[id] = t["content"].as_str().unwrap().to_string();
    }
    let special = |i: u64| added.iter().any(|t| t["id"] == i && t["special"] == true);
    let types = (0..tokens.len() as u64).map(|i| Value::I32(if special(i) { 3 } else { 1 }));
    let merges = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Json::String(s) => s.clone(),
            pair => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
        });
    let key = |k: &str| format!("{arch}.{k}");
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("block_count"), int("num_hidden_layers")),
        (key("context_length"), int("max_position_embeddings")),
        (key("embedding_length"), int("hidden_size")),
        (key("feed_forward_length"), int("intermediate_size")),
        (key("attention.head_count"), int("num_attention_heads")),
        (key("attention.head_count_kv"), int("num_key_value_heads")),
        (key("attention.key_length"), Value::U32(d_head as u32)),
        (key("rope.freq_base"), Value::F32(theta as f32)),
        (key("rope.dimension_count"), Value::U32(d_head as u32)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(config["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(spec.pre.into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), int("bos_token_id")),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
    ]
}

/// Writes the fixture as a GGUF file in a fresh temporary folder; `edit` may change the
/// metadata first. Remove it with [`cleanup`].
pub fn write_fixture_gguf(
    spec: &GgufSpec,
    tag: &str,
    edit: impl FnOnce(&mut Vec<(String, Value)>),
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "actpatch-gguf-{}-{tag}-{}",
        spec.fixture,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.gguf", spec.fixture));
    let config = read_json(&fixture(spec.fixture).join("config.json"));
    let heads = config["num_attention_heads"].as_u64().unwrap() as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap() as usize;
    let d_head = config["head_dim"]
        .as_u64()
        .map(|d| d as usize)
        .unwrap_or(config["hidden_size"].as_u64().unwrap() as usize / heads);

    let weights = candle_core::safetensors::load(
        fixture(spec.fixture).join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, tensor) in &weights {
        let permuted = spec.arch == "llama" && tensor.rank() == 2;
        let tensor = if permuted && name.contains("q_proj") {
            permute(tensor, heads)
        } else if permuted && name.contains("k_proj") {
            permute(tensor, kv_heads)
        } else {
            tensor.clone()
        };
        tensors.push((
            gguf_name(name),
            QTensor::quantize(&tensor, GgmlDType::F32).unwrap(),
        ));
    }
    let rope = config.get("rope_parameters").unwrap_or(&config);
    if rope["rope_type"] == "llama3" {
        let theta = rope["rope_theta"].as_f64().unwrap();
        let factors = llama3_rope_factors(rope, theta, d_head);
        let factors = Tensor::from_vec(factors, d_head / 2, &Device::Cpu).unwrap();
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&factors, GgmlDType::F32).unwrap(),
        ));
    }
    let mut metadata = metadata(spec, &config, d_head);
    edit(&mut metadata);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}

pub fn cleanup(path: &Path) {
    if let Some(dir) = path.parent() {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Sets metadata `key` to `value` where present.
pub fn set(metadata: &mut [(String, Value)], key: &str, value: Value) {
    if let Some(entry) = metadata.iter_mut().find(|(k, _)| k == key) {
        entry.1 = value;
    }
}
