//! Causal attention with TransformerLens's hook points, and the frame of positions a
//! forward pass runs: masks (causal, sliding window), keys and values of earlier
//! positions from a cached run, and each layer's scale and soft-cap.

use actpatch_hooks::{BlockSite, HookPoint, Hooks};
use candle_core::{Device, Tensor};

use crate::fused::attention::{attend, QuerySpan, ScoreSpec, SpanKeys};
use crate::grad;
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
///
/// A frame of several spans ([`Frame::spans`]) runs partial passes of different
/// positions as one: its rows are `[1, Σ rows · len, …]`, the rows of each span one
/// after another, so that everything but attention runs as one matrix product.
pub(crate) struct Frame {
    pub start: usize,
    pub len: usize,
    /// Rotary tables of the frame's positions (architectures with rotary), one row
    /// per position of the pass (per row and position for a frame of spans).
    pub rotary: Option<RotaryTables>,
    /// Which kernels attention and rotary embeddings use.
    pub kernels: Kernels,
    /// The spans of a frame of spans; empty for `[batch, len, …]` rows.
    pub spans: Vec<FrameSpan>,
}

/// One span of a frame of spans: `rows` rows of positions `start..start + len`, after
/// the keys and values of `prefix`.
pub(crate) struct FrameSpan {
    pub rows: usize,
    pub start: usize,
    pub len: usize,
    pub prefix: Option<KvPrefix>,
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
            rotary: rotary
                .map(|r| r.tables_from(start, len, device))
                .transpose()?,
            kernels: Kernels::Fused,
            spans: Vec::new(),
        })
    }

    /// One frame for several spans, each with the frame of its positions (as the
    /// architecture builds it): rows `[1, Σ rows · len, …]`.
    pub fn spans(parts: Vec<(FrameSpan, &Frame)>) -> Result<Frame> {
        let tables: Vec<(&RotaryTables, usize)> = (parts.iter())
            .filter_map(|(span, frame)| frame.rotary.as_ref().map(|r| (r, span.rows)))
            .collect();
        let rotary = match tables.len() {
            0 => None,
            _ => Some(RotaryTables::stacked(&tables)?),
        };
        let spans: Vec<FrameSpan> = parts.into_iter().map(|(span, _)| span).collect();
        Ok(Frame {
            start: 0,
            len: spans.iter().map(|s| s.rows * s.len).sum(),
            rotary,
            kernels: Kernels::Fused,
            spans,
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

/// Keys and values of the positions before a [`Frame`]'s start, in blocks of
/// consecutive positions from 0 on: `[1 or batch, n, kv_head, d_head]` each (keys after
/// rotary embedding where there is one). A batch axis of 1 is shared by every row.
#[derive(Clone)]
pub(crate) struct KvPrefix {
    blocks: Vec<(Tensor, Tensor)>,
}

impl KvPrefix {
    /// Keys and values `k`, `v` `[1 or batch, start, kv_head, d_head]` of positions `0..start`.
    pub fn new(k: Tensor, v: Tensor) -> KvPrefix {
        KvPrefix {
            blocks: vec![(k, v)],
        }
    }

    /// This prefix followed by the keys and values `k`, `v` `[batch, len, kv_head,
    /// d_head]` of the next positions.
    pub fn then(&self, k: &Tensor, v: &Tensor) -> KvPrefix {
        let mut blocks = self.blocks.clone();
        blocks.push((k.clone(), v.clone()));
        KvPrefix { blocks }
    }

    fn keys(&self) -> SpanKeys<'_> {
        SpanKeys {
            blocks: self.blocks.iter().map(|(k, v)| (k, v)).collect(),
        }
    }

    /// The prefix's keys and values broadcast over the batch of `k` and `v` `[batch, len,
    /// kv_head, d_head]` and put in front: `[batch, start + len, kv_head, d_head]` each.
    fn prepend(&self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, _, kv_heads, d_head) = k.dims4()?;
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (pk, pv) in &self.blocks {
            let n = pk.dim(1)?;
            keys.push(pk.broadcast_as((batch, n, kv_heads, d_head))?);
            values.push(pv.broadcast_as((batch, n, kv_heads, d_head))?);
        }
        keys.push(k.clone());
        values.push(v.clone());
        Ok((Tensor::cat(&keys, 1)?, Tensor::cat(&values, 1)?))
    }
}

/// Causal attention from hooked queries, keys and values, through
/// `hook_attn_scores`, `hook_pattern` and `hook_z`.
///
/// `q`: `[batch, pos, head, d_head]`; `k`, `v`: `[batch, pos, kv_head, d_head]`, where
/// each key/value head serves `head / kv_head` query heads (grouped-query attention).
/// With a `prefix`, the keys and values of earlier positions are put in front; the
/// frame's causal mask (or `spec`'s sliding window) hides keys, and the frame's kernels
/// compute the softmax. When nothing patches, probes or stops the scores and the
/// pattern, a fused kernel computes `z` without them (always for a frame of spans;
/// scores and patterns that are only recorded are computed for the record alone, so
/// that recording changes no number). Returns `z`: `[batch, pos, head, d_head]`.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    frame: &Frame,
    prefix: Option<&KvPrefix>,
    spec: &AttentionSpec,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let layer = spec.layer;
    let z_point = HookPoint::block(layer, BlockSite::Z);
    let (scores_point, pattern_point) = (
        HookPoint::block(layer, BlockSite::AttnScores),
        HookPoint::block(layer, BlockSite::Pattern),
    );
    let observed = hooks.touches(scores_point) || hooks.touches(pattern_point);
    if !frame.spans.is_empty() {
        if observed {
            return Err(candle_core::Error::Msg(format!(
                "layer {layer}: attention scores and patterns cannot be hooked in a pass of several spans"
            ))
            .into());
        }
        let z = match fused_attention(q, k, v, frame, None, spec)? {
            Some(z) => z,
            None => span_by_span(q, k, v, frame, spec)?,
        };
        return Ok(hooks.at(z_point, z)?);
    }
    // Scores and patterns that are only recorded do not change how z is computed.
    let altered = hooks.alters(scores_point) || hooks.alters(pattern_point);
    if !altered && frame.kernels == Kernels::Fused {
        if let Some(z) = fused_attention(q, k, v, frame, prefix, spec)? {
            if observed {
                pattern_of(q, k, v, (frame, prefix, spec), hooks)?;
            }
            return Ok(hooks.at(z_point, z)?);
        }
    }
    let plain_frame = prefix.is_none() && frame.start == 0;
    let plain_spec = spec.softcap.is_none() && spec.window.is_none();
    if frame.kernels == Kernels::Differentiable && plain_frame && plain_spec {
        if let Some(z) = grad::attention((q, k, v), spec.layer, spec.scale, hooks)? {
            return Ok(hooks.at(z_point, z)?);
        }
    }
    let (pattern, v) = pattern_of(q, k, v, (frame, prefix, spec), hooks)?;
    let z = pattern.matmul(&v)?.transpose(1, 2)?.contiguous()?; // [batch, pos, head, d_head]
    Ok(hooks.at(z_point, z)?)
}

