//! Llama (Touvron et al. 2023) as a hooked transformer, read from Hugging Face
//! `LlamaForCausalLM` checkpoints or from llama.cpp GGUF files (see [`crate::gguf`]).
//!
//! The same forward pass serves Llama's close relatives, told apart by `model_type`:
//! `llama` (Llama 1–3.x, biases where `attention_bias` / `mlp_bias` say, rotary scaling
//! of type `llama3`), `mistral` (no biases; the context is capped at `sliding_window`,
//! within which the window changes nothing), `qwen2` (Qwen2, Qwen2.5: biases on q, k
//! and v only) and `qwen3` (an RMSNorm over each head's queries and keys before rotary,
//! `q_norm` / `k_norm`, with their hook points `attn.q_norm.*` / `attn.k_norm.*`; biases
//! where `attention_bias` says). Hook points and their values match TransformerLens's
//! `HookedTransformer` loaded with no weight processing: RMSNorm, rotary embeddings in
//! the Hugging Face "halves" layout, grouped-query attention and a SiLU-gated MLP.

use std::path::Path;

use actpatch_hooks::{BlockSite, HookPoint, HookSpace, Hooks};
use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::arch::{default_feeds_keys_values, ArchModel};
use crate::attention::{attention_output, AttentionSpec, Frame, KvPrefix};
use crate::edges::{
    head_results, masked_head_outputs, mlp_input, split_qkv, EdgeBlock, HeadColumns, ReceiverInputs,
};
use crate::layers::{add, embed_rows, gated, Gate, Linear, NormSite, RmsNorm};
use crate::rope::RopeConfig;
use crate::rotary::Rotary;
use crate::weights::WeightStore;
use crate::{Architecture, ModelDims, ModelError, Readout, Result};

/// The `model_type`s this file runs.
pub const MODEL_TYPES: &str = "llama, mistral, qwen2, qwen3";

/// The fields of a Hugging Face Llama-family `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    /// aka d_model
    pub hidden_size: usize,
    /// aka d_mlp
    pub intermediate_size: usize,
    /// aka n_layers
    pub num_hidden_layers: usize,
    /// aka n_heads
    pub num_attention_heads: usize,
    /// aka n_key_value_heads; `None` means one per query head.
    pub num_key_value_heads: Option<usize>,
    /// aka d_head; `None` means hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    /// aka n_ctx
    pub max_position_embeddings: usize,
    /// `rope_theta` with `rope_scaling`, or `rope_parameters`: read from the raw config
    /// by [`Llama::parse_config`].
    #[serde(skip, default = "default_rope")]
    pub rope: RopeConfig,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Biases on q, k, v and o (llama).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the gate, up and down projections (llama).
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Unembedding = embedding; otherwise `lm_head.weight`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// mistral; qwen2 when `use_sliding_window`.
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: bool,
}

fn default_model_type() -> String {
    "llama".into()
}

fn default_rope() -> RopeConfig {
    RopeConfig::plain(10_000.0)
}

fn default_eps() -> f64 {
    1e-6
}

fn default_act() -> String {
    "silu".into()
}

/// Which projections carry biases.
#[derive(Debug, Clone, Copy)]
struct Biases {
    qkv: bool,
    o: bool,
    mlp: bool,
}

impl LlamaConfig {
    pub fn d_head(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The longest context the forward pass computes exactly.
    fn n_ctx(&self) -> usize {
        let window = match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" | "qwen3" if self.use_sliding_window => self.sliding_window,
            _ => None,
        };
        window.map_or(self.max_position_embeddings, |w| {
            w.min(self.max_position_embeddings)
        })
    }

    fn biases(&self) -> Biases {
        match self.model_type.as_str() {
            "qwen2" => Biases {
                qkv: true,
                o: false,
                mlp: false,
            },
            "mistral" => Biases {
                qkv: false,
                o: false,
                mlp: false,
            },
            "qwen3" => Biases {
                qkv: self.attention_bias,
                o: self.attention_bias,
                mlp: false,
            },
            _ => Biases {
                qkv: self.attention_bias,
                o: self.attention_bias,
                mlp: self.mlp_bias,
            },
        }
    }

