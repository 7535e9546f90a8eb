//! Causal attention's three differentiable steps as CPU custom ops: scores from
//! queries and keys, the softmax, and the pattern's weighted sum of values, each with
//! its backward pass. candle's ops take ~15 steps forward (transposes, copies, a
//! matmul per step, the mask, the softmax's five ops) and twice that backward.
//!
//! Layouts: queries `[batch, pos, head, d_head]`, keys and values `[batch, pos,
//! kv_head, d_head]` (each key/value head serving `head / kv_head` query heads),
//! scores and patterns `[batch, head, query, key]`, `z` `[batch, pos, head, d_head]`.

use actpatch_simd as simd;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{map_rows, values, zip_rows};
use crate::fused::for_chunks;

/// Sizes of one attention: batch, positions, query heads, key/value heads, d_head.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    pos: usize,
    heads: usize,
    kv_heads: usize,
    d_head: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout) -> candle_core::Result<Dims> {
        let (batch, pos, heads, d_head) = q.shape().dims4()?;
        let kv_heads = k.shape().dims4()?.2;
        if kv_heads == 0
            || heads % kv_heads != 0
            || k.shape().dims4()? != (batch, pos, kv_heads, d_head)
        {
            candle_core::bail!(
                "attention: queries {:?} and keys {:?} do not match",
                q.dims(),
                k.dims()
            );
        }
        Ok(Dims {
            batch,
            pos,
            heads,
            kv_heads,
            d_head,
        })
    }

    /// The sizes of a pattern layout `[batch, head, query, key]` with `kv_heads` key/value
    /// heads of width `d_head`.
    fn of_pattern(pattern: &Layout, kv_heads: usize, d_head: usize) -> candle_core::Result<Dims> {
        let (batch, heads, pos, _) = pattern.shape().dims4()?;
        Ok(Dims {
            batch,
            pos,
            heads,
            kv_heads,
            d_head,
        })
    }

    /// Where row `(b, h, t)` (query `t`'s weights over the keys) of a `[batch, head,
    /// query, key]` pattern starts.
    fn pattern_row(&self, b: usize, h: usize, t: usize) -> usize {
        ((b * self.heads + h) * self.pos + t) * self.pos
    }

    /// Row `(b, t, h)` of a `[batch, pos, heads, d_head]` tensor.
    fn row(&self, b: usize, t: usize, heads: usize, h: usize) -> std::ops::Range<usize> {
        let at = ((b * self.pos + t) * heads + h) * self.d_head;
        at..at + self.d_head
    }

    /// The key/value head query head `h` reads.
    fn kv(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// `[batch, head, query, key]`
    fn pattern_shape(&self) -> Shape {
        Shape::from((self.batch, self.heads, self.pos, self.pos))
    }
}

/// `q · kᵀ · scale`, −∞ where a query would see a later key: `[batch, head, query, key]`.
pub(super) struct Scores {
    pub scale: f32,
}

impl CustomOp2 for Scores {
    fn name(&self) -> &'static str {
        "attention-scores"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(q_layout, k_layout)?;
        let (q, k) = (values(q_storage, q_layout)?, values(k_storage, k_layout)?);
        let mut out = vec![0f32; d.batch * d.heads * d.pos * d.pos];
        for_chunks(&mut out, d.pos, |row, scores| {
            let (b, h, t) = (row / (d.heads * d.pos), row / d.pos % d.heads, row % d.pos);
            let query = &q[d.row(b, t, d.heads, h)];
            for (s, score) in scores.iter_mut().enumerate() {
                *score = match s > t {
                    true => f32::NEG_INFINITY,
                    false => simd::dot(query, &k[d.row(b, s, d.kv_heads, d.kv(h))]) * self.scale,
                };
            }
        });
        Ok((CpuStorage::F32(out), d.pattern_shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        _scores: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let op = |of_queries| ScoresGrad {
            scale: self.scale,
            kv_heads: k.dims().get(2).copied().unwrap_or(1),
            of_queries,
        };
        let grad_q = grad.apply_op2_no_bwd(k, &op(true))?; // [batch, pos, head, d_head]
        let grad_k = grad.apply_op2_no_bwd(q, &op(false))?; // [batch, pos, kv_head, d_head]
        Ok((Some(grad_q), Some(grad_k)))
    }
}

/// The gradient of [`Scores`]' queries (from the keys) or keys (from the queries),
/// `(grad [batch, head, query, key], other)` → `[batch, pos, head or kv_head, d_head]`.
/// Hidden (later) keys get and give nothing.
struct ScoresGrad {
    scale: f32,
    kv_heads: usize,
    of_queries: bool,
}

impl CustomOp2 for ScoresGrad {
    fn name(&self) -> &'static str {
        "attention-scores-grad"
    }

    fn cpu_fwd(
        &self,
        g_storage: &CpuStorage,
        g_layout: &Layout,
        o_storage: &CpuStorage,
        o_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, other) = (values(g_storage, g_layout)?, values(o_storage, o_layout)?);
        let d = Dims::of_pattern(g_layout, self.kv_heads, o_layout.shape().dims4()?.3)?;
        let Dims {
            batch,
            pos,
            heads,
            kv_heads,
            d_head,
        } = d;
        let out_heads = if self.of_queries { heads } else { kv_heads };
        let mut out = vec![0f32; batch * pos * out_heads * d_head];
        let grad_at = |b: usize, h: usize, t: usize, s: usize| g[d.pattern_row(b, h, t) + s];
        for_chunks(&mut out, d_head, |row, acc| {
            let (b, p, oh) = (
                row / (pos * out_heads),
                row / out_heads % pos,
                row % out_heads,
            );
            if self.of_queries {
                // grad_q(t, h) = scale Σ_{s ≤ t} g(h, t, s) k(s, kv(h))
                for s in 0..=p {
                    let weight = grad_at(b, oh, p, s) * self.scale;
                    simd::add_scaled(acc, weight, &other[d.row(b, s, d.kv_heads, d.kv(oh))]);
                }
            } else {
                // grad_k(s, kh) = scale Σ_{h → kh} Σ_{t ≥ s} g(h, t, s) q(t, h)
                for h in (0..heads).filter(|h| d.kv(*h) == oh) {
                    for t in p..pos {
                        let weight = grad_at(b, h, t, p) * self.scale;
                        simd::add_scaled(acc, weight, &other[d.row(b, t, heads, h)]);
                    }
                }
            }
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, pos, out_heads, d_head)),
        ))
    }
}

