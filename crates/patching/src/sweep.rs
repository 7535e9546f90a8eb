//! The generic sweep: a pair, patch kinds and directions in, cells out.

use actpatch_model::{BaseRun, HookedTransformer};

use crate::fast::SweepBatch;
use crate::path::{self, Receivers};
use crate::{
    fast, naive, Baselines, CellIndex, CellResult, DirectedPair, Direction, MetricSet, Pair,
    PairRuns, PatchKind, PatchingError, Result,
};

/// How exact patched runs are computed. Both give the same numbers (within 1e-4, the
/// tests check it); the naive path is the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    /// Reuse the unpatched target run: start at the patched layer and position, skip
    /// cells that cannot change anything ([`crate::fast`]).
    #[default]
    Fast,
    /// One full forward pass per cell batch ([`crate::naive`]).
    Naive,
}

/// One direction of one pair with the kinds it sweeps: the source run is cached once
/// (and, for the fast path, the target run), then each kind is swept from them.
pub struct PairSweeper<'a> {
    model: &'a HookedTransformer,
    pair: DirectedPair<'a>,
    /// The unpatched target run the fast path continues from; `None` for the naive path.
    target: Option<BaseRun>,
}

impl<'a> PairSweeper<'a> {
    /// Runs both prompts once ([`PairRuns`]), caching the sites of `kinds`: the
    /// source run's activations, and for the fast path the target run it continues.
    pub fn new(
        model: &'a HookedTransformer,
        pair: &'a Pair,
        baselines: &'a Baselines,
        direction: Direction,
        kinds: &[PatchKind],
        metrics: MetricSet,
        execution: Execution,
    ) -> Result<Self> {
        let runs = PairRuns::new(model, &pair.clean_tokens, &pair.corrupted_tokens, kinds)?;
        let context = (pair, baselines, &runs);
        PairSweeper::with_runs(model, context, direction, kinds, metrics, execution)
    }

    /// [`PairSweeper::new`] from `runs` (both prompts, run once with the sites of
    /// `kinds` cached, [`PairRuns`]): no pass of its own.
    pub fn with_runs(
        model: &'a HookedTransformer,
        (pair, baselines, runs): (&'a Pair, &'a Baselines, &PairRuns),
        direction: Direction,
        kinds: &[PatchKind],
        metrics: MetricSet,
        execution: Execution,
    ) -> Result<Self> {
        let directed =
            DirectedPair::from_runs(model, pair, baselines, direction, kinds, (metrics, runs))?;
        let target = match execution {
            Execution::Fast => Some(runs.target(direction).clone()),
            Execution::Naive => None,
        };
        Ok(PairSweeper {
            model,
            pair: directed,
            target,
        })
    }

