//! Every head's query (key, value) from its own input, the edge graph's split
//! attention inputs ([`crate::edges`]), without a copy of the stream per head: head by
//! head, its input `resid + delta_h` is added and normalized row by row into one
//! scratch buffer `[batch · pos, d_model]`, and one product by the head's columns
//! writes its slot of the output `[batch, pos, head, d_head]`.

use actpatch_simd as simd;
use candle_core::Tensor;
use rayon::prelude::*;

use super::matmul::{self, WeightView};
use super::{applies, contiguous_f32, with_values};
use crate::Result;

/// A norm over one row's values.
#[derive(Clone, Copy)]
pub(crate) enum RowNorm<'a> {
    /// `(x − mean) / √(var + eps) · weight + bias`.
    Layer {
        weight: &'a Tensor,
        bias: &'a Tensor,
        eps: f64,
    },
    /// `x / √(mean(x²) + eps) · weight`.
    Rms { weight: &'a Tensor, eps: f64 },
}

impl RowNorm<'_> {
    fn tensors(&self) -> Vec<&Tensor> {
        match self {
            RowNorm::Layer { weight, bias, .. } => vec![weight, bias],
            RowNorm::Rms { weight, .. } => vec![weight],
        }
    }
}

/// Where one projection's heads sit in its weight `[d_model, out]`: source head `j`'s
/// columns start at `offset + j · stride`, `d_head` of them.
#[derive(Clone, Copy)]
pub(crate) struct HeadSlots {
    pub offset: usize,
    pub stride: usize,
    pub d_head: usize,
    /// Query heads per source head (grouped-query attention shares one).
    pub group: usize,
}

/// `norm(resid + delta[.., h, ..]) @ weight[:, head h's columns] + bias[head h's]` for
/// every query head `h`: `resid` `[batch, pos, d_model]`, `delta` `[batch, pos, head,
/// d_model]` (any strides but a contiguous last axis) → `[batch, pos, head, d_head]`.
/// `None` where the kernel does not apply (not f32 on the CPU, a tracked gradient,
/// a single row).
pub(crate) fn project_heads(
    resid: &Tensor,
    delta: &Tensor,
    norm: RowNorm,
    (weight, bias): (&Tensor, Option<&Tensor>),
    slots: HeadSlots,
) -> Result<Option<Tensor>> {
    if !applies_to(resid, delta, norm, (weight, bias), slots)? {
        return Ok(None);
    }
    let (batch, pos, d_model) = resid.dims3()?;
    let (_, _, heads, _) = delta.dims4()?;
    let delta_layout = delta.layout();
    let delta_strides = &delta_layout.stride()[..3];
    let d_head = slots.d_head;
    let bias = match bias {
        Some(bias) => Some(with_values(bias, |b| Ok(b.to_vec()))?),
        None => None,
    };
    let mut out = vec![0f32; batch * pos * heads * d_head];
    if let Some(bias) = &bias {
        for (slot, chunk) in out.chunks_mut(d_head).enumerate() {
            let start = slots.offset + (slot % heads) / slots.group * slots.stride;
            chunk.copy_from_slice(&bias[start..start + d_head]);
        }
    }
    let resid = resid.contiguous()?;
    let (resid_storage, resid_layout) = resid.storage_and_layout();
    let resid_values = contiguous_f32(&resid_storage, resid_layout)?;
    let (delta_storage, _) = delta.storage_and_layout();
    let delta_values = match &*delta_storage {
        candle_core::Storage::Cpu(cpu) => &cpu.as_slice::<f32>()?[delta_layout.start_offset()..],
        _ => return Ok(None),
    };
    let row_norm = norm_fn(norm)?;
    let mut scratch = vec![0f32; batch * pos * d_model]; // one head's normalized input
    let done = matmul::with_weight(weight, |w| {
        for head in 0..heads {
            normalize_head(
                (resid_values, delta_values, delta_strides),
                (head, pos, d_model),
                &row_norm,
                &mut scratch,
            );
            let start = slots.offset + head / slots.group * slots.stride;
            let columns = WeightView {
                values: &w.values[start * w.col_stride..],
                d_out: d_head,
                ..w
            };
            matmul::product_into(
                &scratch,
                columns,
                (&mut out[head * d_head..], heads * d_head),
                bias.is_some(),
            );
        }
    })?;
    if done.is_none() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(
        out,
        (batch, pos, heads, d_head),
        resid.device(),
    )?))
}

/// Whether [`project_heads`] applies: f32 on the CPU without a tracked gradient, shapes
/// that agree, a delta with a contiguous last axis, two rows at least, and every head's
/// columns within the weight (the product reads them unchecked).
fn applies_to(
    resid: &Tensor,
    delta: &Tensor,
    norm: RowNorm,
    (weight, bias): (&Tensor, Option<&Tensor>),
    slots: HeadSlots,
) -> Result<bool> {
    let mut inputs = vec![resid, delta, weight];
    inputs.extend(bias);
    inputs.extend(norm.tensors());
    let (batch, pos, d_model) = resid.dims3()?;
    let (_, _, heads, _) = delta.dims4()?;
    let (w_in, w_out) = weight.dims2()?;
    let group = slots.group.max(1);
    let last_column = slots.offset + (heads.max(1) - 1) / group * slots.stride + slots.d_head;
    Ok(applies(&inputs)
        && delta.dims() == [batch, pos, heads, d_model]
        && delta.layout().stride()[3] == 1
        && batch * pos >= 2
        && w_in == d_model
        && heads % group == 0
        && last_column <= w_out
        && bias.is_none_or(|b| b.elem_count() == w_out))
}

