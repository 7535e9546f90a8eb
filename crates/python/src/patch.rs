//! One pair's patching grid for `Model.patch`: the command line's sweep of one kind in
//! one direction (the same passes, batches and metrics), laid out as a dense array.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    rows_for_budget, Align, CellAxes, CellResult, Direction, Execution, MetricSet, Pair, PairRuns,
    PairSweeper, PatchKind,
};
use pyo3::prelude::*;

use crate::{errors, worker};

/// Which metric a grid holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridMetric {
    LogitDiff,
    NormalizedLogitDiff,
    LogprobDiff,
    ProbCorrect,
    KlDiv,
}

const METRICS: &str = "logit_diff, normalized_logit_diff, logprob_diff, prob_correct, kl_div";

/// A parsed `Model.patch` request.
#[derive(Debug, Clone, Copy)]
pub struct PatchRequest {
    pub kind: PatchKind,
    pub align: Align,
    pub metric: GridMetric,
    pub direction: Direction,
}

impl PatchRequest {
    pub fn parse(kind: &str, metric: &str, direction: &str, align: &str) -> PyResult<Self> {
        let align = match align {
            "strict" => Align::Strict,
            "start" => Align::Start,
            "end" => Align::End,
            other => {
                return Err(errors::bad_input(format!(
                    "unknown align `{other}`: use `strict` (equal token lengths), `start` \
                     (position i into i) or `end` (the last tokens aligned)"
                )))
            }
        };
        let kind = PatchKind::from_name(kind).ok_or_else(|| {
            errors::bad_input(format!(
                "unknown patch kind `{kind}`: use one of {}",
                PatchKind::names()
            ))
        })?;
        if actpatch_patching::path::is_path(kind) {
            return Err(errors::bad_input(format!(
                "`{}` needs receivers: run path patching from an experiment file \
                 (actpatch.run) with [sweep] receivers",
                kind.name()
            )));
        }
        let metric = match metric {
            "logit_diff" => GridMetric::LogitDiff,
            "normalized_logit_diff" => GridMetric::NormalizedLogitDiff,
            "logprob_diff" => GridMetric::LogprobDiff,
            "prob_correct" => GridMetric::ProbCorrect,
            "kl_div" => GridMetric::KlDiv,
            other => {
                return Err(errors::bad_input(format!(
                    "unknown metric `{other}`: use one of {METRICS}"
                )))
            }
        };
        let direction = match Direction::from_name(direction) {
            Some(d) => d,
            None => {
                return Err(errors::bad_input(format!(
                    "unknown direction `{direction}`: use `denoising` (clean into corrupted) \
                     or `noising` (corrupted into clean); call patch once for each"
                )))
            }
        };
        Ok(PatchRequest {
            kind,
            align,
            metric,
            direction,
        })
    }

    /// The metrics the sweep must compute: the logit-difference columns only where
    /// they suffice.
    fn metric_set(&self) -> MetricSet {
        match self.metric {
            GridMetric::LogitDiff | GridMetric::NormalizedLogitDiff => MetricSet::LogitDiff,
            _ => MetricSet::All,
        }
    }

    fn value(&self, cell: &CellResult) -> f32 {
        let m = &cell.metrics;
        let value = match self.metric {
            GridMetric::LogitDiff => Some(m.logit_diff),
            GridMetric::NormalizedLogitDiff => Some(m.normalized_logit_diff),
            GridMetric::LogprobDiff => Some(m.logprob_diff),
            GridMetric::ProbCorrect => m.prob_correct,
            GridMetric::KlDiv => m.kl_div,
        };
        value.map_or(f32::NAN, |v| v as f32)
    }
}