    pub fn directed(&self) -> &DirectedPair<'a> {
        &self.pair
    }

    /// The cells of `kind` at the patched target positions (`only` narrows them).
    pub fn cells(&self, kind: PatchKind, only: Option<&[usize]>) -> Result<Vec<CellIndex>> {
        self.pair.cells(self.model, kind, only)
    }

    /// Sweeps `kind` over `cells`, at most `max_rows` rows per batch; `progress` gets
    /// the number of cells finished after each batch.
    pub fn sweep(
        &self,
        kind: PatchKind,
        cells: &[CellIndex],
        max_rows: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<CellResult>> {
        if crate::path::is_path(kind) {
            return Err(PatchingError::NeedsReceivers { kind });
        }
        match &self.target {
            Some(target) => fast::sweep(
                self.model, &self.pair, target, kind, cells, max_rows, progress,
            ),
            None => naive::sweep(self.model, &self.pair, kind, cells, max_rows, progress),
        }
    }

    /// The batches [`PairSweeper::sweep`] runs `cells` of `kind` in, in order, each
    /// with its estimated cost: the units a sharded run divides a pair's sweep into.
    pub fn batches(
        &self,
        kind: PatchKind,
        cells: &[CellIndex],
        max_rows: usize,
    ) -> Result<Vec<SweepBatch>> {
        match &self.target {
            Some(target) => fast::batches(self.model, &self.pair, target, kind, cells, max_rows),
            None => Ok(naive::batches(self.model, &self.pair, cells, max_rows)),
        }
    }

    /// Sweeps only the batches (numbered as [`PairSweeper::batches`]) that `keep`
    /// selects, and returns their cells' results in the order of `cells`. Each batch
    /// is computed exactly as in [`PairSweeper::sweep`], so the results of a sweep
    /// split between processes equal those of one whole sweep bit for bit.
    pub fn sweep_batches(
        &self,
        kind: PatchKind,
        cells: &[CellIndex],
        (max_rows, keep): (usize, &dyn Fn(usize) -> bool),
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<CellResult>> {
        let selected = match &self.target {
            Some(target) => fast::sweep_selected(
                self.model,
                &self.pair,
                target,
                (kind, cells),
                (max_rows, keep),
                progress,
                &mut fast::SweepWork::default(),
            )?,
            None => naive::sweep_selected(
                self.model,
                &self.pair,
                (kind, cells),
                (max_rows, keep),
                progress,
            )?,
        };
        Ok(selected.into_iter().flatten().collect())
    }
}

impl PairSweeper<'_> {
    /// Path patching of `senders` (cells of [`PatchKind::Path`] or
    /// [`PatchKind::PathByPos`], see [`crate::path::Receivers::senders`]) to
    /// `receivers`, at most `max_rows` senders per batch.
    pub fn sweep_path(
        &self,
        (kind, receivers): (PatchKind, &Receivers),
        senders: &[CellIndex],
        max_rows: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<CellResult>> {
        let what = (kind, receivers);
        match &self.target {
            Some(target) => path::fast::sweep(
                self.model, &self.pair, target, what, senders, max_rows, progress,
            ),
            None => path::naive::sweep(self.model, &self.pair, what, senders, max_rows, progress),
        }
    }
}

/// A sweep of one pair: which kinds, directions, positions and metrics, and how.
///
/// `Sweep::new(&[PatchKind::ResidPre]).run(&model, &pair, &baselines)` gives one
/// [`CellResult`] per (direction, kind, layer, head, position).
#[derive(Debug, Clone)]
pub struct Sweep {
    pub kinds: Vec<PatchKind>,
    pub directions: Vec<Direction>,
    /// Target positions to patch; `None`: every position that receives a source
    /// activation.
    pub positions: Option<Vec<usize>>,
    pub metrics: MetricSet,
    pub execution: Execution,
    /// Rows per batched forward pass.
    pub max_rows: usize,
}

impl Sweep {
    /// Denoising sweeps of `kinds` over every position, every metric, fast path.
    pub fn new(kinds: &[PatchKind]) -> Self {
        Sweep {
            kinds: kinds.to_vec(),
            directions: vec![Direction::Denoising],
            positions: None,
            metrics: MetricSet::All,
            execution: Execution::Fast,
            max_rows: 64,
        }
    }

    pub fn directions(mut self, directions: &[Direction]) -> Self {
        self.directions = directions.to_vec();
        self
    }

    pub fn positions(mut self, positions: &[usize]) -> Self {
        self.positions = Some(positions.to_vec());
        self
    }

    pub fn metrics(mut self, metrics: MetricSet) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// Every cell of every kind in every direction, in that order.
    pub fn run(
        &self,
        model: &HookedTransformer,
        pair: &Pair,
        baselines: &Baselines,
    ) -> Result<Vec<CellResult>> {
        let mut results = Vec::new();
        let runs = PairRuns::new(
            model,
            &pair.clean_tokens,
            &pair.corrupted_tokens,
            &self.kinds,
        )?;
        for direction in &self.directions {
            let sweeper = PairSweeper::with_runs(
                model,
                (pair, baselines, &runs),
                *direction,
                &self.kinds,
                self.metrics,
                self.execution,
            )?;
            for kind in &self.kinds {
                let cells = sweeper.cells(*kind, self.positions.as_deref())?;
                results.extend(sweeper.sweep(*kind, &cells, self.max_rows, &mut |_| {})?);
            }
        }
        Ok(results)
    }
}
