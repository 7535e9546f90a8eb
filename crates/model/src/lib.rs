//! Hooked transformers on candle, with TransformerLens's hook points.
//!
//! [`HookedTransformer::load`] reads a Hugging Face checkpoint (GPT-2 or Llama family)
//! from the hub or a local folder, or a llama.cpp `.gguf` file (Llama);
//! [`HookedTransformer::forward`] runs it with [`Hooks`] that patch and cache
//! activations at named [`HookPoint`]s.
//!
//! ```no_run
//! use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};
//! use actpatch_hooks::{CacheFilter, HookPoint};
//!
//! let model = HookedTransformer::load(
//!     &ModelSource::Hub { id: "gpt2".into(), revision: None },
//!     DeviceSpec::Cpu,
//! )?;
//! let tokens = model.to_tokens("The Colosseum is in", true)?;
//! let (logits, cache) = model.run_with_cache(&[tokens], CacheFilter::All)?;
//! let resid = cache.get(HookPoint::resid_pre(5))?; // [batch, pos, d_model]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arch;
mod device;
mod error;
pub mod gemma2;
pub mod gguf;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod neox;
pub mod rope;
pub mod source;
mod tokenizer;
pub mod weights;

use std::path::Path;

use actpatch_hooks::{ActivationCache, CacheFilter, HookSpace, Hooks, Patch};
use candle_core::{Device, Tensor};

pub use actpatch_hooks::HookPoint;
use arch::ArchModel;
pub use device::DeviceSpec;
pub use error::{ModelError, Result};
pub use layers::{Frame, KvPrefix};
pub use source::{ModelFiles, ModelSource, TokenizerFiles};
pub use tokenizer::Tokenizer;

/// The supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gpt2,
    /// Llama and its close relatives: Llama 3.x, Mistral, Qwen2/2.5, Qwen3 (see [`llama`]).
    Llama,
    /// Gemma 2 (see [`gemma2`]).
    Gemma2,
    /// GPT-NeoX and Pythia (see [`neox`]).
    GptNeox,
}

impl Architecture {
    pub const SUPPORTED: &'static str =
        "gpt2 (GPT2LMHeadModel), llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM), gemma2 (Gemma2ForCausalLM), gpt_neox (GPTNeoXForCausalLM, Pythia); GGUF files of general.architecture llama, qwen2, qwen3";

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Gpt2 => "gpt2",
            Architecture::Llama => "llama",
            Architecture::Gemma2 => "gemma2",
            Architecture::GptNeox => "gpt_neox",
        }
    }
}

/// A model's sizes, named as TransformerLens's `HookedTransformerConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDims {
    pub arch: Architecture,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    /// Key/value heads (fewer than `n_heads` under grouped-query attention).
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub n_ctx: usize,
    pub d_vocab: usize,
}

/// Which logits a forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readout<'a> {
    /// `[batch, pos, d_vocab]`
    AllPositions,
    /// `[batch, d_vocab]`: the next-token logits only, all that patching metrics need.
    LastPosition,
    /// `[batch, columns.len()]`: the next-token logits of these token ids only (e.g.
    /// the two answers, for logit-difference metrics: no full-vocabulary unembedding).
    LastPositionColumns(&'a [u32]),
}

impl Readout<'_> {
    /// `normalized` `[batch, pos, d_model]`, `w_u` `[d_model, d_vocab]` → logits.
    pub fn unembed(
        self,
        normalized: &Tensor,
        w_u: &Tensor,
        b_u: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, pos, d_model) = normalized.dims3()?;
        let last = || -> Result<Tensor> {
            Ok(normalized
                .narrow(1, pos - 1, 1)?
                .reshape((batch, d_model))?)
        };
        let (rows, w_u, b_u) = match self {
            Readout::AllPositions => (
                normalized.reshape((batch * pos, d_model))?,
                w_u.clone(),
                b_u.cloned(),
            ),
            Readout::LastPosition => (last()?, w_u.clone(), b_u.cloned()),
            Readout::LastPositionColumns(ids) => {
                let d_vocab = w_u.dim(1)?;
                if let Some(id) = ids.iter().find(|id| **id as usize >= d_vocab) {
                    return Err(ModelError::TokenOutOfRange {
                        id: *id,
                        vocab: d_vocab,
                    });
                }
                let ids = Tensor::from_slice(ids, ids.len(), w_u.device())?;
                let b_u = b_u.map(|b| b.index_select(&ids, 0)).transpose()?;
                (last()?, w_u.index_select(&ids, 1)?, b_u) // w_u: [d_model, columns]
            }
        };
        let logits = rows.matmul(&w_u)?;
        let logits = match b_u {
            Some(b) => logits.broadcast_add(&b)?,
            None => logits,
        };
        Ok(match self {
            Readout::AllPositions => logits.reshape((batch, pos, ()))?,
            _ => logits,
        })
    }
}

