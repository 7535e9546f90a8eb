//! Causal attention in one pass per query: scores, soft-cap, softmax and the weighted
//! sum of values, without materializing scores or patterns, over queries laid out as
//! one or several spans of rows (see [`crate::attention::Frame`]).

use candle_core::Tensor;
use rayon::prelude::*;

use actpatch_simd as simd;

use super::{applies, contiguous_f32};
use crate::Result;

/// The keys and values of a span of queries that come before it: blocks of consecutive
/// positions from 0 on, each `[1 or rows, n, kv_head, d_head]` (a batch axis of 1 is
/// shared by every row).
#[derive(Default)]
pub(crate) struct SpanKeys<'a> {
    /// (keys, values) of each block, in position order.
    pub blocks: Vec<(&'a Tensor, &'a Tensor)>,
}

/// A span of queries: `rows` rows of the positions `start..start + len`, stored at the
/// flattened query indices `first..first + rows · len` (row-major).
pub(crate) struct QuerySpan<'a> {
    pub first: usize,
    pub rows: usize,
    pub start: usize,
    pub len: usize,
    pub before: SpanKeys<'a>,
}

/// Scale, soft-cap and sliding window of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScoreSpec {
    pub scale: f32,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
}

/// One block of earlier keys and values as slices.
struct Block<'a> {
    k: &'a [f32],
    v: &'a [f32],
    /// 1 (shared by every row) or the span's rows.
    rows: usize,
    n: usize,
}

/// The kernel's inputs as slices: queries, the pass's own keys and values, and each
/// span's earlier blocks.
struct Slices<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    spans: Vec<(&'a QuerySpan<'a>, Vec<Block<'a>>)>,
    heads: usize,
    kv_heads: usize,
    d_head: usize,
    spec: ScoreSpec,
}

/// `z` `[n, head, d_head]` of queries `q` `[n, head, d_head]` over the spans' earlier
/// keys and their own keys and values `k`, `v` `[n, kv_head, d_head]` (query `i` of a
/// row sees its row's keys `0..=i`). `None` when the fused kernel does not apply.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spans: &[QuerySpan],
    spec: ScoreSpec,
) -> Result<Option<Tensor>> {
    let earlier: Vec<&Tensor> = (spans.iter())
        .flat_map(|s| s.before.blocks.iter().flat_map(|(k, v)| [*k, *v]))
        .collect();
    let (n, heads, d_head) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    if !applies(&[q, k, v]) || !applies(&earlier) || heads % kv_heads != 0 {
        return Ok(None);
    }
    let inputs: Vec<Tensor> = (earlier.iter().copied().chain([q, k, v]))
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
    let values: Vec<&[f32]> = (guards.iter())
        .map(|(s, l)| contiguous_f32(s, l))
        .collect::<Result<_>>()?;
    let own = &values[earlier.len()..];
    let slices = Slices {
        q: own[0],
        k: own[1],
        v: own[2],
        spans: span_blocks(spans, &values, n)?,
        heads,
        kv_heads,
        d_head,
        spec,
    };
    let mut z = vec![0f32; n * heads * d_head];
    let width = heads * d_head;
    if z.len() <= super::SERIAL_ELEMENTS {
        (z.chunks_mut(width).enumerate()).for_each(|(t, out)| slices.query(t, out));
    } else {
        (z.par_chunks_mut(width).enumerate()).for_each(|(t, out)| slices.query(t, out));
    }
    Ok(Some(Tensor::from_vec(z, (n, heads, d_head), q.device())?))
}

/// Each span with its earlier blocks as slices (`values` holds each block's keys and
/// values in order), checked to cover the positions before the span.
fn span_blocks<'a>(
    spans: &'a [QuerySpan<'a>],
    values: &[&'a [f32]],
    n: usize,
) -> Result<Vec<(&'a QuerySpan<'a>, Vec<Block<'a>>)>> {
    let mut next = values.iter();
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let mut blocks = Vec::new();
        for (key, _) in &span.before.blocks {
            let (Some(k), Some(v)) = (next.next(), next.next()) else {
                break;
            };
            let (rows, n) = (key.dim(0)?, key.dim(1)?);
            blocks.push(Block { k, v, rows, n });
        }
        let covered: usize = blocks.iter().map(|b| b.n).sum();
        let bad_rows = blocks.iter().any(|b| b.rows != 1 && b.rows != span.rows);
        if covered != span.start || bad_rows || span.first + span.rows * span.len > n {
            return Err(candle_core::Error::Msg(format!(
                "attention span at {} ({} rows × {} positions) has keys for {covered} earlier positions",
                span.start, span.rows, span.len
            ))
            .into());
        }
        out.push((span, blocks));
    }
    Ok(out)
}

impl Slices<'_> {
    /// `z` of flattened query `t` (every head) into `out` `[head · d_head]`.
    fn query(&self, t: usize, out: &mut [f32]) {
        let Some((span, blocks)) =
            (self.spans.iter()).find(|(s, _)| (s.first..s.first + s.rows * s.len).contains(&t))
        else {
            return;
        };
        let (row, i) = ((t - span.first) / span.len, (t - span.first) % span.len);
        let q_pos = span.start + i;
        let first_key = match self.spec.window {
            Some(w) => (q_pos + 1).saturating_sub(w),
            None => 0,
        };
        let d_head = self.d_head;
        let mut weights = Vec::with_capacity(q_pos + 1);
        for h in 0..self.heads {
            let g = h / (self.heads / self.kv_heads);
            let q_row = &self.q[(t * self.heads + h) * d_head..][..d_head];
            let key_at = |a| self.key_value(blocks, (span.first + row * span.len, row), g, a);
            weights.clear();
            weights.extend((first_key..=q_pos).map(|a| {
                let score = simd::dot(q_row, key_at(a).0) * self.spec.scale;
                match self.spec.softcap {
                    Some(cap) => cap * (score / cap).tanh(),
                    None => score,
                }
            }));
            softmax(&mut weights);
            let z_row = &mut out[h * d_head..][..d_head];
            for (a, p) in (first_key..=q_pos).zip(&weights) {
                simd::add_scaled(z_row, *p, key_at(a).1);
            }
        }
    }

    /// The key and value of key/value head `g` at prompt position `a` for the row
    /// whose position `start` sits at flattened index `own` and is row `row` of its
    /// span: from the span's earlier blocks, then from the row's own keys.
    fn key_value<'s>(
        &'s self,
        blocks: &'s [Block],
        (own, row): (usize, usize),
        g: usize,
        a: usize,
    ) -> (&'s [f32], &'s [f32]) {
        let (d_head, kv_heads) = (self.d_head, self.kv_heads);
        let mut a = a;
        for b in blocks {
            if a < b.n {
                let r = if b.rows == 1 { 0 } else { row };
                let at = ((r * b.n + a) * kv_heads + g) * d_head;
                return (&b.k[at..][..d_head], &b.v[at..][..d_head]);
            }
            a -= b.n;
        }
        let at = ((own + a) * kv_heads + g) * d_head;
        (&self.k[at..][..d_head], &self.v[at..][..d_head])
    }
}

/// Scores → softmax weights in place (max-shifted, as candle-nn's softmax; −∞ scores
/// get 0).
pub(crate) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    for s in scores.iter_mut() {
        *s /= total;
    }
}