    pub fn dims(&self) -> ModelDims {
        ModelDims {
            arch: Architecture::Llama,
            n_layers: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.n_kv_heads(),
            d_head: self.d_head(),
            d_mlp: self.intermediate_size,
            n_ctx: self.n_ctx(),
            d_vocab: self.vocab_size,
        }
    }

    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        if !matches!(
            self.model_type.as_str(),
            "llama" | "mistral" | "qwen2" | "qwen3"
        ) {
            return Err(bad(format!(
                "model_type `{}` is not a Llama-family model actpatch runs (supported: {MODEL_TYPES})",
                self.model_type
            )));
        }
        let (heads, kv_heads) = (self.num_attention_heads, self.n_kv_heads());
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(heads) {
            return Err(bad(format!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({heads}), or give head_dim",
                self.hidden_size
            )));
        }
        if !self.d_head().is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.d_head()
            )));
        }
        if self.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act `{}` is not supported for Llama (supported: silu)",
                self.hidden_act
            )));
        }
        if self.rope.partial_rotary_factor != 1.0 {
            return Err(ModelError::UnsupportedOption {
                path: path.to_path_buf(),
                key: "partial_rotary_factor".into(),
                value: self.rope.partial_rotary_factor.to_string(),
                supported: "1.0 for Llama-family models (every head dimension rotates)".into(),
            });
        }
        Ok(())
    }

    /// Qwen3's per-head RMSNorm on queries and keys.
    fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }
}

struct Attention {
    q_proj: Linear, // [d_model, head * d_head]
    k_proj: Linear, // [d_model, kv_head * d_head]
    v_proj: Linear, // [d_model, kv_head * d_head]
    o_proj: Linear, // [head * d_head, d_model]
}

struct Mlp {
    gate_proj: Linear, // [d_model, d_mlp]
    up_proj: Linear,   // [d_model, d_mlp]
    down_proj: Linear, // [d_mlp, d_model]
}

struct Block {
    layer: usize,
    ln1: RmsNorm, // input_layernorm
    attn: Attention,
    /// Qwen3's per-head norms `[d_head]` on queries and keys, before rotary.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    spec: AttentionSpec,
    ln2: RmsNorm, // post_attention_layernorm
    mlp: Mlp,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
}

impl Block {
    fn load(store: &WeightStore, cfg: &LlamaConfig, layer: usize) -> Result<Self> {
        let dims = cfg.dims();
        let (d, d_mlp, eps) = (dims.d_model, dims.d_mlp, cfg.rms_norm_eps);
        let (d_q, d_kv) = (dims.n_heads * dims.d_head, dims.n_kv_heads * dims.d_head);
        let biases = cfg.biases();
        let name = |suffix: &str| format!("model.layers.{layer}.{suffix}");
        let linear = |suffix: &str, d_in, d_out, bias| {
            Linear::torch(store, &name(suffix), d_in, d_out, bias)
        };
        Ok(Block {
            layer,
            ln1: RmsNorm::load(store, &name("input_layernorm"), d, eps)?,
            attn: Attention {
                q_proj: linear("self_attn.q_proj", d, d_q, biases.qkv)?,
                k_proj: linear("self_attn.k_proj", d, d_kv, biases.qkv)?,
                v_proj: linear("self_attn.v_proj", d, d_kv, biases.qkv)?,
                o_proj: linear("self_attn.o_proj", d_q, d, biases.o)?,
            },
            qk_norm: match cfg.qk_norm() {
                true => Some((
                    RmsNorm::load(store, &name("self_attn.q_norm"), dims.d_head, eps)?,
                    RmsNorm::load(store, &name("self_attn.k_norm"), dims.d_head, eps)?,
                )),
                false => None,
            },
            spec: AttentionSpec::standard(layer, dims.d_head),
            ln2: RmsNorm::load(store, &name("post_attention_layernorm"), d, eps)?,
            mlp: Mlp {
                gate_proj: linear("mlp.gate_proj", d, d_mlp, biases.mlp)?,
                up_proj: linear("mlp.up_proj", d, d_mlp, biases.mlp)?,
                down_proj: linear("mlp.down_proj", d_mlp, d, biases.mlp)?,
            },
            n_heads: dims.n_heads,
            n_kv_heads: dims.n_kv_heads,
            d_head: dims.d_head,
        })
    }

