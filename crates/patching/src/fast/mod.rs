//! The fast exact sweep: the numbers of [`crate::naive`], computing only what a patch
//! can change.
//!
//! - A patch at layer L leaves layers before L unchanged: each patched run starts at
//!   block L from the target run's cached residual stream.
//! - Attention is causal: positions before the first patched position are unchanged
//!   in every layer. Only positions from there on are run; the keys and values of the
//!   earlier ones come from the target run ([`actpatch_model::partial`]).
//! - A cell whose source and target activations are equal (e.g. a shared prefix)
//!   cannot change anything: it gets the target run's metrics without a pass. So does
//!   a last-layer cell at a site after the keys and values and not at the final
//!   position: nothing of it reaches the next-token logits.
//! - Cells run together, layer by layer: a batch row joins when the sweep reaches its
//!   layer, so each block runs once per layer for all of them. Cells that start at
//!   different positions share that pass too ([`batch`]): one matrix product for all
//!   their positions, attention per start position.

mod batch;
mod group;
mod plan;
mod single;

use actpatch_hooks::{BlockSite, HookPoint, Layout};
use actpatch_metrics::CellMetrics;
use actpatch_model::{BaseRun, HookedTransformer};
use candle_core::Tensor;

use crate::cells::hook_points;
use crate::{
    CellIndex, CellResult, DirectedPair, Method, MetricSet, PatchKind, PatchingError, Result,
};
use group::StartGroup;
pub use plan::SweepWork;
use plan::{differences, plan_cell, CellPlan, Job, StartGroups};

/// Runs the target prompt once, caching what partial passes continue from and the
/// sites of `kinds` (to compare with the source run).
pub fn target_run(
    model: &HookedTransformer,
    pair: &DirectedPair,
    kinds: &[PatchKind],
) -> Result<BaseRun> {
    let points = hook_points(kinds, model.dims().n_layers);
    Ok(model.base_run(pair.target_tokens, points)?)
}

/// The fast sweep of `kind` over `cells`, at most `max_rows` rows per batch.
/// `target` is [`target_run`] of the same pair with `kind` among its kinds.
pub fn sweep(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>> {
    let mut work = SweepWork::default();
    sweep_counted(
        model,
        pair,
        target,
        (kind, cells),
        max_rows,
        progress,
        &mut work,
    )
}

/// [`sweep`], adding what it computed to `work`.
pub fn sweep_counted(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    (kind, cells): (PatchKind, &[CellIndex]),
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
    work: &mut SweepWork,
) -> Result<Vec<CellResult>> {
    let results = sweep_selected(
        model,
        pair,
        target,
        (kind, cells),
        (max_rows, &|_| true),
        progress,
        work,
    )?;
    collect(results, cells, kind)
}

/// The batches [`sweep`] runs `cells` in, in order, with their estimated costs:
/// batch 0 holds the cells that need no pass, then batches of at most `max_rows` rows
/// over the whole prompt (pieces of start groups, in start order, each row counting
/// the positions from its start on). A batch's results do not depend on the other
/// batches, so a sweep may be split between processes along them
/// ([`crate::PairSweeper::sweep_batches`]) with the numbers of one whole sweep.
pub fn batches(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
) -> Result<Vec<SweepBatch>> {
    let (_, groups, noop) = plan(model, pair, target, kind, cells)?;
    let (n_layers, n_pos) = (model.dims().n_layers, target.n_pos());
    let mut batches = vec![SweepBatch {
        cells: noop.len(),
        cost: 0,
    }];
    for pieces in batched(groups, n_pos, max_rows) {
        // Block work in (row, position) units: each row runs its span from its layer on.
        let cost = (pieces.iter())
            .flat_map(|(start, jobs)| {
                jobs.iter()
                    .map(move |job| ((n_layers - job.layer) * (n_pos - start)) as u64)
            })
            .sum::<u64>();
        batches.push(SweepBatch {
            cells: pieces.iter().map(|(_, jobs)| jobs.len()).sum(),
            cost: cost.max(1),
        });
    }
    Ok(batches)
}

/// One batch of a sweep: how many cells it holds, and its estimated cost (block work
/// in row × position units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepBatch {
    pub cells: usize,
    pub cost: u64,
}

