//! GPT-NeoX (Black et al. 2022) and Pythia (Biderman et al. 2023) as hooked
//! transformers, read from Hugging Face `GPTNeoXForCausalLM` checkpoints.
//!
//! LayerNorm before attention and MLP; attention and MLP in parallel on the same
//! residual stream (`use_parallel_residual`, as every Pythia: no `hook_resid_mid`, as
//! in TransformerLens) or one after the other; one fused `query_key_value` projection
//! whose output is laid out per head as `[q, k, v]` (NeoX's interleaved layout, not
//! three blocks); rotary embeddings on the first `rotary_pct` of each head's
//! dimensions (Hugging Face halves layout), the rest passed through; a GELU MLP
//! (`hidden_act`: exact `gelu`, or the tanh forms); an untied unembedding `embed_out`.

use std::path::Path;

use actpatch_hooks::{BlockSite, HookPoint, HookSpace, Hooks};
use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::arch::ArchModel;
use crate::attention::{attention_output, AttentionSpec, Frame, KvPrefix};
use crate::edges::{
    head_results, masked_head_outputs, mlp_input, project_own_inputs, EdgeBlock, HeadColumns,
    ReceiverInputs,
};
use crate::layers::{add, embed_rows, gelu_tanh, LayerNorm, Linear, NormSite};
use crate::rope::{RopeConfig, RopeScaling};
use crate::rotary::Rotary;
use crate::weights::WeightStore;
use crate::{Architecture, ModelDims, ModelError, Readout, Result};

/// The fields of a Hugging Face GPT-NeoX `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct NeoxConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_true")]
    pub use_parallel_residual: bool,
    /// Biases on `query_key_value` and `dense`.
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Read from the raw config by [`Neox::parse_config`] (`rotary_pct`, `rotary_emb_base`).
    #[serde(skip, default = "default_rope")]
    pub rope: RopeConfig,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu".into()
}

fn default_true() -> bool {
    true
}

fn default_rope() -> RopeConfig {
    RopeConfig::plain(10_000.0)
}

/// The MLP activations this file computes, by `hidden_act`.
const ACTIVATIONS: &str = "\"gelu\" (exact), \"gelu_new\", \"gelu_pytorch_tanh\", \"gelu_fast\"";

impl NeoxConfig {
    pub fn d_head(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    pub fn dims(&self) -> ModelDims {
        ModelDims {
            arch: Architecture::GptNeox,
            n_layers: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_attention_heads,
            d_head: self.d_head(),
            d_mlp: self.intermediate_size,
            n_ctx: self.max_position_embeddings,
            d_vocab: self.vocab_size,
        }
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
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "hidden_size ({}) must be a multiple of num_attention_heads ({})",
                    self.hidden_size, self.num_attention_heads
                ),
            });
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            return unsupported("hidden_act", format!("{:?}", self.hidden_act), ACTIVATIONS);
        }
        if self.rope.scaling != RopeScaling::None {
            return unsupported(
                "rope_scaling",
                format!("{:?}", self.rope.scaling),
                "none for GPT-NeoX",
            );
        }
        let rotary_dim = self.rope.rotary_dim(self.d_head());
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return unsupported(
                "rotary_pct",
                self.rope.partial_rotary_factor.to_string(),
                "a fraction of head_dim that rotates an even number (> 0) of dimensions",
            );
        }
        Ok(())
    }
}

struct Block {
    layer: usize,
    ln1: LayerNorm,      // input_layernorm
    qkv: Linear,         // [d_model, head * 3 * d_head]: per head [q, k, v]
    dense: Linear,       // [d_model, d_model]
    ln2: LayerNorm,      // post_attention_layernorm
    h_to_4h: Linear,     // [d_model, d_mlp]
    four_h_to_h: Linear, // [d_mlp, d_model]
    exact_gelu: bool,
    parallel: bool,
    spec: AttentionSpec,
    n_heads: usize,
    d_head: usize,
}

impl Block {
    fn load(store: &WeightStore, cfg: &NeoxConfig, layer: usize) -> Result<Self> {
        let dims = cfg.dims();
        let (d, eps) = (dims.d_model, cfg.layer_norm_eps);
        let name = |suffix: &str| format!("gpt_neox.layers.{layer}.{suffix}");
        let bias = cfg.attention_bias;
        Ok(Block {
            layer,
            ln1: LayerNorm::load(store, &name("input_layernorm"), d, eps)?,
            qkv: Linear::torch(store, &name("attention.query_key_value"), d, 3 * d, bias)?,
            dense: Linear::torch(store, &name("attention.dense"), d, d, bias)?,
            ln2: LayerNorm::load(store, &name("post_attention_layernorm"), d, eps)?,
            h_to_4h: Linear::torch(store, &name("mlp.dense_h_to_4h"), d, dims.d_mlp, true)?,
            four_h_to_h: Linear::torch(store, &name("mlp.dense_4h_to_h"), dims.d_mlp, d, true)?,
            exact_gelu: cfg.hidden_act == "gelu",
            parallel: cfg.use_parallel_residual,
            spec: AttentionSpec::standard(layer, dims.d_head),
            n_heads: dims.n_heads,
            d_head: dims.d_head,
        })
    }

