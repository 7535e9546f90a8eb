//! Gemma 2 (Gemma Team 2024) as a hooked transformer, read from Hugging Face
//! `Gemma2ForCausalLM` checkpoints.
//!
//! Differences from Llama, each as transformers computes it: the embedding is scaled by
//! √d_model (`hook_embed` is the scaled one, as TransformerLens); every RMSNorm
//! multiplies by (1 + weight); attention and MLP each have a norm before and after
//! (`ln1`, `ln1_post`, `ln2`, `ln2_post`: `hook_attn_out` / `hook_mlp_out` are the
//! post-norms' outputs, what is added to the residual stream); queries are scaled by
//! `query_pre_attn_scalar`^-½ instead of d_head^-½; attention scores are soft-capped,
//! `cap · tanh(scores / cap)`, before the causal mask (`hook_attn_scores` is after
//! both); layers of type `sliding_attention` (even layers unless `layer_types` says
//! otherwise) see only the last `sliding_window` positions; the MLP is GeGLU with the
//! tanh GELU; the logits are soft-capped by `final_logit_softcapping`.

use std::path::Path;

use actpatch_hooks::{BlockSite, HookPoint, HookSpace, Hooks};
use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::arch::ArchModel;
use crate::attention::{attention_output, soft_cap, AttentionSpec, Frame, KvPrefix};
use crate::edges::{
    head_results, masked_head_outputs, mlp_input, split_qkv, EdgeBlock, HeadColumns, ReceiverInputs,
};
use crate::layers::{add, embed_rows, gated, Gate, Linear, NormSite, RmsNorm};
use crate::rope::{RopeConfig, RopeScaling};
use crate::rotary::Rotary;
use crate::weights::WeightStore;
use crate::{Architecture, ModelDims, ModelError, Readout, Result};

/// The fields of a Hugging Face Gemma 2 `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    /// Gemma 2 sets it (256 for 2b/9b, 128 for 27b).
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Queries are scaled by its inverse square root.
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub sliding_window: Option<usize>,
    /// `sliding_attention` / `full_attention` per layer; `None`: even layers slide.
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_act", alias = "hidden_act")]
    pub hidden_activation: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_tie")]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Read from the raw config by [`Gemma2::parse_config`].
    #[serde(skip, default = "default_rope")]
    pub rope: RopeConfig,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}

fn default_tie() -> bool {
    true
}

fn default_rope() -> RopeConfig {
    RopeConfig::plain(10_000.0)
}

impl Gemma2Config {
    pub fn d_head(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn dims(&self) -> ModelDims {
        ModelDims {
            arch: Architecture::Gemma2,
            n_layers: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            d_head: self.d_head(),
            d_mlp: self.intermediate_size,
            n_ctx: self.max_position_embeddings,
            d_vocab: self.vocab_size,
        }
    }

    /// Layer `layer`'s sliding window, `None` for full attention.
    fn window(&self, layer: usize) -> Option<usize> {
        let sliding = match &self.layer_types {
            Some(types) => types.get(layer).is_some_and(|t| t == "sliding_attention"),
            None => layer.is_multiple_of(2),
        };
        self.sliding_window.filter(|_| sliding)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let unsupported = |key: &str, value: String, supported: &str| {
            Err(ModelError::UnsupportedOption {
                path: path.to_path_buf(),
                key: key.into(),
                value,
                supported: supported.into(),
            })
        };
        let dims = self.dims();
        if dims.n_heads == 0
            || dims.n_kv_heads == 0
            || !dims.n_heads.is_multiple_of(dims.n_kv_heads)
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
                    dims.n_heads, dims.n_kv_heads
                ),
            });
        }
        if !matches!(
            self.hidden_activation.as_str(),
            "gelu_pytorch_tanh" | "gelu_new"
        ) {
            return unsupported(
                "hidden_activation",
                format!("{:?}", self.hidden_activation),
                "\"gelu_pytorch_tanh\"",
            );
        }
        if self.rope.scaling != RopeScaling::None || self.rope.partial_rotary_factor != 1.0 {
            return unsupported(
                "rope_scaling",
                format!("{:?}", self.rope.scaling),
                "none, full rotary (Gemma 2 uses plain rotary embeddings)",
            );
        }
        if let Some(types) = &self.layer_types {
            if let Some(t) = types
                .iter()
                .find(|t| !matches!(t.as_str(), "sliding_attention" | "full_attention"))
            {
                return unsupported(
                    "layer_types",
                    format!("{t:?}"),
                    "\"sliding_attention\", \"full_attention\"",
                );
            }
        }
        Ok(())
    }
}

