//! Pieces every architecture shares: linear maps, norms with TransformerLens's hook
//! points, and causal attention with its hooks.

use actpatch_hooks::{BlockSite, HookPoint, Hooks};
use candle_core::{Device, Tensor, D};

use crate::weights::WeightStore;
use crate::Result;

/// `x @ weight + bias`, with the weight stored `[in, out]` (GPT-2's Conv1D layout;
/// PyTorch `nn.Linear` weights are transposed once at load).
pub struct Linear {
    weight: Tensor,       // [in, out]
    bias: Option<Tensor>, // [out]
}

impl Linear {
    /// A GPT-2 Conv1D: weight `[in, out]`, bias `[out]`.
    pub fn conv1d(store: &WeightStore, name: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Linear {
            weight: store.get(&format!("{name}.weight"), &[d_in, d_out])?,
            bias: Some(store.get(&format!("{name}.bias"), &[d_out])?),
        })
    }

    /// A PyTorch `nn.Linear` without bias: weight `[out, in]`.
    pub fn torch_no_bias(
        store: &WeightStore,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        let weight = store.get(&format!("{name}.weight"), &[d_out, d_in])?;
        Ok(Linear {
            weight: weight.t()?.contiguous()?,
            bias: None,
        })
    }

    /// A PyTorch `nn.Linear` with an optional bias: weight `[out, in]`, bias `[out]`.
    pub fn torch(
        store: &WeightStore,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let mut linear = Linear::torch_no_bias(store, name, d_in, d_out)?;
        if bias {
            linear.bias = Some(store.get(&format!("{name}.bias"), &[d_out])?);
        }
        Ok(linear)
    }

    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `[batch, pos, in]` → `[batch, pos, out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, pos, d_in) = x.dims3()?;
        let out = x.reshape((batch * pos, d_in))?.matmul(&self.weight)?;
        let out = match &self.bias {
            Some(bias) => out.broadcast_add(bias)?,
            None => out,
        };
        Ok(out.reshape((batch, pos, ()))?)
    }
}

/// Which norm of the model a norm's hooks belong to.
#[derive(Debug, Clone, Copy)]
pub enum NormSite {
    Ln1(usize),
    Ln2(usize),
    /// After attention (Gemma 2's `ln1_post`).
    Ln1Post(usize),
    /// After the MLP (Gemma 2's `ln2_post`).
    Ln2Post(usize),
    /// Per-head query norm (Qwen3's `attn.q_norm`).
    QNorm(usize),
    /// Per-head key norm (Qwen3's `attn.k_norm`).
    KNorm(usize),
    Final,
}

impl NormSite {
    fn points(self) -> (HookPoint, HookPoint) {
        match self {
            NormSite::Ln1(l) => (
                HookPoint::block(l, BlockSite::Ln1Scale),
                HookPoint::block(l, BlockSite::Ln1Normalized),
            ),
            NormSite::Ln2(l) => (
                HookPoint::block(l, BlockSite::Ln2Scale),
                HookPoint::block(l, BlockSite::Ln2Normalized),
            ),
            NormSite::Ln1Post(l) => (
                HookPoint::block(l, BlockSite::Ln1PostScale),
                HookPoint::block(l, BlockSite::Ln1PostNormalized),
            ),
            NormSite::Ln2Post(l) => (
                HookPoint::block(l, BlockSite::Ln2PostScale),
                HookPoint::block(l, BlockSite::Ln2PostNormalized),
            ),
            NormSite::QNorm(l) => (
                HookPoint::block(l, BlockSite::QNormScale),
                HookPoint::block(l, BlockSite::QNormNormalized),
            ),
            NormSite::KNorm(l) => (
                HookPoint::block(l, BlockSite::KNormScale),
                HookPoint::block(l, BlockSite::KNormNormalized),
            ),
            NormSite::Final => (HookPoint::LnFinalScale, HookPoint::LnFinalNormalized),
        }
    }
}

/// LayerNorm as TransformerLens writes it: `hook_scale` is `sqrt(mean(x_c²) + eps)`,
/// `hook_normalized` is `x_c / scale * w + b`.
pub struct LayerNorm {
    weight: Tensor, // [d_model]
    bias: Tensor,   // [d_model]
    eps: f64,
}

impl LayerNorm {
    pub fn load(store: &WeightStore, name: &str, d_model: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: store.get(&format!("{name}.weight"), &[d_model])?,
            bias: store.get(&format!("{name}.bias"), &[d_model])?,
            eps,
        })
    }

    /// `[batch, pos, d_model]` → `[batch, pos, d_model]`
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks, site: NormSite) -> Result<Tensor> {
        let (scale_point, normalized_point) = site.points();
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let scale = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let scale = hooks.at(scale_point, scale)?; // [batch, pos, 1]
        let normalized = centred
            .broadcast_div(&scale)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?;
        Ok(hooks.at(normalized_point, normalized)?)
    }
}

/// RMSNorm as TransformerLens writes it: `hook_scale` is `sqrt(mean(x²) + eps)`,
/// `hook_normalized` is `x / scale`, *before* the weight (unlike [`LayerNorm`], whose
/// `hook_normalized` includes weight and bias); the output is `hook_normalized * w`.
pub struct RmsNorm {
    weight: Tensor, // [d_model]
    eps: f64,
}

impl RmsNorm {
    pub fn load(store: &WeightStore, name: &str, d_model: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: store.get(&format!("{name}.weight"), &[d_model])?,
            eps,
        })
    }

    pub fn from_tensor(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    /// `[batch, pos, d_model]` → `[batch, pos, d_model]` (or `[batch, pos, head,
    /// d_head]` for per-head norms: the last axis is normalized).
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks, site: NormSite) -> Result<Tensor> {
        let (scale_point, normalized_point) = site.points();
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let scale = hooks.at(scale_point, scale)?; // [batch, pos, 1]
        let normalized = hooks.at(normalized_point, x.broadcast_div(&scale)?)?;
        Ok(normalized.broadcast_mul(&self.weight)?)
    }
}

