//! Single-position jobs: a patch at one position of a site after the block input
//! (`attn_out`, `mlp_out`, a head's `z`, …) changes only that position in its own
//! layer, so that layer runs for the one position, and the row joins its group's batch
//! at the next layer (or finishes, in the last layer).
//!
//! The single-position jobs of every group of a batch that join at one layer run as
//! one pass ([`HookedTransformer::run_block_spans`]), their patches addressed in the
//! pass's flattened rows; patterns, which that pass cannot hook, run per position.

use actpatch_hooks::{Cell, HookPoint, Hooks, Layout, Patch, PatchValue};
use actpatch_model::{HookedTransformer, Span};
use candle_core::Tensor;

use crate::fast::group::{Batch, StartGroup};
use crate::fast::plan::{Job, SweepWork};
use crate::Result;

/// The jobs `ids` of piece `piece` that patch `position` in this layer.
pub(crate) struct Single {
    pub piece: usize,
    pub position: usize,
    pub ids: Vec<usize>,
}

/// Runs `singles` in block `layer` at their positions, patched there, and puts each
/// row where its group's batch continues from (`batches[piece]`).
pub(crate) fn run(
    model: &HookedTransformer,
    layer: usize,
    singles: Vec<Single>,
    pieces: &[(&StartGroup, Vec<Job>)],
    batches: &mut [Batch],
    work: &mut SweepWork,
) -> Result<()> {
    if singles.is_empty() {
        return Ok(());
    }
    for single in &singles {
        work.block_row_positions += single.ids.len();
        work.attention_row_position_keys += single.ids.len() * (single.position + 1);
    }
    let site = pieces[singles[0].piece].0.site;
    let outs = match HookPoint::block(layer, site).layout() {
        Layout::BatchHeadQueryKey => (singles.iter())
            .map(|s| {
                let (group, jobs) = &pieces[s.piece];
                one_position(group, layer, s.position, &s.ids, jobs)
            })
            .collect::<Result<Vec<_>>>()?,
        _ => together(model, layer, &singles, pieces)?,
    };
    let last = model.dims().n_layers - 1;
    for (single, out) in singles.into_iter().zip(outs) {
        let (group, _) = &pieces[single.piece];
        let batch = &mut batches[single.piece];
        if layer == last {
            batch.finished.push((out, single.ids));
        } else {
            let rows = group.rows_with(layer + 1, single.position, out)?;
            batch.pending.push((rows, single.ids));
        }
    }
    Ok(())
}

/// The source at `position` of `group`'s site in `layer`: `[1, 1, …]` (for a pattern,
/// `[1, head, 1, position + 1]`: the keys of that query).
fn source_at(group: &StartGroup, layer: usize, position: usize) -> Result<Tensor> {
    let axis = group.position_axis();
    let source = group.sources[layer].narrow(axis, position - group.start(), 1)?;
    Ok(match axis {
        2 => source.narrow(3, 0, position + 1)?,
        _ => source,
    })
}

/// Block `layer` at the one position `position`, patched there, for the jobs `ids`:
/// `[n, 1, d_model]`, the rest of the prompt read from the target run.
fn one_position(
    group: &StartGroup,
    layer: usize,
    position: usize,
    ids: &[usize],
    jobs: &[Job],
) -> Result<Tensor> {
    let cells = (ids.iter().enumerate())
        .map(|(row, j)| Cell {
            row,
            position: Some(0),
            head: jobs[*j].head,
            key: jobs[*j].key,
        })
        .collect();
    let patches = group.patch_with(layer, source_at(group, layer, position)?, cells);
    let rows = group.target.resid_pre(layer, position, 1, ids.len())?;
    let span = group.model.span(group.target, position, 1)?;
    Ok(group
        .model
        .run_block(layer, rows, &span, &mut Hooks::patching(&patches))?)
}

/// Every single of one layer in one pass: `[n, 1, d_model]` each.
fn together(
    model: &HookedTransformer,
    layer: usize,
    singles: &[Single],
    pieces: &[(&StartGroup, Vec<Job>)],
) -> Result<Vec<Tensor>> {
    let mut spans: Vec<Span> = Vec::with_capacity(singles.len());
    let mut rows = Vec::with_capacity(singles.len());
    let mut sources = Vec::with_capacity(singles.len());
    let mut cells = Vec::new();
    for single in singles {
        let (group, jobs) = &pieces[single.piece];
        let n = single.ids.len();
        spans.push(model.span(group.target, single.position, 1)?);
        rows.push(group.target.resid_pre(layer, single.position, 1, n)?);
        let source = source_at(group, layer, single.position)?; // [1, 1, …]
        let mut shape = source.dims().to_vec();
        shape[1] = n;
        sources.push(source.broadcast_as(shape)?);
        // The pass's rows are the singles' rows one after another, as positions of one row.
        let first = cells.len();
        cells.extend(single.ids.iter().enumerate().map(|(k, j)| Cell {
            row: 0,
            position: Some(first + k),
            head: jobs[*j].head,
            key: jobs[*j].key,
        }));
    }
    let site = pieces[singles[0].piece].0.site;
    let patch = Patch::at_cells(
        HookPoint::block(layer, site),
        PatchValue::Replace(Tensor::cat(&sources, 1)?), // [1, Σ n, …]
        cells,
    );
    let parts = rows.into_iter().zip(&spans).collect();
    Ok(model.run_block_spans(layer, parts, &mut Hooks::patching(&[patch]))?)
}
