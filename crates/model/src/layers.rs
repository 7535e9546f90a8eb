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

    /// `[batch, pos, d_model]` → `[batch, pos, d_model]`
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks, site: NormSite) -> Result<Tensor> {
        let (scale_point, normalized_point) = site.points();
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let scale = hooks.at(scale_point, scale)?; // [batch, pos, 1]
        let normalized = hooks.at(normalized_point, x.broadcast_div(&scale)?)?;
        Ok(normalized.broadcast_mul(&self.weight)?)
    }
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

/// Where the rows of a forward pass sit in the prompt: positions `start..start + len`.
/// A full pass has `start = 0`; a partial pass runs only the positions a patch can
/// change, with the keys and values of the earlier positions taken from a cache.
pub(crate) struct Frame {
    /// `[len, start + len]`
    pub mask: Tensor,
    /// Rotary tables of positions `start..start + len` (architectures with rotary).
    pub rotary: Option<RotaryTables>,
    /// Which kernels attention and rotary embeddings use.
    pub kernels: Kernels,
}

/// The kernels of a forward pass. candle-nn's fused softmax and rotary embedding have
/// no backward pass; a pass that gradients are taken through uses plain tensor ops
/// (the same numbers within float rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// candle-nn's fused kernels: fastest, no gradients.
    #[default]
    Fused,
    /// Plain differentiable tensor ops.
    Differentiable,
}

impl Frame {
    /// This frame with `kernels`.
    pub fn with_kernels(mut self, kernels: Kernels) -> Frame {
        self.kernels = kernels;
        if let Some(rotary) = &mut self.rotary {
            rotary.kernels = kernels;
        }
        self
    }
}

/// Softmax over the last axis with `kernels`. `[..., n]` → `[..., n]`; entries of
/// `-inf` (masked) get 0.
pub fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Fused => Ok(candle_nn::ops::softmax_last_dim(x)?),
        Kernels::Differentiable => {
            // The shift only keeps exp in range; softmax does not depend on it.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let exp = x.broadcast_sub(&max)?.exp()?;
            Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
        }
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
/// frame's `[pos, start + pos]` mask hides later keys. Returns `z`: `[batch, pos, head, d_head]`.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    frame: &Frame,
    prefix: Option<&KvPrefix>,
    layer: usize,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let (_, _, n_heads, d_head) = q.dims4()?;
    let n_kv_heads = k.dim(2)?;
    let (k, v) = match prefix {
        Some(prefix) => (prepend(&prefix.k, k)?, prepend(&prefix.v, v)?), // [batch, start + pos, kv_head, d_head]
        None => (k.clone(), v.clone()),
    };
    let q = q.transpose(1, 2)?.contiguous()?; // [batch, head, pos, d_head]
    let k = repeat_kv(&k.transpose(1, 2)?, n_heads / n_kv_heads)?; // [batch, head, pos, d_head]
    let v = repeat_kv(&v.transpose(1, 2)?, n_heads / n_kv_heads)?;
    let scores = (q.matmul(&k.t()?)? / (d_head as f64).sqrt())?; // [batch, head, q_pos, k_pos]
    let scores = scores.broadcast_add(&frame.mask)?;
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

/// Rotary position embeddings (Su et al. 2021) in the Hugging Face Llama layout: each
/// head's first and second halves are the two coordinates of a rotated pair
/// (`rotate_half`, not interleaved), with frequencies `theta^(-2i / d_head)`.
pub struct Rotary {
    inv_freq: Vec<f32>, // [d_head / 2]
}

impl Rotary {
    pub fn new(d_head: usize, theta: f64) -> Self {
        let inv_freq = (0..d_head / 2)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / d_head as f64)) as f32)
            .collect();
        Rotary { inv_freq }
    }

    /// The cosines and sines of positions `start..start + pos`. Angles are products in
    /// f32, as Hugging Face computes them, so long contexts round the same way.
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
            kernels: Kernels::Fused,
        })
    }
}

/// Rotary tables for one forward pass.
pub struct RotaryTables {
    cos: Tensor, // [pos, d_head / 2]
    sin: Tensor, // [pos, d_head / 2]
    kernels: Kernels,
}

impl RotaryTables {
    /// `[batch, pos, head, d_head]` → `[batch, pos, head, d_head]`, rotated by position:
    /// `x * cos + rotate_half(x) * sin`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernels {
            Kernels::Fused => Ok(candle_nn::rotary_emb::rope_thd(
                &x.contiguous()?,
                &self.cos,
                &self.sin,
            )?),
            Kernels::Differentiable => {
                // (x1, x2) halves → (x1 cos − x2 sin, x2 cos + x1 sin)
                let (batch, pos, heads, d_head) = x.dims4()?;
                let half = d_head / 2;
                let shape = (batch, pos, heads, half);
                let cos = self.cos.reshape((1, pos, 1, half))?.broadcast_as(shape)?;
                let sin = self.sin.reshape((1, pos, 1, half))?.broadcast_as(shape)?;
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let out1 = ((&x1 * &cos)? - (&x2 * &sin)?)?;
                let out2 = ((&x2 * &cos)? + (&x1 * &sin)?)?;
                Ok(Tensor::cat(&[&out1, &out2], D::Minus1)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_tables_rotate_halves() {
        // Position 1, frequency 1 for the first pair: (x, y) in the two halves → rotated.
        let rotary = Rotary::new(4, 10_000.0);
        let tables = rotary.tables_from(0, 2, &Device::Cpu).unwrap();
        let x = Tensor::new(
            &[[[[1f32, 0.0, 0.0, 0.0]]], [[[1f32, 0.0, 0.0, 0.0]]]],
            &Device::Cpu,
        )
        .unwrap()
        .reshape((1, 2, 1, 4))
        .unwrap();
        let got: Vec<f32> = tables
            .apply(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (c, s) = (1f32.cos(), 1f32.sin());
        let want = [1.0, 0.0, 0.0, 0.0, c, 0.0, s, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn differentiable_kernels_give_the_fused_numbers() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 3, 8), &device).unwrap();
        let mut tables = Rotary::new(8, 10_000.0).tables_from(2, 5, &device).unwrap();
        let fused = tables.apply(&x).unwrap();
        tables.kernels = Kernels::Differentiable;
        let plain = tables.apply(&x).unwrap();
        let gap = (fused - plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() < 1e-5);
        let scores = x
            .broadcast_add(&causal_mask_from(0, 8, &device).unwrap())
            .unwrap();
        let fused = softmax_last_dim(&scores, Kernels::Fused).unwrap();
        let plain = softmax_last_dim(&scores, Kernels::Differentiable).unwrap();
        let gap = (fused - plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
