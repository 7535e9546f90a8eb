//! Pieces every architecture shares: linear maps, embedding rows and norms with
//! TransformerLens's hook points (attention is in [`crate::attention`], rotary
//! embeddings in [`crate::rotary`]).

use actpatch_hooks::{BlockSite, HookPoint, Hooks};
use candle_core::{DType, Tensor, D};

use crate::fused;
pub(crate) use crate::fused::Gate;
use crate::grad;
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

    /// The weight, `[in, out]`.
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `[batch, pos, in]` → `[batch, pos, out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(out) = fused::linear(x, &self.weight, self.bias.as_ref())? {
            return Ok(out);
        }
        let (batch, pos, d_in) = x.dims3()?;
        let rows = x.reshape((batch * pos, d_in))?; // [batch · pos, in]
        if let Some(out) = grad::linear(&rows, &self.weight, self.bias.as_ref())? {
            return Ok(out.reshape((batch, pos, ()))?);
        }
        let out = rows.matmul(&self.weight)?;
        let out = match &self.bias {
            Some(bias) => out.broadcast_add(bias)?,
            None => out,
        };
        Ok(out.reshape((batch, pos, ()))?)
    }
}

impl Linear {
    /// `gelu_tanh(self.forward(x))`, the linear map's output passing `pre` (the MLP's
    /// `hook_pre`) on the way: one pass over the output when nothing touches `pre`.
    pub fn forward_gelu(&self, x: &Tensor, hooks: &mut Hooks, pre: HookPoint) -> Result<Tensor> {
        if !hooks.touches(pre) {
            if let Some(out) = fused::linear_gelu(x, &self.weight, self.bias.as_ref())? {
                return Ok(out);
            }
        }
        gelu_tanh(&hooks.at(pre, self.forward(x)?)?)
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
        if !hooks.touches(scale_point) {
            if let Some(normalized) = fused::layer_norm(x, &self.weight, &self.bias, self.eps)? {
                return Ok(hooks.at(normalized_point, normalized)?);
            }
            if let Some(normalized) = grad::layer_norm(x, &self.weight, &self.bias, self.eps)? {
                return Ok(hooks.at(normalized_point, normalized)?);
            }
        }
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

impl LayerNorm {
    /// The norm row by row, for fused kernels.
    pub(crate) fn row_norm(&self) -> fused::heads::RowNorm<'_> {
        fused::heads::RowNorm::Layer {
            weight: &self.weight,
            bias: &self.bias,
            eps: self.eps,
        }
    }

    /// The gradient at the norm's input `x` `[batch · pos, d_model]` of each of `grads`
    /// `[n, batch · pos, d_model]` at its output (every `grads[i]` against the same
    /// `x`): `[batch, n, pos, d_model]`.
    pub(crate) fn input_gradients(
        &self,
        x: &Tensor,
        grads: &Tensor,
        batch: usize,
    ) -> Result<Tensor> {
        let eps = self.eps as f32;
        norm_input_gradients((x, batch), &self.weight, grads, |x, w, g, out| {
            actpatch_simd::layer_norm_row_grad(x, w, eps, g, out)
        })
    }
}

impl RmsNorm {
    /// `sqrt(mean(x²) + eps)` over the last axis, kept: `[.., 1]`.
    pub(crate) fn scale(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?)
    }

    /// The norm row by row, for fused kernels.
    pub(crate) fn row_norm(&self) -> fused::heads::RowNorm<'_> {
        fused::heads::RowNorm::Rms {
            weight: &self.weight,
            eps: self.eps,
        }
    }

    /// The weight the normalized input is multiplied by, `[d]`.
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// [`LayerNorm::input_gradients`] for this RMSNorm.
    pub(crate) fn input_gradients(
        &self,
        x: &Tensor,
        grads: &Tensor,
        batch: usize,
    ) -> Result<Tensor> {
        let eps = self.eps as f32;
        norm_input_gradients((x, batch), &self.weight, grads, |x, w, g, out| {
            actpatch_simd::rms_norm_row_grad(x, w, eps, g, out)
        })
    }
}

/// A norm's input gradients row by row on every core (on the host): `x` `[batch · pos,
/// d]`, `grads` `[n, batch · pos, d]` → `[batch, n, pos, d]`, each output row written
/// in place (no transpose after).
fn norm_input_gradients(
    (x, batch): (&Tensor, usize),
    weight: &Tensor,
    grads: &Tensor,
    row_grad: impl Fn(&[f32], &[f32], &[f32], &mut [f32]) + Sync,
) -> Result<Tensor> {
    use rayon::prelude::*;
    let (n, rows, d) = grads.dims3()?;
    if batch == 0 || rows % batch != 0 || x.dims() != [rows, d] {
        let reason = format!(
            "norm input gradients: x {:?}, grads {:?}, batch {batch}",
            x.dims(),
            grads.dims()
        );
        return Err(candle_core::Error::Msg(reason).into());
    }
    let pos = rows / batch;
    let w_values = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * rows * d];
    with_host_values(x, |x_values| {
        with_host_values(grads, |g_values| {
            out.par_chunks_mut(d).enumerate().for_each(|(o, out_row)| {
                // Output row (b · n + i) · pos + p reads x row b · pos + p of grads[i].
                let (b, i, p) = (o / (n * pos), (o / pos) % n, o % pos);
                let row = b * pos + p;
                let g = &g_values[(i * rows + row) * d..][..d];
                row_grad(&x_values[row * d..][..d], &w_values, g, out_row);
            })
        })
    })??;
    Ok(Tensor::from_vec(out, (batch, n, pos, d), grads.device())?)
}

