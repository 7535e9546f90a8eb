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
//! - Cells starting at the same position run together, layer by layer: a batch row
//!   joins when the sweep reaches its layer, so each block runs once per layer for
//!   all of them. Start groups of fewer than 48 cells are merged with the next ones
//!   and run from the earliest start, for matrix products large enough to be fast.

mod group;
mod plan;

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
use plan::{differences, merge_small_groups, plan_cell, CellPlan, Job, StartGroups};

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
/// batch 0 holds the cells that need no pass, then each start group's chunks of at
/// most `max_rows` rows. A batch's results do not depend on the other batches, so a
/// sweep may be split between processes along them
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
    for (start, jobs) in chunked(groups, max_rows) {
        // Block work in (row, position) units: each row runs its span from its layer on.
        let cost = (jobs.iter())
            .map(|job| ((n_layers - job.layer) * (n_pos - start)) as u64)
            .sum::<u64>();
        batches.push(SweepBatch {
            cells: jobs.len(),
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

/// Each start group's jobs sorted by layer and cut into chunks of at most `max_rows`:
/// the batches of the sweep after the no-op one, in order.
fn chunked(groups: StartGroups, max_rows: usize) -> Vec<(usize, Vec<Job>)> {
    let mut chunks = Vec::new();
    for (start, mut jobs) in groups {
        jobs.sort_by_key(|job| job.layer);
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(max_rows.max(1)));
            chunks.push((start, std::mem::replace(&mut jobs, rest)));
        }
    }
    chunks
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
    let mut group: Option<StartGroup> = None;
    for (batch, (start, chunk)) in chunked(groups, max_rows).into_iter().enumerate() {
        if !keep(batch + 1) {
            continue;
        }
        if group.as_ref().is_none_or(|g| g.span.start() != start) {
            group = Some(StartGroup {
                model,
                target,
                site,
                sources: narrowed(&sources, site, start, n_pos - start)?,
                span: model.span(target, start, n_pos - start)?,
                single_position,
            });
        }
        let Some(group) = group.as_ref() else {
            continue;
        };
        let (resid, rows) = group.run(&chunk, work)?; // [rows, 1, d_model]
        if pair.scorer.metrics == MetricSet::All {
            work.rows_unembedded += rows.len();
        }
        let metrics = pair.scorer.score_residual(model, &resid)?;
        for (job, metrics) in rows.into_iter().zip(metrics) {
            let i = chunk[job].cell;
            results[i] = Some(result(cells[i], metrics));
        }
        progress(chunk.len());
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
    Ok((sources, merge_small_groups(groups), noop))
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
