//! llama.cpp GGUF files: a Llama-family model's config, weights and tokenizer in one
//! file (`general.architecture` llama — Llama 1–3.x, SmolLM2 —, qwen2 — Qwen2,
//! Qwen2.5 — or qwen3).
//!
//! Every tensor is dequantized to f32 at load, so a quantized file runs as the f32
//! model its quantized weights describe (what Hugging Face transformers does with
//! `from_pretrained(..., gguf_file=...)`). Tensors are renamed to the Hugging Face
//! names, and for `llama` the rows of `attn_q`/`attn_k`, which llama.cpp's converter
//! permutes for its interleaved rotary embedding, are put back in the Hugging Face
//! "halves" order (Qwen files keep Hugging Face's order), so [`crate::llama::Llama`]
//! runs them unchanged. Llama 3.1-style rotary scaling comes as llama.cpp stores it,
//! one divisor per frequency in `rope_freqs.weight`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use crate::llama::LlamaConfig;
use crate::rope::{RopeConfig, RopeScaling};
use crate::weights::WeightStore;
use crate::{ModelError, Result};

mod tokenizer;

/// The `general.architecture`s this module reads.
pub const ARCHITECTURES: &str = "llama, qwen2, qwen3";

/// An open GGUF file: its metadata and where its tensors are.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content =
            Content::read(&mut BufReader::new(file)).map_err(|e| gguf_err(path, e.to_string()))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
        })
    }

    /// `general.architecture`, checked to be one this crate runs.
    pub fn architecture(&self) -> Result<&str> {
        let arch = self.string("general.architecture")?;
        if !matches!(arch, "llama" | "qwen2" | "qwen3") {
            return Err(ModelError::UnsupportedArchitecture {
                path: self.path.clone(),
                found: format!("{arch} (GGUF general.architecture)"),
                supported: format!("{ARCHITECTURES} (GGUF general.architecture)"),
            });
        }
        Ok(arch)
    }

    /// The Hugging Face config this file's `llama.*` metadata describes.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self.architecture()?;
        let key = |k: &str| format!("{arch}.{k}");
        let hidden_size = self.usize(&key("embedding_length"))?;
        let num_attention_heads = self.usize(&key("attention.head_count"))?;
        let head_dim = self.optional_usize(&key("attention.key_length"))?;
        let (vocab_size, _) = self.tensor_dims2("token_embd.weight")?;
        if let Some(kind) = self
            .optional_string(&key("rope.scaling.type"))?
            .filter(|k| *k != "none")
        {
            return Err(ModelError::UnsupportedOption {
                path: self.path.clone(),
                key: key("rope.scaling.type"),
                value: format!("{kind:?}"),
                supported: "none, or Llama 3 scaling as rope_freqs.weight".into(),
            });
        }
        let theta = self
            .optional_f64(&key("rope.freq_base"))?
            .unwrap_or(10_000.0);
        let scaling = match self.content.tensor_infos.contains_key("rope_freqs.weight") {
            true => RopeScaling::Factors(self.rope_freqs()?),
            false => RopeScaling::None,
        };
        let cfg = LlamaConfig {
            model_type: arch.into(),
            vocab_size,
            hidden_size,
            intermediate_size: self.usize(&key("feed_forward_length"))?,
            num_hidden_layers: self.usize(&key("block_count"))?,
            num_attention_heads,
            num_key_value_heads: self.optional_usize(&key("attention.head_count_kv"))?,
            head_dim,
            max_position_embeddings: self.usize(&key("context_length"))?,
            rope: RopeConfig {
                theta,
                partial_rotary_factor: 1.0,
                scaling,
            },
            rms_norm_eps: self.f64(&key("attention.layer_norm_rms_epsilon"))?,
            attention_bias: self.content.tensor_infos.contains_key("blk.0.attn_q.bias"),
            mlp_bias: self
                .content
                .tensor_infos
                .contains_key("blk.0.ffn_gate.bias"),
            hidden_act: "silu".into(),
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            bos_token_id: self
                .optional_usize("tokenizer.ggml.bos_token_id")?
                .map(|id| id as u32),
            sliding_window: None,
            use_sliding_window: false,
        };
        cfg.check(&self.path)?;
        if let Some(rot) = self.optional_usize(&key("rope.dimension_count"))? {
            if rot != cfg.d_head() {
                return Err(ModelError::UnsupportedOption {
                    path: self.path.clone(),
                    key: key("rope.dimension_count"),
                    value: rot.to_string(),
                    supported: format!(
                        "the head dimension ({}): partial rotary embeddings are not supported for {arch}",
                        cfg.d_head()
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// `rope_freqs.weight`: llama.cpp's per-frequency divisors (Llama 3.1-style scaling).
    fn rope_freqs(&self) -> Result<Vec<f32>> {
        let file = File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.content
            .tensor(&mut BufReader::new(file), "rope_freqs.weight", &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| gguf_err(&self.path, format!("tensor `rope_freqs.weight`: {e}")))
    }

    /// Every tensor, dequantized to f32 and named as in Hugging Face `LlamaForCausalLM`.
    pub fn llama_weights(&self, cfg: &LlamaConfig, device: &Device) -> Result<WeightStore> {
        let file = File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut tensors = HashMap::new();
        for name in self.content.tensor_infos.keys() {
            let Some((hf_name, heads)) = hf_name(name, cfg) else {
                continue;
            };
            let tensor = self
                .content
                .tensor(&mut reader, name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| gguf_err(&self.path, format!("tensor `{name}`: {e}")))?;
            let tensor = match heads {
                Some(n) => unpermute_rows(&tensor, n, &self.path, name)?,
                None => tensor,
            };
            tensors.insert(hf_name, tensor);
        }
        Ok(WeightStore::from_tensors(
            self.path.clone(),
            tensors,
            device,
            "Llama (GGUF)",
        ))
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| ModelError::Config {
                path: self.path.clone(),
                reason: format!("GGUF metadata has no `{key}`"),
            })
    }

    fn wrong_type(&self, key: &str, want: &str) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            reason: format!("GGUF metadata `{key}` is not {want}"),
        }
    }

    fn string(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong_type(key, "a string")),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<&str>> {
        match self.content.metadata.contains_key(key) {
            true => self.string(key).map(Some),
            false => Ok(None),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let items = match self.value(key)? {
            Value::Array(items) => items,
            _ => return Err(self.wrong_type(key, "an array")),
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(self.wrong_type(key, "an array of strings")),
            })
            .collect()
    }

    fn usize(&self, key: &str) -> Result<usize> {
        integer(self.value(key)?)
            .map(|v| v as usize)
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer"))
    }

    fn optional_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.content.metadata.contains_key(key) {
            true => self.usize(key).map(Some),
            false => Ok(None),
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v as f64),
            Value::F64(v) => Ok(*v),
            _ => Err(self.wrong_type(key, "a float")),
        }
    }

    fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.contains_key(key) {
            true => self.f64(key).map(Some),
            false => Ok(None),
        }
    }

    /// A 2-d tensor's shape as candle reads it (`[rows, cols]`, GGUF's order reversed).
    fn tensor_dims2(&self, name: &str) -> Result<(usize, usize)> {
        let info =
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    arch: "Llama (GGUF)",
                })?;
        info.shape
            .dims2()
            .map_err(|e| gguf_err(&self.path, format!("tensor `{name}`: {e}")))
    }
}