    /// The keys (after rotary embedding) and values this block's attention reads at
    /// the positions of `frame`: `[batch, pos, d_model]` → (`[batch, pos, kv_head,
    /// d_head]`, the same). No hooks.
    fn keys_values(&self, resid_pre: &Tensor, frame: &Frame) -> Result<(Tensor, Tensor)> {
        let (batch, pos, _) = resid_pre.dims3()?;
        let kv_shape = (batch, pos, self.n_kv_heads, self.d_head);
        let hooks = &mut Hooks::none();
        let normalized = self
            .ln1
            .forward(resid_pre, hooks, NormSite::Ln1(self.layer))?;
        let k = self.attn.k_proj.forward(&normalized)?.reshape(kv_shape)?;
        let v = self.attn.v_proj.forward(&normalized)?.reshape(kv_shape)?;
        let k = match &self.qk_norm {
            Some((_, k_norm)) => k_norm.forward(&k, hooks, NormSite::KNorm(self.layer))?,
            None => k,
        };
        Ok((frame.rotary()?.apply(&k)?, v))
    }

    /// `[batch, pos, d_model]` → `[batch, pos, d_model]`, the rows holding the
    /// positions of `frame`, after `prefix`'s keys (rotated) and values; with
    /// `inputs`, each receiver reads its own input ([`crate::edges`]).
    fn forward(
        &self,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<&KvPrefix>,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let rotary = frame.rotary()?;
        let at = |site| HookPoint::block(self.layer, site);
        let mlp = &self.mlp;

        let resid_pre = hooks.at(at(BlockSite::ResidPre), resid_pre)?;
        let (q, k, v) = match inputs.filter(|i| i.splits_attention()) {
            Some(inputs) => self.split_qkv(&resid_pre, inputs, hooks)?,
            None => self.qkv(&resid_pre, hooks)?,
        };
        let (q, k, v) = match inputs {
            Some(inputs) => inputs.add_projected((q, k, v))?,
            None => (q, k, v),
        };
        let q = hooks.at(at(BlockSite::Q), q)?; // [batch, pos, head, d_head]
        let k = hooks.at(at(BlockSite::K), k)?; // [batch, pos, kv_head, d_head] (head when split)
        let v = hooks.at(at(BlockSite::V), v)?; // [batch, pos, kv_head, d_head] (head when split)
        let (q, k) = match &self.qk_norm {
            Some((q_norm, k_norm)) => (
                q_norm.forward(&q, hooks, NormSite::QNorm(self.layer))?,
                k_norm.forward(&k, hooks, NormSite::KNorm(self.layer))?,
            ),
            None => (q, k),
        };
        let rot_q = hooks.at(at(BlockSite::RotQ), rotary.apply(&q)?)?;
        let rot_k = hooks.at(at(BlockSite::RotK), rotary.apply(&k)?)?;
        let z = self.spec.attend(&rot_q, &rot_k, &v, frame, prefix, hooks)?; // [batch, pos, head, d_head]
        let attn_out = attention_output(&z, &self.attn.o_proj)?;
        let attn_out = hooks.at(at(BlockSite::AttnOut), attn_out)?;
        let resid_mid = hooks.at(at(BlockSite::ResidMid), add(&resid_pre, &attn_out)?)?;

        let mlp_in = mlp_input(&resid_mid, inputs, |mask| {
            masked_head_outputs(&z, mask, &self.attn.o_proj)
        })?; // hook_mlp_in
        let normalized = self
            .ln2
            .forward(&mlp_in, hooks, NormSite::Ln2(self.layer))?;
        let gate = hooks.at(at(BlockSite::MlpPre), mlp.gate_proj.forward(&normalized)?)?;
        let up = mlp.up_proj.forward(&normalized)?;
        let up = hooks.at(at(BlockSite::MlpPreLinear), up)?;
        let mlp_post = hooks.at(at(BlockSite::MlpPost), gated(&gate, &up, Gate::Silu)?)?; // [batch, pos, d_mlp]
        let mlp_out = hooks.at(at(BlockSite::MlpOut), mlp.down_proj.forward(&mlp_post)?)?;
        Ok(hooks.at(at(BlockSite::ResidPost), add(&resid_mid, &mlp_out)?)?)
    }