/// A language model with hook points, its tokenizer and where it came from.
pub struct HookedTransformer {
    arch: Box<dyn ArchModel>,
    tokenizer: Tokenizer,
    device: Device,
    source: ModelSource,
    files: ModelFiles,
}

impl HookedTransformer {
    /// Loads a model from the hub or a folder onto `device`.
    pub fn load(source: &ModelSource, device: DeviceSpec) -> Result<Self> {
        let files = source.resolve()?;
        Self::from_files(source.clone(), files, device)
    }

    /// Loads a model from a local Hugging Face folder, or a `.gguf` file, on the CPU.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load(
            &ModelSource::Local(dir.as_ref().to_path_buf()),
            DeviceSpec::Cpu,
        )
    }

    fn from_files(source: ModelSource, files: ModelFiles, device: DeviceSpec) -> Result<Self> {
        let device = device.device()?;
        let (arch, tokenizer) = match files.gguf() {
            Some(path) => load_gguf(path, &device)?,
            None => load_hf(&files, &device)?,
        };
        Ok(HookedTransformer {
            arch,
            tokenizer,
            device,
            source,
            files,
        })
    }

    pub fn dims(&self) -> &ModelDims {
        self.arch.dims()
    }

    pub fn hook_space(&self) -> HookSpace {
        self.arch.hook_space()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Token ids of a prompt (BOS first when `prepend_bos`), checked against the context.
    pub fn to_tokens(&self, prompt: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        if prompt.trim().is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let ids = self.tokenizer.encode(prompt, prepend_bos)?;
        let n_ctx = self.dims().n_ctx;
        if ids.len() > n_ctx {
            return Err(ModelError::PromptTooLong {
                prompt: Some(prompt.to_string()),
                n_tokens: ids.len(),
                n_ctx,
            });
        }
        Ok(ids)
    }

    pub fn to_single_token(&self, answer: &str) -> Result<u32> {
        self.tokenizer.single_token(answer)
    }

    pub fn to_str_tokens(&self, ids: &[u32]) -> Vec<String> {
        self.tokenizer.str_tokens(ids)
    }

    /// Rows of token ids (all the same length) as a `[batch, pos]` tensor.
    pub fn tokens_tensor(&self, rows: &[Vec<u32>]) -> Result<Tensor> {
        let pos = rows.first().map(|r| r.len()).unwrap_or(0);
        let n_ctx = self.dims().n_ctx;
        let d_vocab = self.dims().d_vocab;
        if pos > n_ctx {
            return Err(ModelError::PromptTooLong {
                prompt: None,
                n_tokens: pos,
                n_ctx,
            });
        }
        let mut flat = Vec::with_capacity(rows.len() * pos);
        for row in rows {
            if row.len() != pos {
                return Err(ModelError::Encode {
                    text: format!("{row:?}"),
                    reason: format!(
                        "a batch needs rows of equal length; this row has {} tokens, the first {pos}",
                        row.len()
                    ),
                });
            }
            if let Some(id) = row.iter().find(|id| **id as usize >= d_vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id: *id,
                    vocab: d_vocab,
                });
            }
            flat.extend_from_slice(row);
        }
        Ok(Tensor::from_vec(flat, (rows.len(), pos), &self.device)?)
    }

    /// tokens `[batch, pos]` → logits, running `hooks` at every hook point.
    pub fn forward(&self, tokens: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        let (_, pos) = tokens.dims2()?;
        let n_ctx = self.dims().n_ctx;
        if pos == 0 || pos > n_ctx {
            return Err(ModelError::PromptTooLong {
                prompt: None,
                n_tokens: pos,
                n_ctx,
            });
        }
        let mut resid = self.arch.embed(tokens, hooks)?; // [batch, pos, d_model]
        let frame = self.arch.frame(0, pos, tokens.device())?;
        for layer in 0..self.dims().n_layers {
            resid = self.arch.block_forward(layer, resid, &frame, None, hooks)?;
        }
        self.arch.readout(&resid, hooks, readout)
    }

    /// The frame of prompt positions `start..start + len`, for [`Self::block_forward`].
    pub fn frame(&self, start: usize, len: usize) -> Result<Frame> {
        let n_ctx = self.dims().n_ctx;
        if len == 0 || start + len > n_ctx {
            return Err(ModelError::PromptTooLong {
                prompt: None,
                n_tokens: start + len,
                n_ctx,
            });
        }
        self.arch.frame(start, len, &self.device)
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        let n_layers = self.dims().n_layers;
        if layer >= n_layers {
            return Err(actpatch_hooks::HookError::LayerOutOfRange {
                name: format!("blocks.{layer}"),
                layer,
                n_layers,
            }
            .into());
        }
        Ok(())
    }

    /// Runs block `layer` alone on `resid_pre` `[batch, len, d_model]`, whose rows hold
    /// the positions of `frame`; the keys and values of earlier positions come from
    /// `prefix` (from a cached run: [`Self::key_site`] and `hook_v` of this layer).
    /// Hook points see frame-relative positions. Fast sweeps build on this.
    pub fn block_forward(
        &self,
        layer: usize,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        self.arch
            .block_forward(layer, resid_pre, frame, prefix, hooks)
    }

    /// The keys and values block `layer`'s attention reads at the positions of `frame`,
    /// for rows `resid_pre` `[batch, len, d_model]`: (`[batch, len, kv_head, d_head]`,
    /// the same), keys after rotary embedding where there is one. No hooks run.
    pub fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        frame: &Frame,
    ) -> Result<(Tensor, Tensor)> {
        self.check_layer(layer)?;
        self.arch.block_keys_values(layer, resid_pre, frame)
    }

    /// Final norm and unembedding of a residual stream `[batch, len, d_model]`.
    pub fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        self.arch.readout(resid, hooks, readout)
    }

    /// The hook point whose cached value is what attention uses as keys:
    /// `attn.hook_k` (GPT-2) or `attn.hook_rot_k` (Llama, after rotary).
    pub fn key_site(&self) -> actpatch_hooks::BlockSite {
        self.arch.key_site()
    }

    /// Plain logits `[batch, pos, d_vocab]`.
    pub fn logits(&self, rows: &[Vec<u32>]) -> Result<Tensor> {
        let tokens = self.tokens_tensor(rows)?;
        self.forward(&tokens, &mut Hooks::none(), Readout::AllPositions)
    }

    /// Logits `[batch, pos, d_vocab]` and the activations `filter` selects.
    pub fn run_with_cache(
        &self,
        rows: &[Vec<u32>],
        filter: CacheFilter,
    ) -> Result<(Tensor, ActivationCache)> {
        let tokens = self.tokens_tensor(rows)?;
        let mut hooks = Hooks::caching(filter);
        let logits = self.forward(&tokens, &mut hooks, Readout::AllPositions)?;
        Ok((logits, hooks.into_cache()))
    }

    /// Logits with `patches` applied (any number of hook points in one pass).
    pub fn run_with_patches(
        &self,
        rows: &[Vec<u32>],
        patches: &[Patch],
        readout: Readout,
    ) -> Result<Tensor> {
        for patch in patches {
            self.hook_space().check(patch.point)?;
        }
        let tokens = self.tokens_tensor(rows)?;
        self.forward(&tokens, &mut Hooks::patching(patches), readout)
    }
}

