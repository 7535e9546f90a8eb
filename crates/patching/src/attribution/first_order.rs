//! First-order estimates per cell: (a_source − a_target) · ∂(logit diff)/∂a, summed over
//! the elements a cell patches (Nanda 2022; Kramár et al. 2024, eq. 4, "AtP").

use actpatch_hooks::Layout;
use candle_core::{Tensor, D};

use crate::{CellAxes, CellIndex, PatchKind, Result};

/// A kind's estimates for one layer, one value per batch row of the gradient pass and
/// per cell: `[rows, pos]`, `[rows, pos, head]`, `[rows, head]` or
/// `[rows, head, dest, src]` by the kind's [`CellAxes`].
pub(crate) struct Dense {
    values: Vec<f32>,
    dims: Vec<usize>,
}

impl Dense {
    pub fn new(tensor: &Tensor) -> Result<Dense> {
        Ok(Dense {
            dims: tensor.dims().to_vec(),
            values: tensor.flatten_all()?.to_vec1::<f32>()?,
        })
    }

    pub fn rows(&self) -> usize {
        self.dims[0]
    }

    /// Row `row`'s value of `cell`.
    pub fn get(&self, row: usize, kind: PatchKind, cell: &CellIndex) -> f64 {
        let at = coordinates(kind, cell);
        let mut index = row;
        for (axis, i) in at.iter().enumerate() {
            index = index * self.dims[axis + 1] + i;
        }
        self.values[index] as f64
    }
}

/// A cell's coordinates in its kind's [`Dense`] layout (after the row).
fn coordinates(kind: PatchKind, cell: &CellIndex) -> Vec<usize> {
    let (pos, head) = (cell.position.unwrap_or(0), cell.head.unwrap_or(0));
    match kind.axes() {
        CellAxes::Position => vec![pos],
        CellAxes::HeadPosition => vec![pos, head],
        CellAxes::Head => vec![head],
        CellAxes::HeadDestSrc => vec![head, pos, cell.src.unwrap_or(0)],
    }
}

/// The AtP estimates of `kind` in one layer: `difference` `[1, ...]` (source − target,
/// zero at positions that receive nothing) times `grad` `[rows, ...]`, summed per cell.
pub(crate) fn linear(kind: PatchKind, difference: &Tensor, grad: &Tensor) -> Result<Dense> {
    let product = grad.broadcast_mul(difference)?; // [rows, ...]
    let per_cell = match (kind.site().layout(), kind.axes()) {
        (Layout::BatchPos, _) => product.sum(D::Minus1)?, // [rows, pos]
        (Layout::BatchPosHead, CellAxes::Head) => product.sum(D::Minus1)?.sum(1)?, // [rows, head]
        (Layout::BatchPosHead, _) => product.sum(D::Minus1)?, // [rows, pos, head]
        (Layout::BatchHeadQueryKey, CellAxes::HeadDestSrc) => product, // [rows, head, dest, src]
        (Layout::BatchHeadQueryKey, _) => product.sum(D::Minus1)?.sum(D::Minus1)?, // [rows, head]
    };
    Dense::new(&per_cell)
}