    /// Queries `[batch, pos, head, d_head]`, keys and values `[batch, pos, kv_head,
    /// d_head]` of the residual stream (before their hooks, norms and rotary).
    fn qkv(&self, resid_pre: &Tensor, hooks: &mut Hooks) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, pos, _) = resid_pre.dims3()?;
        let q_shape = (batch, pos, self.n_heads, self.d_head);
        let kv_shape = (batch, pos, self.n_kv_heads, self.d_head);
        let attn = &self.attn;
        let normalized = self
            .ln1
            .forward(resid_pre, hooks, NormSite::Ln1(self.layer))?;
        let q = attn.q_proj.forward(&normalized)?.reshape(q_shape)?;
        let k = attn.k_proj.forward(&normalized)?.reshape(kv_shape)?;
        let v = attn.v_proj.forward(&normalized)?.reshape(kv_shape)?;
        Ok((q, k, v))
    }

    /// [`Block::qkv`] with each query head's query, key and value reading its own input
    /// where `inputs` has one; keys and values then per query head (ungrouped), all
    /// `[batch, pos, head, d_head]`.
    fn split_qkv(
        &self,
        resid_pre: &Tensor,
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        split_qkv(
            resid_pre,
            inputs,
            || self.qkv(resid_pre, hooks),
            (
                |rows: &Tensor| {
                    self.ln1
                        .forward(rows, &mut Hooks::none(), NormSite::Ln1(self.layer))
                },
                self.ln1.row_norm(),
            ),
            |i| self.columns(i),
        )
    }
}

impl EdgeBlock for Block {
    fn forward_edges(
        &self,
        resid_pre: Tensor,
        (frame, prefix): (&Frame, Option<&KvPrefix>),
        inputs: &ReceiverInputs,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.forward(resid_pre, frame, prefix, Some(inputs), hooks)
    }

    fn columns(&self, i: usize) -> HeadColumns<'_> {
        let projections = [&self.attn.q_proj, &self.attn.k_proj, &self.attn.v_proj];
        let heads = (self.n_heads, self.n_kv_heads, self.d_head);
        HeadColumns::separate(projections, i, heads)
    }

    fn norm1(&self, x: &Tensor) -> Result<Tensor> {
        self.ln1
            .forward(x, &mut Hooks::none(), NormSite::Ln1(self.layer))
    }

    fn ln1_input_gradients(&self, x: &Tensor, grads: &Tensor, batch: usize) -> Result<Tensor> {
        self.ln1.input_gradients(x, grads, batch)
    }

    fn head_outputs(&self, z: &Tensor) -> Result<Tensor> {
        head_results(z, &self.attn.o_proj)
    }
}

/// A Llama-family language model with hook points.
pub struct Llama {
    embed_tokens: Tensor, // [d_vocab, d_model]
    blocks: Vec<Block>,
    norm: RmsNorm,
    w_u: Tensor, // [d_model, d_vocab]: lm_head (the embedding when tied), a transposed view
    rotary: Rotary,
    qk_norm: bool,
    dims: ModelDims,
}