struct Block {
    layer: usize,
    ln1: RmsNorm,      // input_layernorm
    q_proj: Linear,    // [d_model, head * d_head]
    k_proj: Linear,    // [d_model, kv_head * d_head]
    v_proj: Linear,    // [d_model, kv_head * d_head]
    o_proj: Linear,    // [head * d_head, d_model]
    ln1_post: RmsNorm, // post_attention_layernorm
    ln2: RmsNorm,      // pre_feedforward_layernorm
    gate_proj: Linear, // [d_model, d_mlp]
    up_proj: Linear,   // [d_model, d_mlp]
    down_proj: Linear, // [d_mlp, d_model]
    ln2_post: RmsNorm, // post_feedforward_layernorm
    spec: AttentionSpec,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
}

/// A Gemma RMSNorm: the stored weight is an offset from 1.
fn gemma_norm(store: &WeightStore, name: &str, d: usize, eps: f64) -> Result<RmsNorm> {
    let weight = store.get(&format!("{name}.weight"), &[d])?;
    Ok(RmsNorm::from_tensor((weight + 1.0)?, eps))
}

impl Block {
    fn load(store: &WeightStore, cfg: &Gemma2Config, layer: usize) -> Result<Self> {
        let dims = cfg.dims();
        let (d, eps) = (dims.d_model, cfg.rms_norm_eps);
        let (d_q, d_kv) = (dims.n_heads * dims.d_head, dims.n_kv_heads * dims.d_head);
        let name = |suffix: &str| format!("model.layers.{layer}.{suffix}");
        let bias = cfg.attention_bias;
        let linear = |suffix: &str, d_in, d_out, bias| {
            Linear::torch(store, &name(suffix), d_in, d_out, bias)
        };
        Ok(Block {
            layer,
            ln1: gemma_norm(store, &name("input_layernorm"), d, eps)?,
            q_proj: linear("self_attn.q_proj", d, d_q, bias)?,
            k_proj: linear("self_attn.k_proj", d, d_kv, bias)?,
            v_proj: linear("self_attn.v_proj", d, d_kv, bias)?,
            o_proj: linear("self_attn.o_proj", d_q, d, bias)?,
            ln1_post: gemma_norm(store, &name("post_attention_layernorm"), d, eps)?,
            ln2: gemma_norm(store, &name("pre_feedforward_layernorm"), d, eps)?,
            gate_proj: linear("mlp.gate_proj", d, dims.d_mlp, false)?,
            up_proj: linear("mlp.up_proj", d, dims.d_mlp, false)?,
            down_proj: linear("mlp.down_proj", dims.d_mlp, d, false)?,
            ln2_post: gemma_norm(store, &name("post_feedforward_layernorm"), d, eps)?,
            spec: AttentionSpec {
                layer,
                scale: cfg.query_pre_attn_scalar.powf(-0.5),
                softcap: cfg.attn_logit_softcapping,
                window: cfg.window(layer),
            },
            n_heads: dims.n_heads,
            n_kv_heads: dims.n_kv_heads,
            d_head: dims.d_head,
        })
    }

    /// Keys (rotated) and values at the frame's positions, no hooks:
    /// `[batch, pos, d_model]` → (`[batch, pos, kv_head, d_head]`, the same).
    fn keys_values(&self, resid_pre: &Tensor, frame: &Frame) -> Result<(Tensor, Tensor)> {
        let (batch, pos, _) = resid_pre.dims3()?;
        let kv_shape = (batch, pos, self.n_kv_heads, self.d_head);
        let normalized =
            self.ln1
                .forward(resid_pre, &mut Hooks::none(), NormSite::Ln1(self.layer))?;
        let k = self.k_proj.forward(&normalized)?.reshape(kv_shape)?;
        let v = self.v_proj.forward(&normalized)?.reshape(kv_shape)?;
        Ok((frame.rotary()?.apply(&k)?, v))
    }

