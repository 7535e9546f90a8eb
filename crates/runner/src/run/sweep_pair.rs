//! Sweeping one validated pair with every patch kind and direction of the
//! experiment, through the engine.

use std::io::IsTerminal;
use std::time::Instant;

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    attribute_all, path, rows_for_budget, CellIndex, CellResult, DirectedPair, Direction,
    Execution, Method, PairRuns, PairSweeper, PatchKind, Request, SweepBatch,
};
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::{Cost, SweptPair};
use crate::run::sweep_paths::{senders, sweep_paths};
use crate::validate::PairPlan;
use crate::RunnerError;

/// The kinds swept for `plan`: all of the experiment's, except those the pair's
/// alignment rules out.
fn kinds_of(experiment: &Experiment, plan: &PairPlan) -> Vec<PatchKind> {
    let aligned = plan.map.as_ref().is_some_and(|m| m.is_identity());
    (experiment.sweep.kinds.iter())
        .copied()
        .filter(|k| aligned || !k.needs_equal_lengths())
        .collect()
}

/// Kinds a pair cannot be swept with, and why.
pub(crate) fn skipped_kinds(experiment: &Experiment, plan: &PairPlan) -> Vec<String> {
    let kept = kinds_of(experiment, plan);
    (experiment.sweep.kinds.iter())
        .filter(|k| !kept.contains(k))
        .map(|k| format!("{k} not swept: attention patterns cannot be patched between prompts of different token lengths"))
        .collect()
}

/// The target positions of `direction` for `plan`, narrowed to `[sweep] positions`.
fn positions(experiment: &Experiment, plan: &PairPlan, direction: Direction) -> Vec<usize> {
    let map = match (&plan.map, direction) {
        (Some(map), Direction::Denoising) => map.clone(),
        (Some(map), Direction::Noising) => map.inverse(),
        (None, _) => return Vec::new(),
    };
    let patched = map.patched_positions();
    match experiment.sweep.positions.list() {
        Some(list) => patched.into_iter().filter(|p| list.contains(p)).collect(),
        None => patched,
    }
}

/// How many cells sweeping `plan` produces.
pub(crate) fn cell_count(
    experiment: &Experiment,
    model: &HookedTransformer,
    plan: &PairPlan,
) -> usize {
    let methods = experiment.sweep.methods.len();
    let directions = experiment.sweep.direction.directions();
    directions
        .iter()
        .flat_map(|d| {
            let positions = positions(experiment, plan, *d);
            let n_pos = plan.target_len(*d);
            kinds_of(experiment, plan).into_iter().map(move |k| {
                if !path::is_path(k) {
                    // every method gives each node cell a row
                    return methods
                        * actpatch_patching::cells_of(k, model.dims(), &positions).len();
                }
                // only `exact` sweeps paths
                (experiment.sweep.paths.iter())
                    .filter_map(|spec| senders(model, spec, k, (n_pos, &positions)).ok())
                    .map(|(_, cells)| cells.len())
                    .sum()
            })
        })
        .sum()
}

/// The cells of `kind` swept for `plan` in `direction`, in table order.
pub(crate) fn cells(
    experiment: &Experiment,
    model: &HookedTransformer,
    plan: &PairPlan,
    (direction, kind): (Direction, PatchKind),
) -> Vec<CellIndex> {
    actpatch_patching::cells_of(kind, model.dims(), &positions(experiment, plan, direction))
}

/// The kinds swept for `plan` in batches (every kind but the path kinds, which
/// sharded runs refuse), in the experiment's order.
pub(crate) fn swept_kinds(experiment: &Experiment, plan: &PairPlan) -> Vec<PatchKind> {
    (kinds_of(experiment, plan).into_iter())
        .filter(|k| !path::is_path(*k))
        .collect()
}

/// One batch of one pair's sweep: the unit sharded runs divide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    /// The pair's index in the experiment.
    pub pair: usize,
    pub direction: Direction,
    pub kind: PatchKind,
    /// The batch's number among those of (pair, direction, kind).
    pub batch: usize,
}

/// Which batches of a pair's sweep to run.
pub(crate) type KeepBatch<'k> = &'k dyn Fn(BatchKey) -> bool;

/// Sweeps `plan` with every kind and direction of the experiment.
pub(crate) fn sweep_pair<'p>(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &'p PairPlan,
    options: &RunOptions,
    bar: &ProgressBar,
) -> Result<SweptPair<'p>, RunnerError> {
    // Past a stop request no batch starts; the caller discards the pair's cells.
    let keep = |_| !options.stop_requested();
    sweep_pair_batches(model, experiment, plan, (options, &keep), bar)
}

