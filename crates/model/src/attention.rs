//! Causal attention with TransformerLens's hook points, and the frame of positions a
//! forward pass runs: masks (causal, sliding window), keys and values of earlier
//! positions from a cached run, and each layer's scale and soft-cap.

use actpatch_hooks::{BlockSite, HookPoint, Hooks};
use candle_core::{Device, Tensor};

use crate::kernels::{softmax_last_dim, Kernels};
use crate::layers::Linear;
use crate::rotary::{Rotary, RotaryTables};
use crate::Result;

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

/// `cap · tanh(x / cap)`: Gemma 2's soft-capping of attention scores and logits.
pub fn soft_cap(x: &Tensor, cap: f64) -> Result<Tensor> {
    Ok(((x / cap)?.tanh()? * cap)?)
}

/// Where the rows of a forward pass sit in the prompt: positions `start..start + len`.
/// A full pass has `start = 0`; a partial pass runs only the positions a patch can
/// change, with the keys and values of the earlier positions taken from a cache.
pub(crate) struct Frame {
    pub start: usize,
    pub len: usize,
    /// `[len, start + len]`
    pub mask: Tensor,
    /// Rotary tables of positions `start..start + len` (architectures with rotary).
    pub rotary: Option<RotaryTables>,
    /// Which kernels attention and rotary embeddings use.
    pub kernels: Kernels,
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
            kernels: Kernels::Fused,
        })
    }

    /// This frame with `kernels` (attention's softmax and the rotary tables).
    pub fn with_kernels(mut self, kernels: Kernels) -> Frame {
        self.kernels = kernels;
        if let Some(rotary) = &mut self.rotary {
            rotary.kernels = kernels;
        }
        self
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

    /// Scores from queries `q` `[..., query, d_head]` and keys `k` `[..., key, d_head]`
    /// (key heads repeated to the query heads'): `q · kᵀ · scale`, soft-capped where the
    /// model caps them; `[..., query, key]`, before any mask.
    pub fn scores(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        self.cap((q.matmul(&k.t()?)? * self.scale)?)
    }

    /// `cap · tanh(scores / cap)` where the model soft-caps scores; `scores` otherwise.
    pub fn cap(&self, scores: Tensor) -> Result<Tensor> {
        match self.softcap {
            Some(cap) => soft_cap(&scores, cap),
            None => Ok(scores),
        }
    }

    /// [`causal_attention`] with this layer's scale, cap and window over `frame`'s positions.
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        frame: &Frame,
        prefix: Option<&KvPrefix>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        causal_attention(q, k, v, frame, prefix, self, hooks)
    }
}

/// Keys and values of the positions before a [`Frame`]'s start:
/// `[1 or batch, start, kv_head, d_head]` each (keys after rotary embedding where there
/// is one). A batch axis of 1 is shared by every row.
#[derive(Clone)]
pub(crate) struct KvPrefix {
    pub k: Tensor,
    pub v: Tensor,
}

impl KvPrefix {
    /// This prefix followed by the keys and values `k`, `v` `[batch, len, kv_head,
    /// d_head]` of the next positions: `[batch, start + len, kv_head, d_head]` each.
    pub fn then(&self, k: &Tensor, v: &Tensor) -> Result<KvPrefix> {
        Ok(KvPrefix {
            k: prepend(&self.k, k)?,
            v: prepend(&self.v, v)?,
        })
    }
}

/// `prefix` `[1 or batch, start, kv_head, d_head]` broadcast over the batch of `x`
/// `[batch, len, kv_head, d_head]` and put in front: `[batch, start + len, kv_head, d_head]`.
/// The one place a cached prefix meets computed keys and values.
fn prepend(prefix: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (batch, _, kv_heads, d_head) = x.dims4()?;
    let start = prefix.dim(1)?;
    let prefix = prefix.broadcast_as((batch, start, kv_heads, d_head))?;
    Ok(Tensor::cat(&[&prefix, x], 1)?)
}

/// Causal attention from hooked queries, keys and values, through
/// `hook_attn_scores`, `hook_pattern` and `hook_z`.
///
/// `q`: `[batch, pos, head, d_head]`; `k`, `v`: `[batch, pos, kv_head, d_head]`, where
/// each key/value head serves `head / kv_head` query heads (grouped-query attention).
/// With a `prefix`, the keys and values of earlier positions are put in front; the
/// frame's `[pos, start + pos]` mask (or `spec`'s sliding window) hides keys, and the
/// frame's kernels compute the softmax. Returns `z`: `[batch, pos, head, d_head]`.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    frame: &Frame,
    prefix: Option<&KvPrefix>,
    spec: &AttentionSpec,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let windowed;
    let mask = match spec.window {
        Some(window) => {
            windowed = sliding_mask_from(frame.start, frame.len, window, q.device())?;
            &windowed
        }
        None => &frame.mask,
    };
    let layer = spec.layer;
    let n_heads = q.dim(2)?;
    let n_kv_heads = k.dim(2)?;
    let (k, v) = match prefix {
        Some(prefix) => (prepend(&prefix.k, k)?, prepend(&prefix.v, v)?), // [batch, start + pos, kv_head, d_head]
        None => (k.clone(), v.clone()),
    };
    let q = q.transpose(1, 2)?.contiguous()?; // [batch, head, pos, d_head]
    let k = repeat_kv(&k.transpose(1, 2)?, n_heads / n_kv_heads)?; // [batch, head, pos, d_head]
    let v = repeat_kv(&v.transpose(1, 2)?, n_heads / n_kv_heads)?;
    let scores = spec.scores(&q, &k)?; // [batch, head, q_pos, k_pos]
    let scores = scores.broadcast_add(mask)?;
    let scores = hooks.at(HookPoint::block(layer, BlockSite::AttnScores), scores)?;
    let pattern = softmax_last_dim(&scores, frame.kernels)?;
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