    /// Queries `[batch, pos, head, d_head]`, keys and values `[batch, pos, kv_head,
    /// d_head]` (per query head when an input is split), before their hooks.
    fn attention_inputs(
        &self,
        resid_pre: &Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, pos, _) = resid_pre.dims3()?;
        let q_shape = (batch, pos, self.n_heads, self.d_head);
        let kv_shape = (batch, pos, self.n_kv_heads, self.d_head);
        let plain = |hooks: &mut Hooks| -> Result<(Tensor, Tensor, Tensor)> {
            let normalized = self
                .ln1
                .forward(resid_pre, hooks, NormSite::Ln1(self.layer))?;
            Ok((
                self.q_proj.forward(&normalized)?.reshape(q_shape)?,
                self.k_proj.forward(&normalized)?.reshape(kv_shape)?,
                self.v_proj.forward(&normalized)?.reshape(kv_shape)?,
            ))
        };
        let Some(inputs) = inputs else {
            return plain(hooks);
        };
        let qkv = match inputs.splits_attention() {
            true => split_qkv(
                resid_pre,
                inputs,
                || plain(hooks),
                (
                    |rows: &Tensor| {
                        self.ln1
                            .forward(rows, &mut Hooks::none(), NormSite::Ln1(self.layer))
                    },
                    self.ln1.row_norm(),
                ),
                |i| self.columns(i),
            )?,
            false => plain(hooks)?,
        };
        inputs.add_projected(qkv)
    }

    /// Each head's share of the attention output after the post-attention norm, at the
    /// norm's scale of this run: `r_h ⊙ w / rms(Σ_h r_h + b_O)` for head result `r_h`
    /// (so the shares and the bias's share add up to `hook_attn_out`):
    /// `z` `[batch, pos, head, d_head]` → `[batch, pos, head, d_model]`.
    fn head_shares(&self, z: &Tensor) -> Result<Tensor> {
        let results = head_results(z, &self.o_proj)?; // [batch, pos, head, d_model]
        let scale = self.ln1_post.scale(&attention_output(z, &self.o_proj)?)?; // [batch, pos, 1]
        Ok(results
            .broadcast_div(&scale.unsqueeze(2)?)?
            .broadcast_mul(self.ln1_post.weight())?)
    }

    /// `Σ_head mask · share` of [`Block::head_shares`] (`mask` `[batch, head]`): the
    /// masked heads' results at this run's norm scale. `[batch, pos, d_model]`
    fn masked_head_shares(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let results = masked_head_outputs(z, mask, &self.o_proj)?; // [batch, pos, d_model]
        let scale = self.ln1_post.scale(&attention_output(z, &self.o_proj)?)?; // [batch, pos, 1]
        Ok(results
            .broadcast_div(&scale)?
            .broadcast_mul(self.ln1_post.weight())?)
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

        let resid_pre = hooks.at(at(BlockSite::ResidPre), resid_pre)?;
        let (q, k, v) = self.attention_inputs(&resid_pre, inputs, hooks)?;
        let q = hooks.at(at(BlockSite::Q), q)?; // [batch, pos, head, d_head]
        let k = hooks.at(at(BlockSite::K), k)?; // [batch, pos, kv_head, d_head] (head when split)
        let v = hooks.at(at(BlockSite::V), v)?;
        let rot_q = hooks.at(at(BlockSite::RotQ), rotary.apply(&q)?)?; // [batch, pos, head, d_head]
        let rot_k = hooks.at(at(BlockSite::RotK), rotary.apply(&k)?)?;
        let z = self.spec.attend(&rot_q, &rot_k, &v, frame, prefix, hooks)?; // [batch, pos, head, d_head]
        let attn_out = attention_output(&z, &self.o_proj)?; // [batch, pos, d_model]
        let attn_out = self
            .ln1_post
            .forward(&attn_out, hooks, NormSite::Ln1Post(self.layer))?;
        let attn_out = hooks.at(at(BlockSite::AttnOut), attn_out)?;
        let resid_mid = hooks.at(at(BlockSite::ResidMid), add(&resid_pre, &attn_out)?)?;

        let mlp_in = mlp_input(&resid_mid, inputs, |mask| self.masked_head_shares(&z, mask))?; // hook_mlp_in
        let normalized = self
            .ln2
            .forward(&mlp_in, hooks, NormSite::Ln2(self.layer))?;
        let gate = hooks.at(at(BlockSite::MlpPre), self.gate_proj.forward(&normalized)?)?;
        let up = hooks.at(
            at(BlockSite::MlpPreLinear),
            self.up_proj.forward(&normalized)?,
        )?;
        let mlp_post = hooks.at(at(BlockSite::MlpPost), gated(&gate, &up, Gate::GeluTanh)?)?; // [batch, pos, d_mlp], tanh GELU
        let mlp_out = self.down_proj.forward(&mlp_post)?;
        let mlp_out = self
            .ln2_post
            .forward(&mlp_out, hooks, NormSite::Ln2Post(self.layer))?;
        let mlp_out = hooks.at(at(BlockSite::MlpOut), mlp_out)?;
        Ok(hooks.at(at(BlockSite::ResidPost), add(&resid_mid, &mlp_out)?)?)
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
        let projections = [&self.q_proj, &self.k_proj, &self.v_proj];
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

    /// Each head's share of the normalized attention output (see `Block::head_shares`).
    fn head_outputs(&self, z: &Tensor) -> Result<Tensor> {
        self.head_shares(z)
    }
}