/// The batches of `plan`'s sweep, in the order a whole sweep runs them, with their
/// estimated costs. Path kinds have no batches: sharded runs refuse them
/// ([`super::shard`]).
pub(crate) fn pair_batches(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &PairPlan,
    options: &RunOptions,
) -> Result<Vec<(BatchKey, SweepBatch)>, RunnerError> {
    let mut batches = Vec::new();
    let mut each_direction =
        |sweeper: &PairSweeper, kinds: &[PatchKind], rows| -> Result<(), RunnerError> {
            let direction = sweeper.directed().direction;
            let during = format!("planning pair `{}`", plan.name);
            for &kind in kinds.iter().filter(|k| !path::is_path(**k)) {
                let cells = (sweeper.cells(kind, experiment.sweep.positions.list()))
                    .map_err(RunnerError::compute(during.clone()))?;
                let planned = (sweeper.batches(kind, &cells, rows))
                    .map_err(RunnerError::compute(during.clone()))?;
                batches.extend(planned.iter().enumerate().map(|(batch, b)| {
                    let key = BatchKey {
                        pair: plan.index,
                        direction,
                        kind,
                        batch,
                    };
                    (key, *b)
                }));
            }
            Ok(())
        };
    for_each_direction(model, experiment, plan, options, &mut each_direction)?;
    Ok(batches)
}

/// Sweeps the batches of `plan` that `keep` selects (the results of the others'
/// cells are left out), then its path kinds whole (only unsharded runs have them),
/// and estimates every other cell with each approximate method of `[sweep] methods`
/// (every direction in one call; sharded runs sweep `exact` only).
pub(crate) fn sweep_pair_batches<'p>(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &'p PairPlan,
    (options, keep): (&RunOptions, KeepBatch),
    bar: &ProgressBar,
) -> Result<SweptPair<'p>, RunnerError> {
    let (mut results, mut costs, mut paths) = (Vec::new(), Vec::new(), Vec::new());
    let methods = &experiment.sweep.methods;
    let mut each_direction =
        |sweeper: &PairSweeper, kinds: &[PatchKind], rows| -> Result<(), RunnerError> {
            let context = (sweeper, experiment, plan, options);
            let (path_kinds, node_kinds): (Vec<PatchKind>, Vec<PatchKind>) =
                kinds.iter().partition(|k| path::is_path(**k));
            if methods.contains(&Method::Exact) {
                for &kind in &node_kinds {
                    let (swept, cost) = sweep_kind(context, (kind, rows), keep, bar)?;
                    results.extend(swept);
                    costs.extend(cost);
                }
                if !path_kinds.is_empty() {
                    let direction = sweeper.directed().direction;
                    let positions = positions(experiment, plan, direction);
                    let how = (rows, positions.as_slice(), options, bar);
                    let during = (sweeper, direction, plan);
                    sweep_paths(model, experiment, during, how, &mut paths)?;
                }
            }
            Ok(())
        };
    for_each_direction(model, experiment, plan, options, &mut each_direction)?;
    for &method in methods.iter().filter(|m| !m.is_exact()) {
        let (estimated, cost) = estimate((model, experiment, plan, options), method, bar)?;
        results.extend(estimated);
        costs.extend(cost);
    }
    Ok(SweptPair {
        plan,
        results,
        paths,
        skipped: skipped_kinds(experiment, plan),
        costs,
    })
}

/// What [`for_each_direction`] calls: (the direction's sweeper, the kinds, rows per batch).
type EachDirection<'e> =
    &'e mut dyn FnMut(&PairSweeper, &[PatchKind], usize) -> Result<(), RunnerError>;

/// Calls `each` with the sweeper of every direction of `plan`, the kinds swept and
/// the rows per batch.
fn for_each_direction(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &PairPlan,
    options: &RunOptions,
    each: EachDirection,
) -> Result<(), RunnerError> {
    let Some((pair, baselines)) = plan.sweepable() else {
        return Err(RunnerError::Input(format!(
            "pair `{}` cannot be swept: {}",
            plan.name,
            plan.reasons.join("; ")
        )));
    };
    let execution = match options.naive {
        true => Execution::Naive,
        false => Execution::Fast,
    };
    let kinds = kinds_of(experiment, plan);
    let n_pos = plan.corrupted_tokens.len().max(plan.clean_tokens.len());
    let rows = rows_for_budget(model.dims(), n_pos, options.max_batch_mib << 20);
    let during = || RunnerError::compute(format!("running pair `{}`", plan.name));
    // Validation's two passes when it kept them, else the same two passes now: one
    // per prompt serves both directions.
    let computed;
    let runs = match &plan.runs {
        Some(runs) if runs.has(&kinds, model.dims().n_layers) => runs,
        _ => {
            computed = PairRuns::new(model, &pair.clean_tokens, &pair.corrupted_tokens, &kinds)
                .map_err(during())?;
            &computed
        }
    };
    for direction in experiment.sweep.direction.directions() {
        let sweeper = PairSweeper::with_runs(
            model,
            (&pair, baselines, runs),
            direction,
            &kinds,
            experiment.sweep.metrics,
            execution,
        )
        .map_err(during())?;
        each(&sweeper, &kinds, rows)?;
    }
    Ok(())
}

