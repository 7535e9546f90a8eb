//! The naive exact sweep: one full forward pass of the target prompt per cell, many
//! cells per batch (one per row). What TransformerLens's `patching` module computes;
//! the reference the fast sweep is checked against.

use actpatch_hooks::{Cell, HookPoint, Patch, PatchValue};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::fast::SweepBatch;
use crate::{CellIndex, CellResult, DirectedPair, Method, PatchKind, Result};

/// Sweeps `kind` over `cells`, `max_rows` cells per forward pass, calling `progress`
/// with the number of cells finished after each pass.
pub fn sweep(
    model: &HookedTransformer,
    pair: &DirectedPair,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>> {
    let results = sweep_selected(model, pair, (kind, cells), (max_rows, &|_| true), progress)?;
    Ok(results.into_iter().flatten().collect())
}

/// The batches [`sweep`] runs `cells` in: chunks of `max_rows` cells, each costing
/// a full pass (rows × positions × layers).
pub fn batches(
    model: &HookedTransformer,
    pair: &DirectedPair,
    cells: &[CellIndex],
    max_rows: usize,
) -> Vec<SweepBatch> {
    let per_row = (model.dims().n_layers * pair.target_tokens.len()).max(1) as u64;
    cells
        .chunks(max_rows.max(1))
        .map(|chunk| SweepBatch {
            cells: chunk.len(),
            cost: chunk.len() as u64 * per_row,
        })
        .collect()
}

/// [`sweep`] of the batches (numbered as [`batches`]) that `keep` selects; `None` for
/// the cells of the others.
pub(crate) fn sweep_selected(
    model: &HookedTransformer,
    pair: &DirectedPair,
    (kind, cells): (PatchKind, &[CellIndex]),
    (max_rows, keep): (usize, &dyn Fn(usize) -> bool),
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Option<CellResult>>> {
    let n_layers = model.dims().n_layers;
    let sources: Vec<Tensor> = (0..n_layers)
        .map(|l| pair.aligned_source(HookPoint::block(l, kind.site())))
        .collect::<Result<_>>()?;
    let mut results = Vec::with_capacity(cells.len());
    for (batch, chunk) in cells.chunks(max_rows.max(1)).enumerate() {
        if !keep(batch) {
            results.extend(chunk.iter().map(|_| None));
            continue;
        }
        let patches = chunk_patches(pair, kind, chunk, &sources);
        let rows = vec![pair.target_tokens.to_vec(); chunk.len()];
        let metrics = pair.scorer.score_run(model, &rows, &patches)?;
        results.extend(chunk.iter().zip(metrics).map(|(index, metrics)| {
            Some(CellResult {
                direction: pair.direction,
                kind,
                method: Method::Exact,
                index: *index,
                metrics,
            })
        }));
        progress(chunk.len());
    }
    Ok(results)
}

/// One patch per layer present in `chunk`, listing its rows' cells.
fn chunk_patches(
    pair: &DirectedPair,
    kind: PatchKind,
    chunk: &[CellIndex],
    sources: &[Tensor],
) -> Vec<Patch> {
    let patched_positions = pair.map.patched_positions();
    let mut per_layer: Vec<Vec<Cell>> = vec![Vec::new(); sources.len()];
    for (row, cell) in chunk.iter().enumerate() {
        let positions: Vec<Option<usize>> = match cell.position {
            Some(p) => vec![Some(p)],
            None if pair.map.is_identity() => vec![None],
            None => patched_positions.iter().map(|p| Some(*p)).collect(),
        };
        per_layer[cell.layer].extend(positions.into_iter().map(|position| Cell {
            row,
            position,
            head: cell.head,
            key: cell.src,
        }));
    }
    per_layer
        .into_iter()
        .enumerate()
        .filter(|(_, cells)| !cells.is_empty())
        .map(|(layer, cells)| {
            Patch::at_cells(
                HookPoint::block(layer, kind.site()),
                PatchValue::Replace(sources[layer].clone()),
                cells,
            )
        })
        .collect()
}
