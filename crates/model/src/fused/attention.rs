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
    if !applies(&[q, k, v]) || !applies(&earlier) {
        return Ok(None);
    }
    let (n, heads, d_head) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    if heads % kv_heads != 0 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let earlier: Vec<Tensor> = (earlier.iter())
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = (earlier.iter().chain([&q, &k, &v]))
        .map(|t| t.storage_and_layout())
        .collect();
    let values: Vec<&[f32]> = (guards.iter())
        .map(|(s, l)| contiguous_f32(s, l))
        .collect::<Result<_>>()?;
    let (qv, kv, vv) = (
        values[earlier.len()],
        values[earlier.len() + 1],
        values[earlier.len() + 2],
    );
    let mut spans_blocks = Vec::with_capacity(spans.len());
    let mut next = 0;
    for span in spans {
        let mut blocks = Vec::new();
        for (key, _) in &span.before.blocks {
            let rows = key.dim(0)?;
            blocks.push(Block {
                k: values[next],
                v: values[next + 1],
                rows,
                n: key.dim(1)?,
            });
            next += 2;
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
        spans_blocks.push(blocks);
    }
    let group = heads / kv_heads;
    let mut z = vec![0f32; n * heads * d_head];
    let query = |t: usize, out: &mut [f32]| {
        let Some((span, blocks)) = (spans.iter().zip(&spans_blocks))
            .find(|(s, _)| (s.first..s.first + s.rows * s.len).contains(&t))
        else {
            return;
        };
        let (row, i) = ((t - span.first) / span.len, (t - span.first) % span.len);
        let q_pos = span.start + i;
        let own = span.first + row * span.len; // flattened index of the row's position `start`
        let mut scores = Vec::with_capacity(q_pos + 1);
        for h in 0..heads {
            let g = h / group;
            let q_row = &qv[(t * heads + h) * d_head..][..d_head];
            // Keys in position order: the earlier blocks, then the row's own keys.
            let key_at = |a: usize| -> (&[f32], &[f32]) {
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
                (&kv[at..][..d_head], &vv[at..][..d_head])
            };
            let first_key = match spec.window {
                Some(w) => (q_pos + 1).saturating_sub(w),
                None => 0,
            };
            scores.clear();
            for a in first_key..=q_pos {
                let s = simd::dot(q_row, key_at(a).0) * spec.scale;
                scores.push(match spec.softcap {
                    Some(cap) => cap * (s / cap).tanh(),
                    None => s,
                });
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            let z_row = &mut out[h * d_head..][..d_head];
            for (a, e) in (first_key..=q_pos).zip(&scores) {
                simd::add_scaled(z_row, e / total, key_at(a).1);
            }
        }
    };
    let width = heads * d_head;
    if z.len() <= super::SERIAL_ELEMENTS {
        z.chunks_mut(width)
            .enumerate()
            .for_each(|(t, o)| query(t, o));
    } else {
        z.par_chunks_mut(width)
            .enumerate()
            .for_each(|(t, o)| query(t, o));
    }
    Ok(Some(Tensor::from_vec(z, (n, heads, d_head), q.device())?))
}
