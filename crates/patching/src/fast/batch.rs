//! One batch of a fast sweep: pieces of several start groups run side by side, layer
//! by layer. In each layer the rows without a patch there — all of them but those
//! joining at a site inside the block — run as one pass of the model
//! ([`HookedTransformer::run_block_spans`]): one matrix product for the positions of
//! every start, attention per start. Rows patched inside this layer's block run per
//! group with their patches.

use actpatch_hooks::Hooks;
use actpatch_model::{HookedTransformer, Span};
use candle_core::Tensor;

use crate::fast::group::{Batch, StartGroup};
use crate::fast::plan::{Job, SweepWork};
use crate::fast::single::{self, Single};
use crate::Result;

/// Runs each group's `jobs` (in layer order) to the end of the model. Returns the
/// final position's residual stream of every row `[rows, 1, d_model]`, and each row's
/// (piece, job) indices.
pub(crate) fn run(
    model: &HookedTransformer,
    pieces: &[(&StartGroup, Vec<Job>)],
    work: &mut SweepWork,
) -> Result<(Tensor, Vec<(usize, usize)>)> {
    let n_layers = model.dims().n_layers;
    let first = (pieces.iter())
        .flat_map(|(_, jobs)| jobs.iter().map(|j| j.layer))
        .min()
        .unwrap_or(n_layers);
    let mut batches: Vec<Batch> = pieces.iter().map(|_| Batch::default()).collect();
    for layer in first..n_layers {
        let last = layer + 1 == n_layers;
        let mut unpatched: Vec<(usize, Tensor)> = Vec::new();
        let mut singles = Vec::new();
        for (i, ((group, jobs), batch)) in pieces.iter().zip(&mut batches).enumerate() {
            let entered = group.enter(layer, jobs, batch)?;
            singles.extend(entered.singles.into_iter().map(|(position, ids)| Single {
                piece: i,
                position,
                ids,
            }));
            let Some(rows) = batch.resid.take() else {
                continue;
            };
            if entered.cells.is_empty() {
                unpatched.push((i, rows));
            } else {
                let patches = group.patch(layer, entered.cells);
                batch.resid = Some(group.full_block(layer, rows, &patches, work)?);
            }
        }
        single::run(model, layer, singles, pieces, &mut batches, work)?;
        if unpatched.is_empty() {
            continue;
        }
        let parts: Vec<(Tensor, &Span)> = (unpatched.iter())
            .map(|(i, rows)| (rows.clone(), &pieces[*i].0.span))
            .collect();
        for (i, rows) in &unpatched {
            let group = pieces[*i].0;
            match last {
                true => group.count_last_block(rows.dim(0)?, work),
                false => group.count_block(rows.dim(0)?, work),
            }
        }
        let out = match last {
            true => model.run_block_final_spans(layer, parts)?,
            false => model.run_block_spans(layer, parts, &mut Hooks::none())?,
        };
        for ((i, _), rows) in unpatched.iter().zip(out) {
            batches[*i].resid = Some(rows);
        }
    }
    let mut finals = Vec::new();
    let mut ids = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let (rows, jobs) = batch.into_final()?;
        finals.push(rows);
        ids.extend(jobs.into_iter().map(|j| (i, j)));
    }
    Ok((Tensor::cat(&finals, 0)?, ids))
}