/// A Hugging Face checkpoint: `config.json` decides the architecture.
fn load_hf(files: &ModelFiles, device: &Device) -> Result<(Box<dyn ArchModel>, Tokenizer)> {
    let text = std::fs::read_to_string(&files.config).map_err(|source| ModelError::Io {
        path: files.config.clone(),
        source,
    })?;
    let (arch, bos_id) = match detect_architecture(&text, &files.config)? {
        Architecture::Gpt2 => {
            let cfg = gpt2::Gpt2::parse_config(&text, &files.config)?;
            let model = gpt2::Gpt2::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::Llama => {
            let cfg = llama::Llama::parse_config(&text, &files.config)?;
            let model = llama::Llama::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::Gemma2 => {
            let cfg = gemma2::Gemma2::parse_config(&text, &files.config)?;
            let model = gemma2::Gemma2::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::GptNeox => {
            let cfg = neox::Neox::parse_config(&text, &files.config)?;
            let model = neox::Neox::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
    };
    let mut tokenizer = Tokenizer::load(&files.tokenizer, bos_id)?;
    if tokenizer.bos_id().is_none() {
        let bos = tokenizer.token_to_id("<|endoftext|>");
        tokenizer = Tokenizer::load(&files.tokenizer, bos)?;
    }
    Ok((arch, tokenizer))
}

/// A GGUF file: its metadata decides the architecture (the Llama family).
fn load_gguf(path: &Path, device: &Device) -> Result<(Box<dyn ArchModel>, Tokenizer)> {
    let file = gguf::GgufFile::open(path)?;
    let cfg = file.llama_config()?;
    let model = llama::Llama::from_store(&cfg, &file.llama_weights(&cfg, device)?)?;
    Ok((Box::new(model), file.tokenizer()?))
}

fn detect_architecture(config_text: &str, path: &Path) -> Result<Architecture> {
    let value: serde_json::Value =
        serde_json::from_str(config_text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    let class = value
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|v| v.as_str());
    match (model_type, class) {
        (Some("gpt2"), _) | (None, Some("GPT2LMHeadModel")) => Ok(Architecture::Gpt2),
        (Some("llama" | "mistral" | "qwen2" | "qwen3"), _)
        | (
            None,
            Some(
                "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM",
            ),
        ) => Ok(Architecture::Llama),
        (Some("gemma2"), _) | (None, Some("Gemma2ForCausalLM")) => Ok(Architecture::Gemma2),
        (Some("gpt_neox"), _) | (None, Some("GPTNeoXForCausalLM")) => Ok(Architecture::GptNeox),
        (found, class) => Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: found
                .or(class)
                .unwrap_or("(no model_type in config)")
                .to_string(),
            supported: Architecture::SUPPORTED.to_string(),
        }),
    }
}