/// Softmax over the last axis (−∞ entries get 0); backward `p · (g − Σ p·g)` per row.
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows((storage, layout), |x, row| {
            row.copy_from_slice(x);
            crate::fused::attention::softmax(row)
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        pattern: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            pattern.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// `(p, g)` → `p · (g − Σ p·g)` per row of the last axis.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        p_storage: &CpuStorage,
        p_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, g) = ((p_storage, p_layout), (g_storage, g_layout));
        zip_rows(self.name(), p, g, |p, g, row| {
            let dot = simd::dot(p, g);
            for ((o, p), g) in row.iter_mut().zip(p).zip(g) {
                *o = p * (g - dot);
            }
        })
    }
}

/// `z` `[batch, pos, head, d_head]` = the pattern `[batch, head, query, key]`'s weighted
/// sum of values `[batch, pos, kv_head, d_head]`.
pub(super) struct WeightedValues;

impl CustomOp2 for WeightedValues {
    fn name(&self) -> &'static str {
        "attention-weighted-values"
    }

    fn cpu_fwd(
        &self,
        p_storage: &CpuStorage,
        p_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, v) = (values(p_storage, p_layout)?, values(v_storage, v_layout)?);
        let (_, _, kv_heads, d_head) = v_layout.shape().dims4()?;
        let d = Dims::of_pattern(p_layout, kv_heads, d_head)?;
        let (batch, pos, heads) = (d.batch, d.pos, d.heads);
        let mut out = vec![0f32; batch * pos * heads * d_head];
        for_chunks(&mut out, d_head, |row, z| {
            let (b, t, h) = (row / (pos * heads), row / heads % pos, row % heads);
            let weights = &p[d.pattern_row(b, h, t)..][..pos];
            for (s, weight) in weights.iter().enumerate() {
                simd::add_scaled(z, *weight, &v[d.row(b, s, kv_heads, d.kv(h))]);
            }
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, pos, heads, d_head)),
        ))
    }

    fn bwd(
        &self,
        pattern: &Tensor,
        v: &Tensor,
        _z: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_pattern = grad.apply_op2_no_bwd(v, &PatternGrad)?;
        let grad_v = pattern.apply_op2_no_bwd(
            &grad,
            &ValuesGrad {
                kv_heads: v.dim(2)?,
            },
        )?;
        Ok((Some(grad_pattern), Some(grad_v)))
    }
}

/// `(grad_z, v)` → the pattern's gradient `g(h, t, s) = grad_z(t, h) · v(s, kv(h))`.
struct PatternGrad;

impl CustomOp2 for PatternGrad {
    fn name(&self) -> &'static str {
        "attention-pattern-grad"
    }

    fn cpu_fwd(
        &self,
        g_storage: &CpuStorage,
        g_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(g_layout, v_layout)?;
        let (g, v) = (values(g_storage, g_layout)?, values(v_storage, v_layout)?);
        let mut out = vec![0f32; d.batch * d.heads * d.pos * d.pos];
        for_chunks(&mut out, d.pos, |row, grads| {
            let (b, h, t) = (row / (d.heads * d.pos), row / d.pos % d.heads, row % d.pos);
            let grad_z = &g[d.row(b, t, d.heads, h)];
            for (s, grad) in grads.iter_mut().enumerate() {
                *grad = simd::dot(grad_z, &v[d.row(b, s, d.kv_heads, d.kv(h))]);
            }
        });
        Ok((CpuStorage::F32(out), d.pattern_shape()))
    }
}

/// `(pattern, grad_z)` → the values' gradient `Σ_{h → kh} Σ_t p(h, t, s) grad_z(t, h)`.
struct ValuesGrad {
    kv_heads: usize,
}

impl CustomOp2 for ValuesGrad {
    fn name(&self) -> &'static str {
        "attention-values-grad"
    }

    fn cpu_fwd(
        &self,
        p_storage: &CpuStorage,
        p_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, g) = (values(p_storage, p_layout)?, values(g_storage, g_layout)?);
        let d = Dims::of_pattern(p_layout, self.kv_heads, g_layout.shape().dims4()?.3)?;
        let Dims {
            batch,
            pos,
            heads,
            kv_heads,
            d_head,
        } = d;
        let mut out = vec![0f32; batch * pos * kv_heads * d_head];
        for_chunks(&mut out, d_head, |row, acc| {
            let (b, s, kh) = (row / (pos * kv_heads), row / kv_heads % pos, row % kv_heads);
            for h in (0..heads).filter(|h| d.kv(*h) == kh) {
                for t in 0..pos {
                    let weight = p[d.pattern_row(b, h, t) + s];
                    simd::add_scaled(acc, weight, &g[d.row(b, t, heads, h)]);
                }
            }
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, pos, kv_heads, d_head)),
        ))
    }
}