impl Llama {
    pub fn parse_config(text: &str, path: &Path) -> Result<LlamaConfig> {
        let bad = |e: serde_json::Error| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        let mut cfg: LlamaConfig = serde_json::from_value(value.clone()).map_err(bad)?;
        cfg.rope = RopeConfig::from_config(&value, 10_000.0, path)?;
        cfg.check(path)?;
        Ok(cfg)
    }

    /// Loads the model from safetensors files in Hugging Face layout.
    pub fn load(
        cfg: &LlamaConfig,
        weights: &[std::path::PathBuf],
        device: &Device,
    ) -> Result<Self> {
        let store = WeightStore::open(weights, device, "Llama")?;
        Self::from_store(cfg, &store)
    }

    /// Loads the model from tensors named as in a Hugging Face `LlamaForCausalLM`.
    pub fn from_store(cfg: &LlamaConfig, store: &WeightStore) -> Result<Self> {
        let dims = cfg.dims();
        let (vocab, d) = (dims.d_vocab, dims.d_model);
        let blocks = (0..dims.n_layers)
            .map(|layer| Block::load(store, cfg, layer))
            .collect::<Result<Vec<_>>>()?;
        let embed_tokens = store.get("model.embed_tokens.weight", &[vocab, d])?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            store.get("lm_head.weight", &[vocab, d])?
        };
        Ok(Llama {
            embed_tokens,
            blocks,
            norm: RmsNorm::load(store, "model.norm", d, cfg.rms_norm_eps)?,
            w_u: lm_head.t()?,
            rotary: Rotary::from_inv_freq(cfg.rope.inv_freq(dims.d_head)),
            qk_norm: cfg.qk_norm(),
            dims,
        })
    }
}

impl ArchModel for Llama {
    fn edge_block(&self, layer: usize) -> Option<&dyn EdgeBlock> {
        Some(&self.blocks[layer])
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn hook_space(&self) -> HookSpace {
        match self.qk_norm {
            true => HookSpace::qwen3(self.dims.n_layers),
            false => HookSpace::llama(self.dims.n_layers),
        }
    }

    fn key_site(&self) -> BlockSite {
        BlockSite::RotK
    }

    fn attention_spec(&self, layer: usize) -> AttentionSpec {
        self.blocks[layer].spec
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The default sites, and Qwen3's key norm: it is computed before the keys.
    fn site_feeds_keys_values(&self, site: BlockSite) -> bool {
        let key_norm = matches!(site, BlockSite::KNormScale | BlockSite::KNormNormalized);
        (self.qk_norm && key_norm) || default_feeds_keys_values(site)
    }

    /// `hook_embed` (positions enter through rotary embeddings in each block).
    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let embed = embed_rows(&self.embed_tokens, tokens)?; // [batch, pos, d_model]
        Ok(hooks.at(HookPoint::Embed, embed)?) // [batch, pos, d_model]
    }

    /// The frame of positions `start..start + len`, with their rotary tables.
    fn frame(&self, start: usize, len: usize, device: &Device) -> Result<Frame> {
        Frame::causal(start, len, Some(&self.rotary), device)
    }

    /// Block `layer` alone: `[batch, len, d_model]` → `[batch, len, d_model]`.
    fn block_forward(
        &self,
        layer: usize,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<&KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.blocks[layer].forward(resid_pre, frame, prefix, None, hooks)
    }

    /// Block `layer`'s keys (rotated) and values at the positions of `frame`.
    fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        frame: &Frame,
    ) -> Result<(Tensor, Tensor)> {
        self.blocks[layer].keys_values(resid_pre, frame)
    }

    /// Final RMSNorm and unembedding of the residual stream `[batch, len, d_model]`.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        let normalized = self.norm.forward(resid, hooks, NormSite::Final)?;
        readout.unembed(&normalized, &self.w_u, None)
    }
}