/// The attention pattern by plain tensor ops, through `hook_attn_scores` and
/// `hook_pattern` (`[batch, head, q_pos, k_pos]`), and the values it weighs (each query
/// head's, `[batch, head, k_pos, d_head]`).
fn pattern_of(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (frame, prefix, spec): (&Frame, Option<&KvPrefix>, &AttentionSpec),
    hooks: &mut Hooks,
) -> Result<(Tensor, Tensor)> {
    let layer = spec.layer;
    let mask = match spec.window {
        Some(window) => sliding_mask_from(frame.start, frame.len, window, q.device())?,
        None => causal_mask_from(frame.start, frame.len, q.device())?,
    };
    let n_heads = q.dim(2)?;
    let n_kv_heads = k.dim(2)?;
    let (k, v) = match prefix {
        Some(prefix) => prefix.prepend(k, v)?, // [batch, start + pos, kv_head, d_head]
        None => (k.clone(), v.clone()),
    };
    let q = q.transpose(1, 2)?.contiguous()?; // [batch, head, pos, d_head]
    let k = repeat_kv(&k.transpose(1, 2)?, n_heads / n_kv_heads)?; // [batch, head, pos, d_head]
    let v = repeat_kv(&v.transpose(1, 2)?, n_heads / n_kv_heads)?;
    let scores = spec.scores(&q, &k)?; // [batch, head, q_pos, k_pos]
    let scores = scores.broadcast_add(&mask)?;
    let scores = hooks.at(HookPoint::block(layer, BlockSite::AttnScores), scores)?;
    let pattern = softmax_last_dim(&scores, frame.kernels)?;
    let pattern = hooks.at(HookPoint::block(layer, BlockSite::Pattern), pattern)?;
    Ok((pattern, v))
}

