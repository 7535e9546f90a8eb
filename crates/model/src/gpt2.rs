//! GPT-2 (Radford et al. 2019) as a hooked transformer, read from Hugging Face
//! `GPT2LMHeadModel` checkpoints.
//!
//! Every size (gpt2, gpt2-medium, gpt2-large, gpt2-xl) loads from its `config.json`.
//! Hook points and their values match TransformerLens's `HookedTransformer` loaded with
//! no weight processing (`fold_ln`, `center_writing_weights`, `center_unembed` off);
//! patching results are the same either way.

use std::path::Path;

use actpatch_hooks::{BlockSite, HookPoint, HookSpace, Hooks};
use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::arch::ArchModel;
use crate::attention::{attention_output, AttentionSpec, Frame, KvPrefix};
use crate::edges::{
    head_results, masked_head_outputs, mlp_input, split_qkv, EdgeBlock, HeadColumns, ReceiverInputs,
};
use crate::layers::{add, embed_rows, LayerNorm, Linear, NormSite};
use crate::weights::WeightStore;
use crate::{Architecture, ModelDims, ModelError, Readout, Result};

/// The fields of a Hugging Face GPT-2 `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// Context length (aka `n_ctx` in old configs).
    #[serde(alias = "n_ctx")]
    pub n_positions: usize,
    /// aka d_model
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `None` means 4 × n_embd.
    pub n_inner: Option<usize>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    pub bos_token_id: Option<u32>,
}

fn default_activation() -> String {
    "gelu_new".into()
}

fn default_eps() -> f64 {
    1e-5
}

impl Gpt2Config {
    pub fn dims(&self) -> ModelDims {
        ModelDims {
            arch: Architecture::Gpt2,
            n_layers: self.n_layer,
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_kv_heads: self.n_head,
            d_head: self.n_embd / self.n_head.max(1),
            d_mlp: self.n_inner.unwrap_or(4 * self.n_embd),
            n_ctx: self.n_positions,
            d_vocab: self.vocab_size,
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(bad(format!(
                "activation_function `{}` is not supported for GPT-2 (supported: gelu_new)",
                self.activation_function
            )));
        }
        Ok(())
    }
}

struct Block {
    layer: usize,
    ln1: LayerNorm,
    c_attn: Linear, // [d_model, 3 * d_model]: q, k, v side by side
    c_proj: Linear, // [d_model, d_model]
    ln2: LayerNorm,
    c_fc: Linear,     // [d_model, d_mlp]
    mlp_proj: Linear, // [d_mlp, d_model]
    spec: AttentionSpec,
    n_heads: usize,
    d_head: usize,
}

impl Block {
    fn load(store: &WeightStore, cfg: &Gpt2Config, layer: usize) -> Result<Self> {
        let d = cfg.n_embd;
        let dims = cfg.dims();
        let name = |suffix: &str| format!("h.{layer}.{suffix}");
        Ok(Block {
            layer,
            ln1: LayerNorm::load(store, &name("ln_1"), d, cfg.layer_norm_epsilon)?,
            c_attn: Linear::conv1d(store, &name("attn.c_attn"), d, 3 * d)?,
            c_proj: Linear::conv1d(store, &name("attn.c_proj"), d, d)?,
            ln2: LayerNorm::load(store, &name("ln_2"), d, cfg.layer_norm_epsilon)?,
            c_fc: Linear::conv1d(store, &name("mlp.c_fc"), d, dims.d_mlp)?,
            mlp_proj: Linear::conv1d(store, &name("mlp.c_proj"), dims.d_mlp, d)?,
            spec: AttentionSpec::standard(layer, dims.d_head),
            n_heads: cfg.n_head,
            d_head: dims.d_head,
        })
    }