/// `[pos, pos]` additive mask: 0 on and below the diagonal, -inf above.
pub fn causal_mask(pos: usize, device: &Device) -> Result<Tensor> {
    causal_mask_from(0, pos, device)
}

/// `[len, start + len]` additive mask for queries at positions `start..start + len`
/// over keys at `0..start + len`: query `i` sees keys up to `start + i`.
pub fn causal_mask_from(start: usize, len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|q| {
            (0..start + len).map(move |k| {
                if k > start + q {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (len, start + len), device)?)
}

/// `[len, start + len]` additive mask like [`causal_mask_from`], where query `q` also
/// sees only the last `window` keys (`q - window < k <= q`, as transformers' sliding
/// window).
pub fn sliding_mask_from(
    start: usize,
    len: usize,
    window: usize,
    device: &Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|q| {
            let q = start + q;
            (0..start + len).map(move |k| {
                if k > q || k + window <= q {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (len, start + len), device)?)
}

/// Rows of an embedding table: tokens `[batch, pos]` → `[batch, pos, d_model]`.
pub fn embed_rows(table: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (batch, pos) = tokens.dims2()?;
    Ok(table
        .index_select(&tokens.flatten_all()?, 0)?
        .reshape((batch, pos, table.dim(1)?))?)
}

/// `cap · tanh(x / cap)`: Gemma 2's soft-capping of attention scores and logits.
pub fn soft_cap(x: &Tensor, cap: f64) -> Result<Tensor> {
    Ok(((x / cap)?.tanh()? * cap)?)
}

/// Where the rows of a forward pass sit in the prompt: positions `start..start + len`.
/// A full pass has `start = 0`; a fast sweep runs only the positions a patch can
/// change, with the keys and values of the earlier positions taken from a cache.
pub struct Frame {
    pub start: usize,
    pub len: usize,
    /// `[len, start + len]`
    pub mask: Tensor,
    /// Rotary tables of positions `start..start + len` (architectures with rotary).
    pub rotary: Option<RotaryTables>,
}

impl Frame {
    /// Positions `start..start + len` under a causal mask, with `rotary`'s tables where
    /// the architecture has rotary embeddings.
    pub fn causal(
        start: usize,
        len: usize,
        rotary: Option<&Rotary>,
        device: &Device,
    ) -> Result<Frame> {
        Ok(Frame {
            start,
            len,
            mask: causal_mask_from(start, len, device)?,
            rotary: rotary
                .map(|r| r.tables_from(start, len, device))
                .transpose()?,
        })
    }

    /// The rotary tables of the frame's positions (architectures with rotary).
    pub fn rotary(&self) -> Result<&RotaryTables> {
        self.rotary.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "this architecture's frame needs rotary tables (build it with the model's `frame`)"
                    .into(),
            )
            .into()
        })
    }
}

/// How one layer's attention turns queries and keys into scores: the scale, an
/// optional soft-cap (Gemma 2) and an optional sliding window.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub layer: usize,
    /// Scores are `q · k * scale` (d_head^-½ unless the model says otherwise).
    pub scale: f64,
    /// `cap · tanh(scores / cap)` before the mask.
    pub softcap: Option<f64>,
    /// Queries see only the last `window` positions.
    pub window: Option<usize>,
}