/// [`causal_attention`] of a frame of spans, one span after another: `q`, `k`, `v`
/// `[1, Σ rows · len, head or kv_head, d_head]` → `z` `[1, Σ rows · len, head, d_head]`.
fn span_by_span(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    frame: &Frame,
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(frame.spans.len());
    let mut offset = 0;
    for span in &frame.spans {
        let n = span.rows * span.len;
        let part = |x: &Tensor| -> Result<Tensor> {
            let (_, _, heads, d_head) = x.dims4()?;
            Ok(x.narrow(1, offset, n)?
                .reshape((span.rows, span.len, heads, d_head))?)
        };
        let own = Frame {
            start: span.start,
            len: span.len,
            rotary: None,
            kernels: frame.kernels,
            spans: Vec::new(),
        };
        let z = causal_attention(
            &part(q)?,
            &part(k)?,
            &part(v)?,
            &own,
            span.prefix.as_ref(),
            spec,
            &mut Hooks::none(),
        )?; // [rows, len, head, d_head]
        let (_, _, heads, d_head) = z.dims4()?;
        parts.push(z.reshape((1, n, heads, d_head))?);
        offset += n;
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// [`causal_attention`]'s `z` by the fused kernel, `None` where it does not apply.
fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    frame: &Frame,
    prefix: Option<&KvPrefix>,
    spec: &AttentionSpec,
) -> Result<Option<Tensor>> {
    let (batch, pos, heads, d_head) = q.dims4()?;
    let kv_heads = k.dim(2)?;
    // (rows, start, len, earlier keys and values) of each span of queries.
    let parts: Vec<(usize, usize, usize, Option<&KvPrefix>)> = match frame.spans.is_empty() {
        true => vec![(batch, frame.start, frame.len, prefix)],
        false => (frame.spans.iter())
            .map(|s| (s.rows, s.start, s.len, s.prefix.as_ref()))
            .collect(),
    };
    let mut first = 0;
    let mut spans = Vec::with_capacity(parts.len());
    for (rows, start, len, prefix) in parts {
        spans.push(QuerySpan {
            first,
            rows,
            start,
            len,
            before: prefix.map(KvPrefix::keys).unwrap_or_default(),
        });
        first += rows * len;
    }
    let flat = |x: &Tensor, h| x.reshape((batch * pos, h, d_head));
    let score = ScoreSpec {
        scale: spec.scale as f32,
        softcap: spec.softcap.map(|c| c as f32),
        window: spec.window,
    };
    let z = attend(
        &flat(q, heads)?,
        &flat(k, kv_heads)?,
        &flat(v, kv_heads)?,
        &spans,
        score,
    )?;
    z.map(|z| Ok(z.reshape((batch, pos, heads, d_head))?))
        .transpose()
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