/// The norm as a function of (input row, output row).
type NormRow = Box<dyn Fn(&[f32], &mut [f32]) + Sync>;

fn norm_fn(norm: RowNorm) -> Result<NormRow> {
    Ok(match norm {
        RowNorm::Layer { weight, bias, eps } => {
            let weight = with_values(weight, |w| Ok(w.to_vec()))?;
            let bias = with_values(bias, |b| Ok(b.to_vec()))?;
            Box::new(move |x, o| simd::layer_norm_row(x, &weight, &bias, eps as f32, o))
        }
        RowNorm::Rms { weight, eps } => {
            let weight = with_values(weight, |w| Ok(w.to_vec()))?;
            Box::new(move |x, o| simd::rms_norm_row(x, &weight, eps as f32, o))
        }
    })
}

/// `scratch[b · pos + p] = norm(resid[b, p] + delta[b, p, head])`, rows in parallel.
fn normalize_head(
    (resid, delta, strides): (&[f32], &[f32], &[usize]),
    (head, pos, d_model): (usize, usize, usize),
    norm: &NormRow,
    scratch: &mut [f32],
) {
    let row = |tmp: &mut Vec<f32>, (r, out): (usize, &mut [f32])| {
        let (b, p) = (r / pos, r % pos);
        let delta = &delta[b * strides[0] + p * strides[1] + head * strides[2]..][..d_model];
        for ((t, x), d) in tmp
            .iter_mut()
            .zip(&resid[r * d_model..][..d_model])
            .zip(delta)
        {
            *t = x + d;
        }
        norm(tmp, out);
    };
    scratch
        .par_chunks_mut(d_model)
        .enumerate()
        .with_min_len((super::SERIAL_ELEMENTS / d_model).max(1))
        .for_each_init(|| vec![0f32; d_model], row);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tensors::randn;

    /// Each head's projection equals its definition, `norm(resid + delta_h) @ W[:, head
    /// h's columns] + b`, for grouped heads, GPT-NeoX's interleaved columns, a strided
    /// delta and both norms.
    #[test]
    fn heads_project_their_own_inputs() {
        let (batch, pos, heads, d_model, d_head) = (2, 3, 4, 16, 4);
        let resid = randn(0.0, 1.0, (batch, pos, d_model), 1);
        // A strided view, as the edge graph hands its deltas over.
        let delta = randn(0.0, 1.0, (batch, heads, pos, d_model), 2)
            .transpose(1, 2)
            .unwrap();
        let (norm_w, norm_b) = (randn(1.0, 0.1, d_model, 3), randn(0.0, 0.1, d_model, 4));
        let norms = [
            RowNorm::Layer {
                weight: &norm_w,
                bias: &norm_b,
                eps: 1e-5,
            },
            RowNorm::Rms {
                weight: &norm_w,
                eps: 1e-6,
            },
        ];
        // (offset, stride, group, output width): separate maps of 2 grouped source
        // heads, and one map of [q, k, v] blocks per head read at its keys.
        let layouts = [
            (0, d_head, 2, 2 * d_head),
            (d_head, 3 * d_head, 1, 3 * heads * d_head),
        ];
        for norm in norms {
            for (offset, stride, group, width) in layouts {
                let weight = randn(0.0, 0.5, (d_model, width), 5);
                let bias = randn(0.0, 0.5, width, 6);
                let slots = HeadSlots {
                    offset,
                    stride,
                    d_head,
                    group,
                };
                let got = project_heads(&resid, &delta, norm, (&weight, Some(&bias)), slots)
                    .unwrap()
                    .unwrap(); // [batch, pos, head, d_head]
                for h in 0..heads {
                    let x = (&resid + delta.narrow(2, h, 1).unwrap().squeeze(2).unwrap()).unwrap();
                    let normalized = match norm {
                        RowNorm::Layer { weight, bias, eps } => {
                            crate::fused::layer_norm(&x, weight, bias, eps)
                                .unwrap()
                                .unwrap()
                        }
                        RowNorm::Rms { weight, eps } => {
                            crate::fused::rms_norm(&x, weight, eps).unwrap().unwrap()
                        }
                    };
                    let start = offset + h / group * stride;
                    let w = weight.narrow(1, start, d_head).unwrap();
                    let b = bias.narrow(0, start, d_head).unwrap();
                    let want = normalized
                        .broadcast_matmul(&w)
                        .unwrap()
                        .broadcast_add(&b)
                        .unwrap();
                    let gap = (got.narrow(2, h, 1).unwrap().squeeze(2).unwrap() - want)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(gap < 1e-4, "head {h}, offset {offset}: {gap}");
                }
            }
        }
    }
}