/// A non-negative integer of any GGUF integer type.
fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::U8(v) => Some(*v as u64),
        Value::U16(v) => Some(*v as u64),
        Value::U32(v) => Some(*v as u64),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// A GGUF tensor's Hugging Face name, and the head count to un-permute its rows with
/// (q and k only); `None` for tensors the model does not use.
fn hf_name(gguf: &str, cfg: &LlamaConfig) -> Option<(String, Option<usize>)> {
    let global = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = global {
        return Some((name.to_string(), None));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    // llama.cpp permutes q and k rows for its interleaved rotary in `llama` files only.
    let permuted = cfg.model_type == "llama";
    let (hf, heads) = match module {
        "attn_norm" => ("input_layernorm", None),
        "attn_q" => (
            "self_attn.q_proj",
            Some(cfg.num_attention_heads).filter(|_| permuted),
        ),
        "attn_k" => (
            "self_attn.k_proj",
            Some(cfg.n_kv_heads()).filter(|_| permuted),
        ),
        "attn_q_norm" => ("self_attn.q_norm", None),
        "attn_k_norm" => ("self_attn.k_norm", None),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}.{param}"), heads))
}

/// Undoes llama.cpp's `permute(w, n_head)`: within each head, rows stored as
/// `[d_head / 2, 2]` (interleaved pairs) go back to `[2, d_head / 2]` (halves).
/// `w`: `[heads * d_head, d_in]` weight or `[heads * d_head]` bias.
fn unpermute_rows(w: &Tensor, heads: usize, path: &Path, name: &str) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims.first().copied().unwrap_or(0);
    let rest: usize = dims.iter().skip(1).product();
    if heads == 0 || rows % (2 * heads) != 0 {
        return Err(gguf_err(
            path,
            format!(
                "tensor `{name}` has {rows} rows, not an even number per head for {heads} heads"
            ),
        ));
    }
    let half = rows / heads / 2;
    Ok(w.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

fn gguf_err(path: &Path, reason: String) -> ModelError {
    ModelError::Gguf {
        file: path.to_path_buf(),
        reason,
    }
}