/// The batches of the sweep after the no-op one, in order: each start group's jobs
/// sorted by layer and cut into pieces, the pieces of consecutive groups filling
/// batches of at most `max_rows · n_pos` row positions (a row of start `s` counts
/// `n_pos − s`).
fn batched(groups: StartGroups, n_pos: usize, max_rows: usize) -> Vec<Vec<(usize, Vec<Job>)>> {
    let budget = max_rows.max(1) * n_pos;
    let mut batches = Vec::new();
    let mut current: Vec<(usize, Vec<Job>)> = Vec::new();
    let mut used = 0;
    for (start, mut jobs) in groups {
        jobs.sort_by_key(|job| job.layer);
        let len = (n_pos - start).max(1);
        while !jobs.is_empty() {
            let room = (budget - used) / len;
            if room == 0 {
                batches.push(std::mem::take(&mut current));
                used = 0;
                continue;
            }
            let rest = jobs.split_off(jobs.len().min(room));
            used += jobs.len() * len;
            current.push((start, std::mem::replace(&mut jobs, rest)));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The fast sweep of the batches (numbered as [`batches`]) that `keep` selects: the
/// results of their cells, `None` for the others.
pub(crate) fn sweep_selected(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    (kind, cells): (PatchKind, &[CellIndex]),
    (max_rows, keep): (usize, &dyn Fn(usize) -> bool),
    progress: &mut dyn FnMut(usize),
    work: &mut SweepWork,
) -> Result<Vec<Option<CellResult>>> {
    let result = |index: CellIndex, metrics: CellMetrics| CellResult {
        direction: pair.direction,
        kind,
        method: Method::Exact,
        index,
        metrics,
    };
    let (sources, groups, noop) = plan(model, pair, target, kind, cells)?;
    let mut results: Vec<Option<CellResult>> = vec![None; cells.len()];
    if keep(0) {
        let unpatched = pair.scorer.score_logits(target.logits())?[0];
        for i in &noop {
            results[*i] = Some(result(cells[*i], unpatched));
        }
        work.noop_cells += noop.len();
        if !noop.is_empty() {
            progress(noop.len());
        }
    }
    let site = kind.site();
    // A patch at one position of a site that does not feed the layer's keys and values
    // changes that position alone in its own layer.
    let single_position = kind.by_position() && !model.site_feeds_keys_values(site);
    let n_pos = target.n_pos();
    let start_groups = (groups.keys())
        .map(|&start| {
            let group = StartGroup {
                model,
                target,
                site,
                sources: narrowed(&sources, site, start, n_pos - start)?,
                span: model.span(target, start, n_pos - start)?,
                single_position,
            };
            Ok((start, group))
        })
        .collect::<Result<std::collections::BTreeMap<usize, StartGroup>>>()?;
    for (number, pieces) in batched(groups, n_pos, max_rows).into_iter().enumerate() {
        if !keep(number + 1) {
            continue;
        }
        let pieces: Vec<(&StartGroup, Vec<Job>)> = (pieces.into_iter())
            .map(|(start, jobs)| (&start_groups[&start], jobs))
            .collect();
        let (resid, rows) = batch::run(model, &pieces, work)?; // [rows, 1, d_model]
        if pair.scorer.metrics == MetricSet::All {
            work.rows_unembedded += rows.len();
        }
        let metrics = pair.scorer.score_residual(model, &resid)?;
        for ((piece, job), metrics) in rows.into_iter().zip(metrics) {
            let i = pieces[piece].1[job].cell;
            results[i] = Some(result(cells[i], metrics));
        }
        progress(pieces.iter().map(|(_, jobs)| jobs.len()).sum());
    }
    Ok(results)
}

/// The aligned sources of every layer, the start groups of the cells that need a
/// run, and the cells that cannot change anything.
fn plan(
    model: &HookedTransformer,
    pair: &DirectedPair,
    target: &BaseRun,
    kind: PatchKind,
    cells: &[CellIndex],
) -> Result<(Vec<Tensor>, StartGroups, Vec<usize>)> {
    let n_layers = model.dims().n_layers;
    let n_pos = target.n_pos();
    let site = kind.site();
    let layout = HookPoint::block(0, site).layout();
    let patched = pair.map.patched_positions();
    let mut sources = Vec::with_capacity(n_layers);
    let mut differs = Vec::with_capacity(n_layers);
    for layer in 0..n_layers {
        let point = HookPoint::block(layer, site);
        let source = pair.aligned_source(point)?; // [1, pos, ...]
        differs.push(differences(&source, target.cache().get(point)?, layout)?);
        sources.push(source);
    }
    let unread_in_last_layer = !model.site_feeds_keys_values(site);
    let mut groups = StartGroups::new();
    let mut noop = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        match plan_cell(cell, &differs[cell.layer], &patched) {
            CellPlan::From { positions, .. }
                if unread_in_last_layer
                    && cell.layer + 1 == n_layers
                    && positions.iter().all(|p| p + 1 < n_pos) =>
            {
                noop.push(i)
            }
            CellPlan::NoOp => noop.push(i),
            CellPlan::From { start, positions } => groups.entry(start).or_default().push(Job {
                cell: i,
                layer: cell.layer,
                head: cell.head,
                positions,
                key: cell.src,
            }),
        }
    }
    Ok((sources, groups, noop))
}

/// Each layer's source narrowed to positions `start..start + len` (query positions
/// for patterns).
fn narrowed(sources: &[Tensor], site: BlockSite, start: usize, len: usize) -> Result<Vec<Tensor>> {
    let axis = match HookPoint::block(0, site).layout() {
        Layout::BatchHeadQueryKey => 2,
        _ => 1,
    };
    sources
        .iter()
        .map(|s| Ok(s.narrow(axis, start, len)?))
        .collect()
}

fn collect(
    results: Vec<Option<CellResult>>,
    cells: &[CellIndex],
    kind: PatchKind,
) -> Result<Vec<CellResult>> {
    results
        .into_iter()
        .zip(cells)
        .map(|(r, cell)| {
            r.ok_or_else(|| PatchingError::NotComputed {
                kind,
                cell: format!("{cell:?}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(layers: &[usize]) -> Vec<Job> {
        (layers.iter().enumerate())
            .map(|(cell, &layer)| Job {
                cell,
                layer,
                head: None,
                positions: vec![0],
                key: None,
            })
            .collect()
    }

    #[test]
    fn batches_fill_row_positions_across_start_groups() {
        // 8 positions, at most 2 rows of 8: 16 row positions per batch; a row from
        // start 2 counts 6, from start 5 counts 3.
        let groups: StartGroups = [(2, jobs(&[1, 0, 1, 0])), (5, jobs(&[3, 3, 3]))]
            .into_iter()
            .collect();
        let sizes: Vec<Vec<(usize, Vec<usize>)>> = (batched(groups, 8, 2).into_iter())
            .map(|pieces| {
                (pieces.into_iter())
                    .map(|(start, jobs)| (start, jobs.iter().map(|j| j.layer).collect()))
                    .collect()
            })
            .collect();
        assert_eq!(
            sizes,
            vec![
                vec![(2, vec![0, 0])],
                vec![(2, vec![1, 1]), (5, vec![3])],
                vec![(5, vec![3, 3])],
            ]
        );
    }
}
