//! Fast exact sweeps: the same numbers as [`crate::sweep::sweep`], computing only what
//! a patch can change.
//!
//! - A patch at layer L leaves layers before L unchanged: each patched run starts at
//!   block L from the corrupted run's cached residual stream.
//! - Attention is causal: positions before the first patched position are unchanged
//!   in every layer. Only positions from there on are run; the keys and values of
//!   the earlier ones come from the corrupted cache.
//! - A cell whose clean and corrupted activations are equal (e.g. a shared prefix)
//!   cannot change anything: it gets the corrupted run's metrics without a pass.
//! - Cells starting at the same position run together, layer by layer: a batch row
//!   joins when the sweep reaches its layer, so each block runs once per layer for
//!   all of them.

use std::collections::BTreeMap;

use actpatch_hooks::{BlockSite, HookPoint, Layout};
use actpatch_metrics::cell_metrics;
use actpatch_model::{BaseRun, HookedTransformer};
use candle_core::{Tensor, D};

use crate::experiment::MetricSet;
use crate::fast_chunk::{Job, StartGroup};
use crate::sweep::{aligned_source, CellIndex, CellResult, PairSweep, PatchKind};
use crate::RunnerError;

/// Runs the corrupted prompt once, caching what partial passes continue from and the
/// sites of `kinds`.
pub fn corrupted_run(
    model: &HookedTransformer,
    tokens: &[u32],
    kinds: &[PatchKind],
) -> Result<BaseRun, RunnerError> {
    let n_layers = model.dims().n_layers;
    let points = kinds
        .iter()
        .flat_map(|k| (0..n_layers).map(move |l| HookPoint::block(l, k.site())));
    Ok(model.base_run(tokens, points)?)
}

/// Where a cell's patched run starts, or that it cannot change anything.
#[derive(Debug, Clone, PartialEq)]
enum CellPlan {
    NoOp,
    /// First position that changes, and the absolute positions patched.
    From {
        start: usize,
        positions: Vec<usize>,
    },
}

