//! `x @ weight` by a constant weight, as a candle custom op whose backward pass
//! computes the gradient of `x` only. candle's own matmul backward also computes the
//! weight's gradient (a weight-sized product, a weight-sized buffer of zeros and a
//! weight-sized sum per linear map, for a weight nothing asks the gradient of): for a
//! few prompt positions that is most of a gradient pass's work.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::Result;

/// `[rows, in] @ weight [in, out]` with a backward pass to the input only.
struct FrozenWeight {
    weight: Tensor, // [in, out]
}

impl CustomOp1 for FrozenWeight {
    fn name(&self) -> &'static str {
        "matmul-frozen-weight"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, d_in) = layout.shape().dims2()?;
        let (_, d_out) = self.weight.dims2()?;
        let (weight, weight_layout) = self.weight.storage_and_layout();
        let Storage::Cpu(weight) = &*weight else {
            candle_core::bail!("matmul-frozen-weight: the weight is not on the CPU");
        };
        // The same product `Tensor::matmul` computes: bit for bit the same numbers.
        let out = storage.matmul(weight, (1, rows, d_out, d_in), layout, weight_layout)?;
        Ok((out, Shape::from((rows, d_out))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_out.matmul(&self.weight.t()?)?)) // [rows, in]
    }
}

/// `x` `[rows, in]` @ `weight` `[in, out]` → `[rows, out]`. When gradients are taken
/// through `x` on the CPU, the backward pass skips the weight's gradient; otherwise a
/// plain matmul.
pub(crate) fn matmul_frozen(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.track_op() && x.device().is_cpu() {
        let weight = weight.clone();
        return Ok(x.apply_op1(FrozenWeight { weight })?);
    }
    Ok(x.matmul(weight)?)
}
