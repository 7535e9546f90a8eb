//! Hooked transformers on candle, with TransformerLens's hook points.
//!
//! [`HookedTransformer::load`] reads a Hugging Face checkpoint (GPT-2, the Llama family
//! with Qwen2/2.5/3 and Mistral, Gemma 2, GPT-NeoX/Pythia) from the hub or a local
//! folder, or a llama.cpp `.gguf` file (Llama, Qwen2, Qwen3);
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

mod allocator;
mod arch;
mod attention;
mod device;
mod edge_passes;
pub mod edges;
mod error;
mod fused;
mod gemma2;
mod gguf;
mod gpt2;
mod grad;
mod kernels;
mod layers;
mod llama;
mod load;
mod neox;
pub mod partial;
mod readout;
pub mod rope;
mod rotary;
mod source;
mod spans;
#[cfg(test)]
mod test_tensors;
mod tokenizer;
mod truncated;
mod weights;

use std::path::Path;

use actpatch_hooks::{ActivationCache, CacheFilter, HookSpace, Hooks, Patch};
use candle_core::{Device, Tensor};

pub use actpatch_hooks::HookPoint;
pub use allocator::keep_large_buffers_in_heap;
use arch::ArchModel;
pub use attention::AttentionSpec;
pub use device::DeviceSpec;
pub use edges::{EdgeInputs, FromPosition, ReceiverInputs};
pub use error::{ModelError, Result};
use kernels::Kernels;
pub use partial::{BaseRun, Span};
pub use readout::Readout;
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
            Some(path) => load::load_gguf(path, &device)?,
            None => load::load_hf(&files, &device)?,
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

    /// The token embedding matrix `W_E`, `[d_vocab, d_model]` (e.g. for the scale of
    /// Gaussian-noise corruption).
    pub fn token_embeddings(&self) -> &Tensor {
        self.arch.token_embeddings()
    }

    /// The factor a row of [`Self::token_embeddings`] is multiplied by as it enters
    /// the residual stream (`hook_embed`): Gemma's √d_model, 1 for the others.
    pub fn embedding_scale(&self) -> f64 {
        self.arch.embedding_scale()
    }

    /// Layer `layer`'s attention: how scores are scaled, soft-capped (Gemma 2) and
    /// windowed, as its forward pass computes `hook_attn_scores` from `q` and `k`.
    pub fn attention_spec(&self, layer: usize) -> Result<AttentionSpec> {
        self.check_layer(layer)?;
        Ok(self.arch.attention_spec(layer))
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

    /// The byte range of `prompt` each token of [`HookedTransformer::to_tokens`]
    /// covers (BOS covers `0..0`): where template slots and subjects sit.
    pub fn token_byte_spans(&self, prompt: &str, prepend_bos: bool) -> Result<Vec<(usize, usize)>> {
        self.tokenizer.byte_spans(prompt, prepend_bos)
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
        self.forward_with(tokens, hooks, readout, Kernels::Fused)
    }

    /// [`HookedTransformer::forward`] through plain tensor ops only, so that gradients
    /// can be taken through it (`Tensor::backward`): candle-nn's fused softmax and
    /// rotary kernels have no backward pass. Slower; the same numbers within float
    /// rounding.
    pub fn forward_differentiable(
        &self,
        tokens: &Tensor,
        hooks: &mut Hooks,
        readout: Readout,
    ) -> Result<Tensor> {
        self.forward_with(tokens, hooks, readout, Kernels::Differentiable)
    }

    fn forward_with(
        &self,
        tokens: &Tensor,
        hooks: &mut Hooks,
        readout: Readout,
        kernels: Kernels,
    ) -> Result<Tensor> {
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
        let frame = self
            .arch
            .frame(0, pos, tokens.device())?
            .with_kernels(kernels);
        for layer in 0..self.dims().n_layers {
            resid = self.arch.block_forward(layer, resid, &frame, None, hooks)?;
        }
        self.arch.readout(&resid, hooks, readout)
    }

    pub(crate) fn check_layer(&self, layer: usize) -> Result<()> {
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

    /// Final norm and unembedding of a residual stream `[batch, len, d_model]`.
    pub fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        self.arch.readout(resid, hooks, readout)
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

    /// `hook_embed` of `rows` `[batch, pos, d_model]` (the token embeddings, scaled
    /// where the model scales them), without running the blocks.
    pub fn embeddings(&self, rows: &[Vec<u32>]) -> Result<Tensor> {
        let tokens = self.tokens_tensor(rows)?;
        let mut hooks = Hooks::caching(CacheFilter::only([HookPoint::Embed]));
        self.arch.embed(&tokens, &mut hooks)?;
        Ok(hooks.cache().get(HookPoint::Embed)?.clone())
    }

    /// The activations `filter` selects, from a forward pass that computes only the
    /// final position's logits (no full-vocabulary unembedding of every position).
    pub fn cache_activations(
        &self,
        rows: &[Vec<u32>],
        filter: CacheFilter,
    ) -> Result<ActivationCache> {
        let tokens = self.tokens_tensor(rows)?;
        let mut hooks = Hooks::caching(filter);
        self.forward(&tokens, &mut hooks, Readout::LastPosition)?;
        Ok(hooks.into_cache())
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