/// `f` of `t`'s values in row-major order: borrowed where `t` is a contiguous f32
/// tensor on the host ([`fused::with_values`]), read out (a copy) otherwise.
fn with_host_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        return fused::with_values(t, |values| Ok(f(values)));
    }
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(f(&values))
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
        if !hooks.touches(scale_point) && !hooks.touches(normalized_point) {
            if let Some(out) = fused::rms_norm(x, &self.weight, self.eps)? {
                return Ok(out);
            }
            if let Some(out) = grad::rms_norm(x, &self.weight, self.eps)? {
                return Ok(out);
            }
        }
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        let scale = hooks.at(scale_point, scale)?; // [batch, pos, 1]
        let normalized = hooks.at(normalized_point, x.broadcast_div(&scale)?)?;
        Ok(normalized.broadcast_mul(&self.weight)?)
    }
}

/// Rows of an embedding table: tokens `[batch, pos]` → `[batch, pos, d_model]`.
pub fn embed_rows(table: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (batch, pos) = tokens.dims2()?;
    Ok(table
        .index_select(&tokens.flatten_all()?, 0)?
        .reshape((batch, pos, table.dim(1)?))?)
}

/// `a + b` (equal shapes: residual stream additions).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match fused::add(a, b)? {
        Some(sum) => Ok(sum),
        None => Ok((a + b)?),
    }
}

/// The tanh approximation of GELU (GPT-2's `gelu_new`, `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if let Some(out) = fused::gelu_tanh(x)? {
        return Ok(out);
    }
    match grad::gelu_tanh(x)? {
        Some(out) => Ok(out),
        None => Ok(x.gelu()?),
    }
}

/// A gated MLP's `act(gate) · up`.
pub fn gated(gate: &Tensor, up: &Tensor, act: Gate) -> Result<Tensor> {
    if let Some(out) = fused::gated(gate, up, act)? {
        return Ok(out);
    }
    if act == Gate::Silu {
        if let Some(out) = grad::silu_times(gate, up)? {
            return Ok(out);
        }
    }
    let activated = match act {
        Gate::Silu => gate.silu()?,
        Gate::GeluTanh => gate.gelu()?,
    };
    Ok((activated * up)?)
}