impl AttentionSpec {
    /// Scaled by d_head^-½, no cap, no window.
    pub fn standard(layer: usize, d_head: usize) -> Self {
        AttentionSpec {
            layer,
            scale: 1.0 / (d_head as f64).sqrt(),
            softcap: None,
            window: None,
        }
    }

    /// [`causal_attention`] with this layer's scale, cap and window over `frame`'s positions.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        frame: &Frame,
        prefix: Option<KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let windowed;
        let mask = match self.window {
            Some(window) => {
                windowed = sliding_mask_from(frame.start, frame.len, window, q.device())?;
                &windowed
            }
            None => &frame.mask,
        };
        causal_attention(q, k, v, mask, prefix, self, hooks)
    }
}

/// Keys and values of the positions before a [`Frame`]'s start, from a cached run:
/// `[1, start, kv_head, d_head]` each (keys after rotary embedding where there is one).
#[derive(Clone, Copy)]
pub struct KvPrefix<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
}

/// `[batch, len, kv_head, d_head]` → `[batch, start + len, kv_head, d_head]`, the
/// cached prefix broadcast over the batch and put in front.
fn with_prefix(x: &Tensor, prefix: Option<&Tensor>) -> Result<Tensor> {
    match prefix {
        None => Ok(x.clone()),
        Some(prefix) => {
            let (batch, _, kv_heads, d_head) = x.dims4()?;
            let start = prefix.dim(1)?;
            let prefix = prefix.broadcast_as((batch, start, kv_heads, d_head))?;
            Ok(Tensor::cat(&[&prefix, x], 1)?)
        }
    }
}

/// Causal attention from hooked queries, keys and values, through
/// `hook_attn_scores`, `hook_pattern` and `hook_z`.
///
/// `q`: `[batch, pos, head, d_head]`; `k`, `v`: `[batch, pos, kv_head, d_head]`, where
/// each key/value head serves `head / kv_head` query heads (grouped-query attention).
/// With a `prefix`, the keys and values of earlier positions are put in front and
/// `mask` is the frame's `[pos, start + pos]` mask. Returns `z`: `[batch, pos, head, d_head]`.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    prefix: Option<KvPrefix>,
    spec: &AttentionSpec,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let layer = spec.layer;
    let n_heads = q.dim(2)?;
    let n_kv_heads = k.dim(2)?;
    let k = with_prefix(k, prefix.map(|p| p.k))?; // [batch, start + pos, kv_head, d_head]
    let v = with_prefix(v, prefix.map(|p| p.v))?;
    let q = q.transpose(1, 2)?.contiguous()?; // [batch, head, pos, d_head]
    let k = repeat_kv(&k.transpose(1, 2)?, n_heads / n_kv_heads)?; // [batch, head, pos, d_head]
    let v = repeat_kv(&v.transpose(1, 2)?, n_heads / n_kv_heads)?;
    let scores = (q.matmul(&k.t()?)? * spec.scale)?; // [batch, head, q_pos, k_pos]
    let scores = match spec.softcap {
        Some(cap) => soft_cap(&scores, cap)?,
        None => scores,
    };
    let scores = scores.broadcast_add(mask)?;
    let scores = hooks.at(HookPoint::block(layer, BlockSite::AttnScores), scores)?;
    let pattern = candle_nn::ops::softmax_last_dim(&scores)?;
    let pattern = hooks.at(HookPoint::block(layer, BlockSite::Pattern), pattern)?;
    let z = pattern.matmul(&v)?.transpose(1, 2)?.contiguous()?; // [batch, pos, head, d_head]
    Ok(hooks.at(HookPoint::block(layer, BlockSite::Z), z)?)
}

