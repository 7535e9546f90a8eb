//! Cells: one patched run each, indexed by layer, head and position — the rows of the
//! result tables.

use actpatch_hooks::HookPoint;
use actpatch_metrics::CellMetrics;
use actpatch_model::ModelDims;

use crate::{CellAxes, Direction, Method, PatchKind};

/// One patched cell's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellIndex {
    pub layer: usize,
    pub head: Option<usize>,
    /// Target-run position; `None` = every patched position. For an attention-pattern
    /// entry, the destination (query) position.
    pub position: Option<usize>,
    /// The source (key) position of an attention-pattern entry; `None` for every other
    /// kind.
    pub src: Option<usize>,
}

/// One cell's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellResult {
    pub direction: Direction,
    pub kind: PatchKind,
    /// Exact, or the approximation that estimated it.
    pub method: Method,
    pub index: CellIndex,
    pub metrics: CellMetrics,
}

/// The cells a sweep of `kind` patches at the target `positions`, in table order
/// (layer, then head, then position).
pub fn cells_of(kind: PatchKind, dims: &ModelDims, positions: &[usize]) -> Vec<CellIndex> {
    let heads = kind.n_heads(dims);
    let mut cells = Vec::new();
    for layer in 0..dims.n_layers {
        let cell = |head, position| CellIndex {
            layer,
            head,
            position,
            src: None,
        };
        match kind.axes() {
            CellAxes::Position => cells.extend(positions.iter().map(|p| cell(None, Some(*p)))),
            CellAxes::Head => cells.extend((0..heads).map(|h| cell(Some(h), None))),
            CellAxes::HeadPosition => {
                for head in 0..heads {
                    cells.extend(positions.iter().map(|p| cell(Some(head), Some(*p))));
                }
            }
            CellAxes::HeadDestSrc => {
                for head in 0..heads {
                    for dest in positions {
                        cells.extend((0..=*dest).map(|src| CellIndex {
                            src: Some(src),
                            ..cell(Some(head), Some(*dest))
                        }));
                    }
                }
            }
        }
    }
    cells
}

/// The hook points a sweep of `kinds` patches (what the source run must cache).
pub fn hook_points(kinds: &[PatchKind], n_layers: usize) -> Vec<HookPoint> {
    kinds
        .iter()
        .flat_map(|k| (0..n_layers).map(move |l| HookPoint::block(l, k.site())))
        .collect()
}

/// Rows per forward pass under a memory budget, from the activations one row holds.
pub fn rows_for_budget(dims: &ModelDims, n_pos: usize, budget_bytes: usize) -> usize {
    let per_pos = 16 * dims.d_model + 3 * dims.d_mlp + 3 * dims.n_heads * n_pos;
    let per_row = 4 * (n_pos * per_pos + 3 * dims.d_vocab);
    (budget_bytes / per_row.max(1)).clamp(1, 512)
}
