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
use attention::KvPrefix;
pub use device::DeviceSpec;
use edges::ungroup_heads;
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

    /// tokens `[batch, pos]` → logits with every receiver of the edge graph reading
    /// its own input where `inputs` says so ([`edges`]; with
    /// [`EdgeInputs::from_position`], the blocks run the positions from its start on,
    /// the embedding's hook points seeing them all); `differentiable` runs the
    /// kernels gradients can be taken through. Errors for families without an edge
    /// graph ([`ModelError::NoEdgeGraph`]).
    pub fn forward_edges(
        &self,
        tokens: &Tensor,
        hooks: &mut Hooks,
        readout: Readout,
        inputs: &EdgeInputs,
        differentiable: bool,
    ) -> Result<Tensor> {
        let mut resid = self.arch.embed(tokens, hooks)?; // [batch, pos, d_model]
        if let Some(from) = &inputs.from_position {
            let pos = resid.dim(1)?;
            if from.start >= pos {
                let reason = format!(
                    "a pass from position {} of a {pos}-token prompt",
                    from.start
                );
                return Err(candle_core::Error::Msg(reason).into());
            }
            resid = resid
                .narrow(1, from.start, pos - from.start)?
                .contiguous()?; // the positions from `start`
        }
        self.forward_edges_from(0, resid, hooks, readout, inputs, differentiable)
    }

    /// [`HookedTransformer::forward_edges`] from block `start` on, given the residual
    /// stream entering it `[batch, pos, d_model]` (positions from 0, or from
    /// [`EdgeInputs::from_position`]'s start): the blocks before
    /// are the caller's (e.g. a clean run's `resid_pre`, when nothing before `start`
    /// changes). `start = n_layers` runs the final norm and unembedding alone.
    pub fn forward_edges_from(
        &self,
        start: usize,
        resid_pre: Tensor,
        hooks: &mut Hooks,
        readout: Readout,
        inputs: &EdgeInputs,
        differentiable: bool,
    ) -> Result<Tensor> {
        let (_, pos, _) = resid_pre.dims3()?;
        let kernels = match differentiable {
            true => Kernels::Differentiable,
            false => Kernels::Fused,
        };
        let first_position = inputs.from_position.as_ref().map_or(0, |from| from.start);
        let frame = self
            .arch
            .frame(first_position, pos, resid_pre.device())?
            .with_kernels(kernels);
        let mut resid = resid_pre;
        for layer in start..self.dims().n_layers {
            let receivers = inputs.layer(layer);
            let prefix = self.edge_prefix(inputs, layer, receivers)?;
            resid = match receivers {
                Some(receivers) => (self.arch).block_forward_edges(
                    layer,
                    resid,
                    (&frame, prefix.as_ref()),
                    receivers,
                    hooks,
                )?,
                None => (self.arch).block_forward(layer, resid, &frame, prefix.as_ref(), hooks)?,
            };
        }
        if let Some(delta) = &inputs.logits {
            resid = layers::add(&resid, delta)?; // the logits' own input
        }
        self.arch.readout(&resid, hooks, readout)
    }

    /// Each query head's gradient at its q, k and v input, `[batch, head, pos, d_model]`
    /// each, from the gradients at its projections' outputs `[batch, pos, head, d_head]`
    /// (what [`ReceiverInputs::projected`] probes; keys and values per query head) and
    /// the residual stream entering block `layer` `[batch, pos, d_model]`: each
    /// projection's transpose, then the first norm's backward pass.
    pub fn attention_input_gradients(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        grads: [&Tensor; 3],
    ) -> Result<[Tensor; 3]> {
        self.check_layer(layer)?;
        self.arch.attention_input_gradients(layer, resid_pre, grads)
    }

    /// Block `layer`'s query (`input` 0), key (1) or value (2) projection of one query
    /// head per row: row `r` of `x` `[rows, pos, d_model]` (a residual stream entering
    /// the block) through the first norm and head `heads[r]`'s columns →
    /// `[rows, pos, d_head]`. What one receiver would read if only its own input were
    /// `x` (exact edge effects pass the difference as [`ReceiverInputs::projected`]).
    pub fn head_input_projections(
        &self,
        (layer, input): (usize, usize),
        heads: &[usize],
        x: &Tensor,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let n_heads = self.dims().n_heads;
        (self.arch).head_input_projections((layer, input, n_heads), heads, x)
    }

    /// tokens `[batch, pos]` → the residual stream entering block 0 `[batch, pos,
    /// d_model]`, through the embedding hook points.
    pub fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.arch.embed(tokens, hooks)
    }

    /// Block `layer` alone on the residual stream entering it `[batch, pos, d_model]`
    /// (positions from 0), its receivers reading their own inputs where `inputs` says so
    /// ([`edges`]): one step of a pass whose edge inputs depend on the pass itself
    /// (circuit evaluation). Fused kernels.
    pub fn block_edges(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.block_edges_with(layer, resid_pre, inputs, hooks, Kernels::Fused)
    }

    /// [`HookedTransformer::block_edges`] with the kernels gradients can be taken
    /// through: one block of a pass differentiated block by block (the gradient
    /// passes of `actpatch-circuits`, which keep one block's graph at a time).
    pub fn block_edges_differentiable(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.block_edges_with(layer, resid_pre, inputs, hooks, Kernels::Differentiable)
    }

    fn block_edges_with(
        &self,
        layer: usize,
        resid_pre: Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
        kernels: Kernels,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let (_, pos, _) = resid_pre.dims3()?;
        let frame = (self.arch.frame(0, pos, resid_pre.device())?).with_kernels(kernels);
        match inputs {
            Some(receivers) => {
                (self.arch).block_forward_edges(layer, resid_pre, (&frame, None), receivers, hooks)
            }
            None => self
                .arch
                .block_forward(layer, resid_pre, &frame, None, hooks),
        }
    }

    /// [`HookedTransformer::block_edges`] on the positions from `start` on, for rows
    /// whose earlier positions no receiver input changes: `resid_pre` `[rows, len,
    /// d_model]` holds positions `start..start + len`, and `prefix` the keys and values
    /// of positions `0..start` `[rows or 1, start, kv_head, d_head]` each, as
    /// [`BaseRun::keys_values`] gives them (keys after rotary where the family has it;
    /// repeated for every query head here where the block splits attention inputs, as
    /// the edge graph's keys and values are per query head).
    pub fn block_edges_from(
        &self,
        layer: usize,
        (resid_pre, start): (Tensor, usize),
        (keys, values): (&Tensor, &Tensor),
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.check_layer(layer)?;
        let (_, len, _) = resid_pre.dims3()?;
        let frame = self.arch.frame(start, len, resid_pre.device())?;
        let prefix = (start > 0)
            .then(|| edge_kv_prefix((keys, values), Some(inputs), self.dims().n_heads))
            .transpose()?;
        let prefix = prefix.as_ref();
        (self.arch).block_forward_edges(layer, resid_pre, (&frame, prefix), inputs, hooks)
    }

    /// Layer `layer`'s keys and values before [`EdgeInputs::from_position`], if any.
    fn edge_prefix(
        &self,
        inputs: &EdgeInputs,
        layer: usize,
        receivers: Option<&ReceiverInputs>,
    ) -> Result<Option<KvPrefix>> {
        let Some(FromPosition { start, layers }) = &inputs.from_position else {
            return Ok(None);
        };
        if *start == 0 {
            return Ok(None);
        }
        let Some(Some((keys, values))) = layers.get(layer) else {
            let reason =
                format!("a pass from position {start} has no keys and values of layer {layer}");
            return Err(candle_core::Error::Msg(reason).into());
        };
        Ok(Some(edge_kv_prefix(
            (keys, values),
            receivers,
            self.dims().n_heads,
        )?))
    }

    /// Whether this model's family has an edge graph ([`edges`]).
    pub fn has_edge_graph(&self) -> bool {
        matches!(
            self.dims().arch,
            Architecture::Gpt2 | Architecture::Llama | Architecture::GptNeox | Architecture::Gemma2
        )
    }

    /// Whether attention and MLP read the same residual stream in every block
    /// (GPT-NeoX's `use_parallel_residual`, every Pythia): the edge graph's
    /// `parallel_attn_mlp`.
    pub fn parallel_attn_mlp(&self) -> bool {
        self.arch.parallel_blocks()
    }

    /// Each head's output into the residual stream (TransformerLens's
    /// `attn.hook_result`, without the output bias) from layer `layer`'s `hook_z`:
    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_model]`.
    pub fn head_results(&self, layer: usize, z: &Tensor) -> Result<Tensor> {
        self.check_layer(layer)?;
        self.arch.head_results(layer, z)
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

/// Keys and values `[rows or 1, start, kv_head, d_head]` as a block's prefix: repeated
/// for every query head where `receivers` split the attention inputs (the edge graph's
/// keys and values are then per query head).
fn edge_kv_prefix(
    (keys, values): (&Tensor, &Tensor),
    receivers: Option<&ReceiverInputs>,
    n_heads: usize,
) -> Result<KvPrefix> {
    let per_query_head = receivers.is_some_and(|r| r.splits_attention() || r.projected.is_some());
    Ok(match per_query_head {
        true => KvPrefix::new(
            ungroup_heads(keys, n_heads)?,
            ungroup_heads(values, n_heads)?,
        ),
        false => KvPrefix::new(keys.clone(), values.clone()),
    })
}