/// For one layer, which (position, head) entries differ between the clean source
/// and the corrupted activation: `differs[pos][head]` (one head column without a
/// head axis).
fn differences(
    source: &Tensor,
    corrupted: &Tensor,
    layout: Layout,
) -> Result<Vec<Vec<bool>>, RunnerError> {
    let gap = (source - corrupted)?.abs()?.squeeze(0)?;
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

fn plan_cell(cell: &CellIndex, differs: &[Vec<bool>], patched: &[usize]) -> CellPlan {
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

/// `[1, pos, ...]` (or `[1, head, query_pos, key_pos]`) narrowed to positions
/// `start..start + len` (query positions for patterns).
fn suffix_of(
    tensor: &Tensor,
    layout: Layout,
    start: usize,
    len: usize,
) -> Result<Tensor, RunnerError> {
    let axis = if layout == Layout::BatchHeadQueryKey {
        2
    } else {
        1
    };
    Ok(tensor.narrow(axis, start, len)?)
}

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

/// Fewest cells a batch should hold: smaller start groups are merged into the
/// next ones, running from the earliest start (recomputing a few unchanged positions
/// buys matrix products large enough to run near the machine's peak).
const MIN_GROUP_CELLS: usize = 48;

/// A cell to run: its index among the sweep's cells, and the positions it patches.
type Planned = (usize, Vec<usize>);
/// Planned cells by the position their runs start at.
type StartGroups = BTreeMap<usize, Vec<Planned>>;

fn merge_small_groups(by_start: StartGroups) -> StartGroups {
    let mut merged = StartGroups::new();
    let mut open: Option<(usize, Vec<Planned>)> = None;
    for (start, cells) in by_start {
        let (first, mut acc) = open.take().unwrap_or((start, Vec::new()));
        acc.extend(cells);
        if acc.len() >= MIN_GROUP_CELLS {
            merged.insert(first, acc);
        } else {
            open = Some((first, acc));
        }
    }
    if let Some((first, acc)) = open {
        merged.insert(first, acc);
    }
    merged
}

/// The fast sweep of `kind` over `cells`, at most `max_rows` rows per batch.
pub fn sweep_fast(
    model: &HookedTransformer,
    pair: &PairSweep,
    corrupted: &BaseRun,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<CellResult>, RunnerError> {
    let mut work = SweepWork::default();
    sweep_fast_counted(
        model, pair, corrupted, kind, cells, max_rows, progress, &mut work,
    )
}

/// [`sweep_fast`], adding what it computed to `work`.
#[allow(clippy::too_many_arguments)]
pub fn sweep_fast_counted(
    model: &HookedTransformer,
    pair: &PairSweep,
    corrupted: &BaseRun,
    kind: PatchKind,
    cells: &[CellIndex],
    max_rows: usize,
    progress: &mut dyn FnMut(usize),
    work: &mut SweepWork,
) -> Result<Vec<CellResult>, RunnerError> {
    let dims = model.dims();
    let n_layers = dims.n_layers;
    let n_pos = pair.corrupted_tokens.len();
    let site = kind.site();
    let layout = HookPoint::block(0, site).layout();
    let patched = pair.map.patched_positions();

    let mut sources = Vec::with_capacity(n_layers);
    let mut differs = Vec::with_capacity(n_layers);
    for layer in 0..n_layers {
        let point = HookPoint::block(layer, site);
        let source = aligned_source(point, pair.clean_cache, pair.map)?; // [1, pos, ...]
        differs.push(differences(&source, corrupted.cache().get(point)?, layout)?);
        sources.push(source);
    }

    let mut noop = cell_metrics(
        corrupted.logits(),
        pair.answers,
        &pair.baseline,
        pair.clean_log_probs,
    )?[0];
    if pair.metrics == MetricSet::LogitDiff {
        (noop.prob_correct, noop.kl_div, noop.logprob_diff) = (None, None, noop.logit_diff);
    }
    let mut results: Vec<Option<CellResult>> = vec![None; cells.len()];
    // Cells by the position their run starts at; within a start, in layer order.
    let mut by_start = StartGroups::new();
    for (i, cell) in cells.iter().enumerate() {
        let mut plan = plan_cell(cell, &differs[cell.layer], &patched);
        if let CellPlan::From { positions, .. } = &plan {
            let unread = cell.layer + 1 == n_layers
                && !model.site_feeds_keys_values(site)
                && positions.iter().all(|p| p + 1 < n_pos);
            if unread {
                plan = CellPlan::NoOp;
            }
        }
        match plan {
            CellPlan::NoOp => {
                results[i] = Some(CellResult {
                    kind,
                    index: *cell,
                    metrics: noop,
                })
            }
            CellPlan::From { start, positions } => {
                by_start.entry(start).or_default().push((i, positions))
            }
        }
    }
    let n_noop = results.iter().filter(|r| r.is_some()).count();
    work.noop_cells += n_noop;
    if n_noop > 0 {
        progress(n_noop);
    }

    let single_position = kind.by_position() && site != BlockSite::ResidPre;
    for (start, mut group) in merge_small_groups(by_start) {
        group.sort_by_key(|(i, _)| cells[*i].layer);
        let len = n_pos - start;
        let group_inputs = StartGroup {
            model,
            corrupted,
            site,
            start,
            len,
            span: model.span(corrupted, start, len)?,
            sources: sources
                .iter()
                .map(|s| suffix_of(s, layout, start, len))
                .collect::<Result<_, _>>()?,
            single_position,
        };
        for chunk in group.chunks(max_rows.max(1)) {
            let jobs: Vec<Job> = chunk
                .iter()
                .map(|(i, positions)| Job {
                    layer: cells[*i].layer,
                    head: cells[*i].head,
                    positions: positions.clone(),
                })
                .collect();
            let (resid, rows) = group_inputs.run(&jobs, work)?; // [rows, 1, d_model]
            if pair.metrics == MetricSet::All {
                work.rows_unembedded += rows.len();
            }
            let metrics = pair.metrics_of(model, &resid)?;
            for (job, metrics) in rows.into_iter().zip(metrics) {
                let i = chunk[job].0;
                results[i] = Some(CellResult {
                    kind,
                    index: cells[i],
                    metrics,
                });
            }
            progress(chunk.len());
        }
    }
    results
        .into_iter()
        .zip(cells)
        .map(|(r, cell)| {
            r.ok_or_else(|| {
                RunnerError::Input(format!(
                    "internal: cell {cell:?} of {kind} was not computed"
                ))
            })
        })
        .collect()
}
