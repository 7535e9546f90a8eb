//! `x @ weight + bias` by a constant weight, whose backward pass computes the gradient
//! of `x` only. candle's own matmul backward also computes the weight's gradient (a
//! weight-sized product, a weight-sized buffer of zeros and a weight-sized sum per
//! linear map, for a weight nothing asks the gradient of): for a few prompt positions
//! that is most of a gradient pass's work. Both directions stream the weight where it
//! lies ([`crate::fused::matmul`]).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::{applies, constant, values};
use crate::fused::matmul::{product_few_rows, product_transposed, with_weight};
use crate::Result;

/// `[rows, in] @ weight [in, out] (+ bias [out])` with a backward pass to the input only.
struct FrozenLinear {
    weight: Tensor, // [in, out]
    bias: Option<Vec<f32>>,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "linear-frozen-weight"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, _) = layout.shape().dims2()?;
        let (_, d_out) = self.weight.dims2()?;
        let x = values(storage, layout)?;
        let Some(out) = with_weight(&self.weight, |w| {
            product_few_rows(x, w, self.bias.as_deref())
        })?
        else {
            candle_core::bail!("linear-frozen-weight: the weight is not on the CPU");
        };
        Ok((CpuStorage::F32(out), Shape::from((rows, d_out))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (rows, _) = grad_out.dims2()?;
        let (d_in, _) = self.weight.dims2()?;
        let grad = grad_out.contiguous()?.flatten_all()?.to_vec1::<f32>()?; // [rows, out]
        let Some(grad_in) = with_weight(&self.weight, |w| product_transposed(&grad, w))? else {
            return Ok(Some(grad_out.matmul(&self.weight.t()?)?));
        };
        Ok(Some(Tensor::from_vec(
            grad_in,
            (rows, d_in),
            grad_out.device(),
        )?)) // [rows, in]
    }
}

/// `x` `[rows, in]` @ `weight` `[in, out]` (+ `bias` `[out]`) → `[rows, out]`, when a
/// gradient is taken through `x` on the CPU (f32); `None` otherwise.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !applies(x) || !weight.device().is_cpu() || weight.dtype() != x.dtype() {
        return Ok(None);
    }
    let (_, d_in) = x.dims2()?;
    let (w_in, d_out) = weight.dims2()?;
    if d_in != w_in || bias.is_some_and(|b| b.elem_count() != d_out) {
        return Ok(None); // the plain path reports the shape error
    }
    let op = FrozenLinear {
        weight: weight.clone(),
        bias: bias.map(constant).transpose()?,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}