/// What a sweep of one direction runs with.
type SweepContext<'a> = (
    &'a PairSweeper<'a>,
    &'a Experiment,
    &'a PairPlan,
    &'a RunOptions,
);

/// Sweeps the batches of one kind that `keep` selects exactly; with what they cost
/// (none where no batch was kept).
fn sweep_kind(
    (sweeper, experiment, plan, options): SweepContext,
    (kind, rows): (PatchKind, usize),
    keep: KeepBatch,
    bar: &ProgressBar,
) -> Result<(Vec<CellResult>, Option<Cost>), RunnerError> {
    let started = Instant::now();
    let direction = sweeper.directed().direction;
    let during = |what: &str| format!("{what} pair `{}`", plan.name);
    let cells: Vec<CellIndex> = sweeper
        .cells(kind, experiment.sweep.positions.list())
        .map_err(RunnerError::compute(during("planning")))?;
    let key = |batch| BatchKey {
        pair: plan.index,
        direction,
        kind,
        batch,
    };
    let mut progress = |n: usize| bar.inc(n as u64);
    let swept = sweeper
        .sweep_batches(
            kind,
            &cells,
            (rows, &|batch| keep(key(batch))),
            &mut progress,
        )
        .map_err(RunnerError::compute(during(&format!(
            "sweeping {direction} {kind} of"
        ))))?;
    if swept.is_empty() {
        return Ok((swept, None));
    }
    let seconds = started.elapsed().as_secs_f64();
    say_swept(
        (options, plan),
        direction,
        &kind.to_string(),
        swept.len(),
        seconds,
    );
    let cost = Cost {
        direction,
        method: Method::Exact,
        kind: Some(kind),
        seconds,
        passes: swept.len() as f64,
    };
    Ok((swept, Some(cost)))
}

/// Every cell of the pair's kinds (path kinds excepted) estimated with the approximate
/// `method`, every direction in one call (the directions share their prompts' passes),
/// and what each direction cost: an equal share of the call.
fn estimate(
    (model, experiment, plan, options): (&HookedTransformer, &Experiment, &PairPlan, &RunOptions),
    method: Method,
    bar: &ProgressBar,
) -> Result<(Vec<CellResult>, Vec<Cost>), RunnerError> {
    let during = |what: &str| format!("{what} pair `{}`", plan.name);
    let Some((pair, baselines)) = plan.sweepable() else {
        return Ok((Vec::new(), Vec::new())); // for_each_direction said why
    };
    let kinds: Vec<PatchKind> = (kinds_of(experiment, plan).into_iter())
        .filter(|k| !path::is_path(*k))
        .collect();
    if kinds.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let directions = experiment.sweep.direction.directions();
    let mut directed = Vec::new();
    for &direction in &directions {
        let metrics = experiment.sweep.metrics;
        directed.push(
            DirectedPair::new(model, &pair, baselines, direction, &[], metrics)
                .map_err(RunnerError::compute(during("planning")))?,
        );
    }
    let mut cells = Vec::new();
    for d in &directed {
        let of_kinds = (kinds.iter())
            .map(|&kind| {
                Ok((
                    kind,
                    d.cells(model, kind, experiment.sweep.positions.list())?,
                ))
            })
            .collect::<Result<Vec<_>, actpatch_patching::PatchingError>>()
            .map_err(RunnerError::compute(during("planning")))?;
        cells.push(of_kinds);
    }
    let requests: Vec<Request> = directed
        .iter()
        .zip(&cells)
        .map(|(d, c)| (d, &c[..]))
        .collect();
    let started = Instant::now();
    let estimated = attribute_all(model, &requests, method, experiment.sweep.ig_steps).map_err(
        RunnerError::compute(during(&format!("estimating ({method}) cells of"))),
    )?;
    let seconds = started.elapsed().as_secs_f64() / directed.len() as f64;
    let (mut results, mut costs) = (Vec::new(), Vec::new());
    for (d, one) in directed.iter().zip(estimated) {
        bar.inc(one.results.len() as u64);
        say_swept(
            (options, plan),
            d.direction,
            method.name(),
            one.results.len(),
            seconds,
        );
        costs.push(Cost {
            direction: d.direction,
            method,
            kind: None,
            seconds,
            passes: one.passes,
        });
        results.extend(one.results);
    }
    Ok((results, costs))
}

/// A line per swept (direction, kind or method) when the progress bar is not shown.
pub(crate) fn say_swept(
    (options, plan): (&RunOptions, &PairPlan),
    direction: Direction,
    what: &str,
    cells: usize,
    seconds: f64,
) {
    if !std::io::stderr().is_terminal() {
        options.say(format!(
            "swept {} {direction} {what}: {cells} cells in {seconds:.2} s",
            plan.name
        ));
    }
}