/// A dense grid, row-major.
pub struct Grid {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

/// The shape of `kind`'s grid and the flat index of a cell in it.
struct Layout {
    shape: Vec<usize>,
    axes: CellAxes,
}

impl Layout {
    fn new(kind: PatchKind, model: &HookedTransformer, n_pos: usize) -> Self {
        let dims = model.dims();
        // Key and value kinds of a grouped-query model have its key/value heads.
        let (layers, heads) = (dims.n_layers, kind.n_heads(dims));
        let axes = kind.axes();
        let shape = match axes {
            CellAxes::Position => vec![layers, n_pos],
            CellAxes::Head => vec![layers, heads],
            // TransformerLens's order for `*_by_pos` grids.
            CellAxes::HeadPosition => vec![layers, n_pos, heads],
            CellAxes::HeadDestSrc => vec![layers, heads, n_pos, n_pos],
        };
        Layout { shape, axes }
    }

    fn index(&self, cell: &CellResult) -> Option<usize> {
        let i = &cell.index;
        let coords: Vec<usize> = match self.axes {
            CellAxes::Position => vec![i.layer, i.position?],
            CellAxes::Head => vec![i.layer, i.head?],
            CellAxes::HeadPosition => vec![i.layer, i.position?, i.head?],
            CellAxes::HeadDestSrc => vec![i.layer, i.head?, i.position?, i.src?],
        };
        let mut flat = 0;
        for (coord, extent) in coords.iter().zip(&self.shape) {
            if coord >= extent {
                return None;
            }
            flat = flat * extent + coord;
        }
        Some(flat)
    }
}

/// Sweeps `request.kind` over one pair with the GIL released (Ctrl-C stops it after
/// the batch under way) and lays the cells out as a grid.
pub fn patch_grid(
    py: Python<'_>,
    model: &HookedTransformer,
    (prompts, answers): (&[String; 2], [&String; 2]),
    request: PatchRequest,
    (positions, max_batch_mib): (Option<Vec<usize>>, usize),
) -> PyResult<Grid> {
    let stop = AtomicBool::new(false);
    let (done, total) = (AtomicU64::new(0), AtomicU64::new(0));
    let work = || -> PyResult<Grid> {
        let [clean, corrupted] = prompts;
        let pair = Pair::from_prompts(
            model,
            clean,
            corrupted,
            [answers[0].as_str(), answers[1].as_str()],
            request.align,
        )
        .map_err(errors::patching)?;
        let kinds = [request.kind];
        // One pass per prompt gives the baselines and what the sweep continues from, as
        // the command line's validation does.
        let runs = PairRuns::new(model, &pair.clean_tokens, &pair.corrupted_tokens, &kinds)
            .map_err(errors::patching)?;
        let baselines = runs.baselines(pair.answers).map_err(errors::patching)?;
        let sweeper = PairSweeper::with_runs(
            model,
            (&pair, &baselines, &runs),
            request.direction,
            &kinds,
            request.metric_set(),
            Execution::Fast,
        )
        .map_err(errors::patching)?;
        let cells =
            (sweeper.cells(request.kind, positions.as_deref())).map_err(errors::patching)?;
        total.store(cells.len() as u64, Ordering::Relaxed);
        let n_pos = pair.corrupted_tokens.len().max(pair.clean_tokens.len());
        let target_len = match request.direction {
            Direction::Denoising => pair.corrupted_tokens.len(),
            Direction::Noising => pair.clean_tokens.len(),
        };
        let rows = rows_for_budget(model.dims(), n_pos, max_batch_mib.max(1) << 20);
        let keep = |_| !stop.load(Ordering::Relaxed);
        let mut progress = |n: usize| {
            done.fetch_add(n as u64, Ordering::Relaxed);
        };
        let results = sweeper
            .sweep_batches(request.kind, &cells, (rows, &keep), &mut progress)
            .map_err(errors::patching)?;
        let layout = Layout::new(request.kind, model, target_len);
        let mut values = vec![f32::NAN; layout.shape.iter().product()];
        for cell in &results {
            if let Some(flat) = layout.index(cell) {
                values[flat] = request.value(cell);
            }
        }
        Ok(Grid {
            values,
            shape: layout.shape,
        })
    };
    let ask_stop = || stop.store(true, Ordering::Relaxed);
    let counts = || Some((done.load(Ordering::Relaxed), total.load(Ordering::Relaxed)));
    let watch = worker::Watch {
        stop: &ask_stop,
        progress: &counts,
        callback: None,
    };
    worker::run_watched(py, watch, work)
}