    /// `[batch, pos, d_model]` → q, k, v `[batch, pos, head, d_head]` each, from the
    /// fused projection's per-head `[q, k, v]` layout.
    fn qkv(&self, normalized: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, pos, _) = normalized.dims3()?;
        let fused =
            self.qkv
                .forward(normalized)?
                .reshape((batch, pos, self.n_heads, 3 * self.d_head))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(fused
                .narrow(3, i * self.d_head, self.d_head)?
                .contiguous()?)
        };
        Ok((part(0)?, part(1)?, part(2)?))
    }

    fn keys_values(&self, resid_pre: &Tensor, frame: &Frame) -> Result<(Tensor, Tensor)> {
        let normalized =
            self.ln1
                .forward(resid_pre, &mut Hooks::none(), NormSite::Ln1(self.layer))?;
        let (_, k, v) = self.qkv(&normalized)?;
        Ok((frame.rotary()?.apply(&k)?, v))
    }

    /// Queries, keys and values, each head's from its own input where `inputs` has one
    /// ([`crate::edges`]), `[batch, pos, head, d_head]` each.
    fn attention_inputs(
        &self,
        resid_pre: &Tensor,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let normalized = self
            .ln1
            .forward(resid_pre, hooks, NormSite::Ln1(self.layer))?;
        let (q, k, v) = self.qkv(&normalized)?;
        let Some(inputs) = inputs else {
            return Ok((q, k, v));
        };
        let split = |delta: Option<&Tensor>, i: usize, plain: Tensor| -> Result<Tensor> {
            let Some(delta) = delta else {
                return Ok(plain);
            };
            let norm = |rows: &Tensor| {
                self.ln1
                    .forward(rows, &mut Hooks::none(), NormSite::Ln1(self.layer))
            };
            project_own_inputs(
                (resid_pre, delta),
                self.columns(i),
                norm,
                self.ln1.row_norm(),
            )
        };
        let (q, k, v) = (
            split(inputs.q.as_ref(), 0, q)?,
            split(inputs.k.as_ref(), 1, k)?,
            split(inputs.v.as_ref(), 2, v)?,
        );
        inputs.add_projected((q, k, v))
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
        let k = hooks.at(at(BlockSite::K), k)?;
        let v = hooks.at(at(BlockSite::V), v)?;
        let rot_q = hooks.at(at(BlockSite::RotQ), rotary.apply(&q)?)?;
        let rot_k = hooks.at(at(BlockSite::RotK), rotary.apply(&k)?)?;
        let z = self.spec.attend(&rot_q, &rot_k, &v, frame, prefix, hooks)?; // [batch, pos, head, d_head]
        let attn_out = hooks.at(at(BlockSite::AttnOut), attention_output(&z, &self.dense)?)?;

        // parallel: the MLP reads resid_pre; sequential: resid_mid
        let stream = match self.parallel {
            true => resid_pre.clone(),
            false => hooks.at(at(BlockSite::ResidMid), add(&resid_pre, &attn_out)?)?,
        };
        let mlp_in = mlp_input(&stream, inputs, |mask| {
            masked_head_outputs(&z, mask, &self.dense)
        })?; // hook_mlp_in
        let normalized = self
            .ln2
            .forward(&mlp_in, hooks, NormSite::Ln2(self.layer))?;
        let mlp_pre = hooks.at(at(BlockSite::MlpPre), self.h_to_4h.forward(&normalized)?)?;
        let mlp_post = match self.exact_gelu {
            true => mlp_pre.gelu_erf()?,
            false => gelu_tanh(&mlp_pre)?,
        };
        let mlp_post = hooks.at(at(BlockSite::MlpPost), mlp_post)?; // [batch, pos, d_mlp]
        let mlp_out = hooks.at(at(BlockSite::MlpOut), self.four_h_to_h.forward(&mlp_post)?)?;
        let resid_post = match self.parallel {
            true => add(&add(&resid_pre, &attn_out)?, &mlp_out)?,
            false => add(&stream, &mlp_out)?,
        };
        Ok(hooks.at(at(BlockSite::ResidPost), resid_post)?)
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

    /// The fused projection's per-head `[q, k, v]` blocks.
    fn columns(&self, i: usize) -> HeadColumns<'_> {
        HeadColumns {
            linear: &self.qkv,
            offset: i * self.d_head,
            stride: 3 * self.d_head,
            src_heads: self.n_heads,
            d_head: self.d_head,
        }
    }

    fn norm1(&self, x: &Tensor) -> Result<Tensor> {
        self.ln1
            .forward(x, &mut Hooks::none(), NormSite::Ln1(self.layer))
    }

    fn ln1_input_gradients(&self, x: &Tensor, grads: &Tensor, batch: usize) -> Result<Tensor> {
        self.ln1.input_gradients(x, grads, batch)
    }

    fn head_outputs(&self, z: &Tensor) -> Result<Tensor> {
        head_results(z, &self.dense)
    }
}