/// A Gemma 2 language model with hook points.
pub struct Gemma2 {
    embed_tokens: Tensor, // [d_vocab, d_model], unscaled
    embed_scale: f64,     // √d_model, rounded to f32 as transformers does
    blocks: Vec<Block>,
    norm: RmsNorm,
    w_u: Tensor, // [d_model, d_vocab]
    final_softcap: Option<f64>,
    rotary: Rotary,
    dims: ModelDims,
}

impl Gemma2 {
    pub fn parse_config(text: &str, path: &Path) -> Result<Gemma2Config> {
        let bad = |e: serde_json::Error| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        let mut cfg: Gemma2Config = serde_json::from_value(value.clone()).map_err(bad)?;
        cfg.rope = RopeConfig::from_config(&value, 10_000.0, path)?;
        cfg.check(path)?;
        Ok(cfg)
    }

    pub fn load(
        cfg: &Gemma2Config,
        weights: &[std::path::PathBuf],
        device: &Device,
    ) -> Result<Self> {
        let store = WeightStore::open(weights, device, "Gemma 2")?;
        let dims = cfg.dims();
        let (vocab, d) = (dims.d_vocab, dims.d_model);
        let blocks = (0..dims.n_layers)
            .map(|layer| Block::load(&store, cfg, layer))
            .collect::<Result<Vec<_>>>()?;
        let embed_tokens = store.get("model.embed_tokens.weight", &[vocab, d])?;
        let lm_head = match cfg.tie_word_embeddings {
            true => embed_tokens.clone(),
            false => store.get("lm_head.weight", &[vocab, d])?,
        };
        Ok(Gemma2 {
            embed_scale: (d as f64).sqrt() as f32 as f64,
            embed_tokens,
            blocks,
            norm: gemma_norm(&store, "model.norm", d, cfg.rms_norm_eps)?,
            w_u: lm_head.t()?, // a transposed view
            final_softcap: cfg.final_logit_softcapping,
            rotary: Rotary::from_inv_freq(cfg.rope.inv_freq(dims.d_head)),
            dims,
        })
    }
}

impl ArchModel for Gemma2 {
    fn edge_block(&self, layer: usize) -> Option<&dyn EdgeBlock> {
        Some(&self.blocks[layer])
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.embed_tokens
    }

    fn embedding_scale(&self) -> f64 {
        self.embed_scale
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn hook_space(&self) -> HookSpace {
        HookSpace::gemma2(self.dims.n_layers)
    }

    fn key_site(&self) -> BlockSite {
        BlockSite::RotK
    }

    fn attention_spec(&self, layer: usize) -> AttentionSpec {
        self.blocks[layer].spec
    }

    /// `hook_embed`: the embedding times √d_model.
    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let embed = embed_rows(&self.embed_tokens, tokens)?; // [batch, pos, d_model]
        Ok(hooks.at(HookPoint::Embed, (embed * self.embed_scale)?)?) // [batch, pos, d_model]
    }

    fn frame(&self, start: usize, len: usize, device: &Device) -> Result<Frame> {
        Frame::causal(start, len, Some(&self.rotary), device)
    }

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

    fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        frame: &Frame,
    ) -> Result<(Tensor, Tensor)> {
        self.blocks[layer].keys_values(resid_pre, frame)
    }

    /// Final RMSNorm, unembedding and final-logit soft-capping.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        let normalized = self.norm.forward(resid, hooks, NormSite::Final)?;
        let logits = readout.unembed(&normalized, &self.w_u, None)?;
        match self.final_softcap {
            Some(cap) => soft_cap(&logits, cap),
            None => Ok(logits),
        }
    }
}