    /// The keys and values this block's attention reads at the rows' positions:
    /// `[batch, pos, d_model]` → (`[batch, pos, head, d_head]`, the same). No hooks.
    fn keys_values(&self, resid_pre: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, pos, d_model) = resid_pre.dims3()?;
        let head_shape = (batch, pos, self.n_heads, self.d_head);
        let normalized =
            self.ln1
                .forward(resid_pre, &mut Hooks::none(), NormSite::Ln1(self.layer))?;
        let qkv = self.c_attn.forward(&normalized)?; // [batch, pos, 3 * d_model]
        let k = qkv.narrow(2, d_model, d_model)?.reshape(head_shape)?;
        let v = qkv.narrow(2, 2 * d_model, d_model)?.reshape(head_shape)?;
        Ok((k, v))
    }

    /// `[batch, pos, d_model]` → `[batch, pos, d_model]`, the rows holding the
    /// positions of `frame`, after `prefix`'s keys and values; with `inputs`, each
    /// receiver reads its own input ([`crate::edges`]).
    fn forward(
        &self,
        resid_pre: Tensor,
        frame: &Frame,
        prefix: Option<&KvPrefix>,
        inputs: Option<&ReceiverInputs>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let at = |site| HookPoint::block(self.layer, site);
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
        let k = hooks.at(at(BlockSite::K), k)?;
        let v = hooks.at(at(BlockSite::V), v)?;
        let z = self.spec.attend(&q, &k, &v, frame, prefix, hooks)?; // [batch, pos, head, d_head]
        let attn_out = hooks.at(at(BlockSite::AttnOut), attention_output(&z, &self.c_proj)?)?;
        let resid_mid = hooks.at(at(BlockSite::ResidMid), add(&resid_pre, &attn_out)?)?;

        let mlp_in = mlp_input(&resid_mid, inputs, |mask| {
            masked_head_outputs(&z, mask, &self.c_proj)
        })?; // hook_mlp_in
        let normalized = self
            .ln2
            .forward(&mlp_in, hooks, NormSite::Ln2(self.layer))?;
        let mlp_post = self
            .c_fc
            .forward_gelu(&normalized, hooks, at(BlockSite::MlpPre))?; // gelu_new (tanh) of hook_pre
        let mlp_post = hooks.at(at(BlockSite::MlpPost), mlp_post)?;
        let mlp_out = hooks.at(at(BlockSite::MlpOut), self.mlp_proj.forward(&mlp_post)?)?;
        Ok(hooks.at(at(BlockSite::ResidPost), add(&resid_mid, &mlp_out)?)?)
    }

    /// Queries, keys and values of the residual stream `[batch, pos, d_model]`, each
    /// `[batch, pos, head, d_head]` (not yet through their hooks).
    fn qkv(&self, resid_pre: &Tensor, hooks: &mut Hooks) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, pos, d_model) = resid_pre.dims3()?;
        let head_shape = (batch, pos, self.n_heads, self.d_head);
        let normalized = self
            .ln1
            .forward(resid_pre, hooks, NormSite::Ln1(self.layer))?;
        let qkv = self.c_attn.forward(&normalized)?; // [batch, pos, 3 * d_model]
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv.narrow(2, i * d_model, d_model)?.reshape(head_shape)?)
        };
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// [`Block::qkv`] with each head's query, key and value reading its own input where
    /// `inputs` has one (the first norm's hooks see only the shared stream).
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

    /// Heads side by side in `c_attn`: queries, then keys, then values.
    fn columns(&self, i: usize) -> HeadColumns<'_> {
        HeadColumns {
            linear: &self.c_attn,
            offset: i * self.n_heads * self.d_head,
            stride: self.d_head,
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
        head_results(z, &self.c_proj)
    }
}

/// A GPT-2 language model with hook points.
pub struct Gpt2 {
    wte: Tensor, // [d_vocab, d_model]
    w_u: Tensor, // [d_model, d_vocab]: the tied unembedding, a transposed view of wte
    wpe: Tensor, // [n_ctx, d_model]
    blocks: Vec<Block>,
    ln_final: LayerNorm,
    dims: ModelDims,
}

impl Gpt2 {
    pub fn parse_config(text: &str, path: &Path) -> Result<Gpt2Config> {
        let cfg: Gpt2Config = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.check(path)?;
        Ok(cfg)
    }

    pub fn load(cfg: &Gpt2Config, weights: &[std::path::PathBuf], device: &Device) -> Result<Self> {
        let store = WeightStore::open(weights, device, "GPT-2")?
            .with_prefix_if_present("transformer.", "wte.weight");
        let dims = cfg.dims();
        let wte = store.get("wte.weight", &[cfg.vocab_size, cfg.n_embd])?;
        let blocks = (0..cfg.n_layer)
            .map(|layer| Block::load(&store, cfg, layer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt2 {
            w_u: wte.t()?,
            wte,
            wpe: store.get("wpe.weight", &[cfg.n_positions, cfg.n_embd])?,
            blocks,
            ln_final: LayerNorm::load(&store, "ln_f", cfg.n_embd, cfg.layer_norm_epsilon)?,
            dims,
        })
    }
}

impl ArchModel for Gpt2 {
    fn edge_block(&self, layer: usize) -> Option<&dyn EdgeBlock> {
        Some(&self.blocks[layer])
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn hook_space(&self) -> HookSpace {
        HookSpace::gpt2(self.dims.n_layers)
    }

    fn key_site(&self) -> BlockSite {
        BlockSite::K
    }

    fn attention_spec(&self, layer: usize) -> AttentionSpec {
        self.blocks[layer].spec
    }

    /// `hook_embed` + `hook_pos_embed`.
    fn token_embeddings(&self) -> &Tensor {
        &self.wte
    }

    fn embed(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let (batch, pos) = tokens.dims2()?;
        let d_model = self.dims.d_model;
        let embed = embed_rows(&self.wte, tokens)?; // [batch, pos, d_model]
        let embed = hooks.at(HookPoint::Embed, embed)?;
        let pos_embed = self
            .wpe
            .narrow(0, 0, pos)?
            .unsqueeze(0)?
            .broadcast_as((batch, pos, d_model))?
            .contiguous()?;
        let pos_embed = hooks.at(HookPoint::PosEmbed, pos_embed)?;
        Ok((embed + pos_embed)?) // [batch, pos, d_model]
    }

    /// The frame of positions `start..start + len`.
    fn frame(&self, start: usize, len: usize, device: &Device) -> Result<Frame> {
        Frame::causal(start, len, None, device)
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

    /// Block `layer`'s keys and values at the rows' positions (see [`Block::keys_values`]).
    fn block_keys_values(
        &self,
        layer: usize,
        resid_pre: &Tensor,
        _frame: &Frame,
    ) -> Result<(Tensor, Tensor)> {
        self.blocks[layer].keys_values(resid_pre)
    }

    /// Final LayerNorm and unembedding of the residual stream `[batch, len, d_model]`.
    fn readout(&self, resid: &Tensor, hooks: &mut Hooks, readout: Readout) -> Result<Tensor> {
        let normalized = self.ln_final.forward(resid, hooks, NormSite::Final)?;
        readout.unembed(&normalized, &self.w_u, None)
    }
}