/// A GPT-NeoX / Pythia language model with hook points.
pub struct Neox {
    embed_in: Tensor, // [d_vocab, d_model]
    blocks: Vec<Block>,
    final_layer_norm: LayerNorm,
    w_u: Tensor, // [d_model, d_vocab]: embed_out, a transposed view
    rotary: Rotary,
    parallel: bool,
    dims: ModelDims,
}

impl Neox {
    pub fn parse_config(text: &str, path: &Path) -> Result<NeoxConfig> {
        let bad = |e: serde_json::Error| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        let mut cfg: NeoxConfig = serde_json::from_value(value.clone()).map_err(bad)?;
        // transformers' GPT-NeoX default when the config names none: a quarter rotates
        let mut value = value;
        if let Some(map) = value.as_object_mut() {
            let named = ["rotary_pct", "partial_rotary_factor"]
                .iter()
                .any(|k| map.contains_key(*k))
                || map
                    .get("rope_parameters")
                    .is_some_and(|p| p.get("partial_rotary_factor").is_some());
            if !named {
                map.insert("rotary_pct".into(), 0.25.into());
            }
        }
        cfg.rope = RopeConfig::from_config(&value, 10_000.0, path)?;
        cfg.check(path)?;
        Ok(cfg)
    }

    pub fn load(cfg: &NeoxConfig, weights: &[std::path::PathBuf], device: &Device) -> Result<Self> {
        let store = WeightStore::open(weights, device, "GPT-NeoX")?;
        let dims = cfg.dims();
        let (vocab, d) = (dims.d_vocab, dims.d_model);
        let blocks = (0..dims.n_layers)
            .map(|layer| Block::load(&store, cfg, layer))
            .collect::<Result<Vec<_>>>()?;
        let embed_in = store.get("gpt_neox.embed_in.weight", &[vocab, d])?;
        let unembed = match cfg.tie_word_embeddings {
            true => embed_in.clone(),
            false => store.get("embed_out.weight", &[vocab, d])?,
        };
        let rotary_dim = cfg.rope.rotary_dim(dims.d_head);
        Ok(Neox {
            embed_in,
            blocks,
            final_layer_norm: LayerNorm::load(
                &store,
                "gpt_neox.final_layer_norm",
                d,
                cfg.layer_norm_eps,
            )?,
            w_u: unembed.t()?,
            rotary: Rotary::from_inv_freq(cfg.rope.inv_freq(rotary_dim)),
            parallel: cfg.use_parallel_residual,
            dims,
        })
    }
}

impl ArchModel for Neox {
    fn edge_block(&self, layer: usize) -> Option<&dyn EdgeBlock> {
        Some(&self.blocks[layer])
    }

    fn token_embeddings(&self) -> &Tensor {
        &self.embed_in
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn hook_space(&self) -> HookSpace {
        HookSpace::neox(self.dims.n_layers, self.parallel)
    }

    fn key_site(&self) -> BlockSite {
        BlockSite::RotK
    }

    fn attention_spec(&self, layer: usize) -> AttentionSpec {
        self.blocks[layer].spec
    }

    /// `hook_embed` (positions enter through rotary embeddings in each block).
    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let embed = embed_rows(&self.embed_in, tokens)?; // [batch, pos, d_model]
        Ok(hooks.at(HookPoint::Embed, embed)?) // [batch, pos, d_model]
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

    fn parallel_blocks(&self) -> bool {
        self.blocks.first().is_some_and(|b| b.parallel)
    }

    /// Final LayerNorm and the untied unembedding.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        let normalized = self
            .final_layer_norm
            .forward(resid, hooks, NormSite::Final)?;
        readout.unembed(&normalized, &self.w_u, None)
    }
}