/// `[batch, kv_head, pos, d_head]` → `[batch, kv_head * n_rep, pos, d_head]`, each
/// key/value head repeated for the query heads it serves.
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.contiguous()?);
    }
    let (batch, n_kv, pos, d_head) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((batch, n_kv, n_rep, pos, d_head))?
        .reshape((batch, n_kv * n_rep, pos, d_head))?)
}

/// `z` `[batch, pos, head, d_head]` → attention output `[batch, pos, d_model]`.
pub fn attention_output(z: &Tensor, w_o: &Linear) -> Result<Tensor> {
    let (batch, pos, heads, d_head) = z.dims4()?;
    w_o.forward(&z.reshape((batch, pos, heads * d_head))?)
}

/// Rotary position embeddings (Su et al. 2021) in the Hugging Face Llama layout: each
/// head's first and second halves are the two coordinates of a rotated pair
/// (`rotate_half`, not interleaved), with frequencies `theta^(-2i / d_head)`.
pub struct Rotary {
    inv_freq: Vec<f32>, // [d_head / 2]
}

impl Rotary {
    /// From inverse frequencies `[rotary_dim / 2]` (see [`crate::rope::RopeConfig::inv_freq`]);
    /// a head's dimensions past `rotary_dim` pass through unrotated.
    pub fn from_inv_freq(inv_freq: Vec<f32>) -> Self {
        Rotary { inv_freq }
    }

    pub fn new(d_head: usize, theta: f64) -> Self {
        let inv_freq = (0..d_head / 2)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / d_head as f64)) as f32)
            .collect();
        Rotary { inv_freq }
    }

    /// The cosines and sines of positions `0..pos`. Angles are products in f32, as
    /// Hugging Face computes them, so long contexts round the same way.
    pub fn tables(&self, pos: usize, device: &Device) -> Result<RotaryTables> {
        self.tables_from(0, pos, device)
    }

    /// The cosines and sines of positions `start..start + pos`.
    pub fn tables_from(&self, start: usize, pos: usize, device: &Device) -> Result<RotaryTables> {
        let half = self.inv_freq.len();
        let angles: Vec<f32> = (start..start + pos)
            .flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| (*a as f64).cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().map(|a| (*a as f64).sin() as f32).collect();
        Ok(RotaryTables {
            cos: Tensor::from_vec(cos, (pos, half), device)?, // [pos, d_head / 2]
            sin: Tensor::from_vec(sin, (pos, half), device)?, // [pos, d_head / 2]
        })
    }
}

/// Rotary tables for one forward pass.
pub struct RotaryTables {
    cos: Tensor, // [pos, d_head / 2]
    sin: Tensor, // [pos, d_head / 2]
}

impl RotaryTables {
    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_head]`, rotated by position:
    /// `x * cos + rotate_half(x) * sin` on the first `rotary_dim` dimensions, the rest
    /// unchanged (partial rotary, GPT-NeoX).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let d_head = x.dim(3)?;
        let rotary_dim = 2 * self.cos.dim(1)?;
        if rotary_dim == d_head {
            return Ok(candle_nn::rotary_emb::rope_thd(
                &x.contiguous()?,
                &self.cos,
                &self.sin,
            )?);
        }
        let rotated = candle_nn::rotary_emb::rope_thd(
            &x.narrow(3, 0, rotary_dim)?.contiguous()?,
            &self.cos,
            &self.sin,
        )?;
        let passed = x.narrow(3, rotary_dim, d_head - rotary_dim)?;
        Ok(Tensor::cat(&[&rotated, &passed], 3)?)
    }
}
