//! Cell plans of the fast sweep: which cells cannot change anything, where the others'
//! runs start, and how they are grouped into batches.

use std::collections::BTreeMap;

use actpatch_hooks::Layout;
use candle_core::{Tensor, D};

use crate::{CellIndex, Result};

/// Where a cell's patched run starts, or that it cannot change anything.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellPlan {
    NoOp,
    /// First position that changes, and the absolute positions patched.
    From {
        start: usize,
        positions: Vec<usize>,
    },
}

/// A cell to run: its layer, head, and the absolute positions it patches.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Index among the sweep's cells.
    pub cell: usize,
    pub layer: usize,
    pub head: Option<usize>,
    pub positions: Vec<usize>,
    /// The key position of an attention-pattern entry.
    pub key: Option<usize>,
}

/// Jobs by the position their runs start at.
pub(crate) type StartGroups = BTreeMap<usize, Vec<Job>>;

/// What a fast sweep computed, for benchmarks: block work in (row, position) units
/// per block, rows unembedded, and cells answered without a pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepWork {
    /// Σ over block calls of rows × positions.
    pub block_row_positions: usize,
    /// Σ over block calls of rows × positions × key positions (attention).
    pub attention_row_position_keys: usize,
    pub rows_unembedded: usize,
    /// Σ of rows × positions whose keys and values alone were computed.
    pub kv_row_positions: usize,
    pub noop_cells: usize,
}

/// For one layer, which (position, head) entries differ between the source and the
/// target activation: `differs[pos][head]` (one head column without a head axis).
pub(crate) fn differences(
    source: &Tensor,
    target: &Tensor,
    layout: Layout,
) -> Result<Vec<Vec<bool>>> {
    let gap = (source - target)?.abs()?.squeeze(0)?;
    let gap = match layout {
        Layout::BatchPos => gap.max_keepdim(D::Minus1)?, // [pos, 1]
        Layout::BatchPosHead => gap.max(D::Minus1)?,     // [pos, head]
        Layout::BatchHeadQueryKey => gap.max(D::Minus1)?.t()?, // [query_pos, head]
    };
    let gap: Vec<Vec<f32>> = gap.to_vec2()?;
    Ok(gap
        .into_iter()
        .map(|row| row.into_iter().map(|g| g != 0.0).collect())
        .collect())
}

/// The plan of `cell` given which entries of its layer differ and which target
/// positions are patched at all.
pub(crate) fn plan_cell(cell: &CellIndex, differs: &[Vec<bool>], patched: &[usize]) -> CellPlan {
    let differs_at = |p: usize| match cell.head {
        Some(h) => differs[p].get(h).copied().unwrap_or(true),
        None => differs[p].iter().any(|d| *d),
    };
    let candidates: Vec<usize> = match cell.position {
        Some(p) => vec![p],
        None => patched.to_vec(),
    };
    match candidates.iter().copied().find(|p| differs_at(*p)) {
        None => CellPlan::NoOp,
        Some(start) => CellPlan::From {
            start,
            positions: candidates.into_iter().filter(|p| *p >= start).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_start_at_their_first_differing_position() {
        let differs = vec![vec![false], vec![false], vec![true], vec![false]];
        let all = CellIndex {
            layer: 0,
            head: None,
            position: None,
            src: None,
        };
        assert_eq!(
            plan_cell(&all, &differs, &[0, 1, 2, 3]),
            CellPlan::From {
                start: 2,
                positions: vec![2, 3]
            }
        );
        let shared = CellIndex {
            position: Some(1),
            ..all
        };
        assert_eq!(plan_cell(&shared, &differs, &[0, 1, 2, 3]), CellPlan::NoOp);
    }
}
