//! Sweeping one validated pair with every patch kind and direction of the
//! experiment, through the engine.

use std::io::IsTerminal;
use std::time::Instant;

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    attribute, rows_for_budget, CellIndex, CellResult, Direction, Execution, Method, PairSweeper,
    PatchKind,
};
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::{Cost, SweptPair};
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
    let directions = experiment.sweep.direction.directions();
    directions
        .iter()
        .flat_map(|d| {
            let positions = positions(experiment, plan, *d);
            kinds_of(experiment, plan)
                .into_iter()
                .map(move |k| actpatch_patching::cells_of(k, model.dims(), &positions).len())
        })
        .sum::<usize>()
        * experiment.sweep.methods.len()
}

/// Sweeps `plan` with every kind and direction of the experiment.
pub(crate) fn sweep_pair<'p>(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &'p PairPlan,
    options: &RunOptions,
    bar: &ProgressBar,
) -> Result<SweptPair<'p>, RunnerError> {
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
    let during = |what: &str| format!("{what} pair `{}`", plan.name);
    let mut results = Vec::new();
    let mut costs = Vec::new();
    let methods = &experiment.sweep.methods;
    for direction in experiment.sweep.direction.directions() {
        let sweeper = PairSweeper::new(
            model,
            &pair,
            baselines,
            direction,
            &kinds,
            experiment.sweep.metrics,
            execution,
        )
        .map_err(RunnerError::compute(during("running")))?;
        let mut cells_of_kinds = Vec::new();
        for kind in &kinds {
            let cells: Vec<CellIndex> = sweeper
                .cells(*kind, experiment.sweep.positions.list())
                .map_err(RunnerError::compute(during("planning")))?;
            cells_of_kinds.push((*kind, cells));
        }
        if methods.contains(&Method::Exact) {
            let (swept, cost) = sweep_exact(&sweeper, &cells_of_kinds, rows, (options, plan), bar)?;
            results.extend(swept);
            costs.extend(cost);
        }
        for method in methods.iter().filter(|m| !m.is_exact()) {
            let started = Instant::now();
            let estimated = attribute(
                model,
                sweeper.directed(),
                &cells_of_kinds,
                *method,
                experiment.sweep.ig_steps,
            )
            .map_err(RunnerError::compute(during(&format!(
                "estimating ({method}) {direction} cells of"
            ))))?;
            let seconds = started.elapsed().as_secs_f64();
            bar.inc(estimated.results.len() as u64);
            say_swept(
                options,
                plan,
                direction,
                method.name(),
                estimated.results.len(),
                seconds,
            );
            costs.push(Cost {
                direction,
                method: *method,
                kind: None,
                seconds,
                passes: estimated.passes,
            });
            results.extend(estimated.results);
        }
    }
    Ok(SweptPair {
        plan,
        results,
        skipped: skipped_kinds(experiment, plan),
        costs,
    })
}

/// The exact sweep of every kind, and what each kind cost.
fn sweep_exact(
    sweeper: &PairSweeper,
    cells_of_kinds: &[(PatchKind, Vec<CellIndex>)],
    rows: usize,
    (options, plan): (&RunOptions, &PairPlan),
    bar: &ProgressBar,
) -> Result<(Vec<CellResult>, Vec<Cost>), RunnerError> {
    let direction = sweeper.directed().direction;
    let during = |what: &str| format!("{what} pair `{}`", plan.name);
    let (mut results, mut costs) = (Vec::new(), Vec::new());
    for (kind, cells) in cells_of_kinds {
        let started = Instant::now();
        let mut progress = |n: usize| bar.inc(n as u64);
        let swept =
            sweeper
                .sweep(*kind, cells, rows, &mut progress)
                .map_err(RunnerError::compute(during(&format!(
                    "sweeping {direction} {kind} of"
                ))))?;
        results.extend(swept);
        let seconds = started.elapsed().as_secs_f64();
        costs.push(Cost {
            direction,
            method: Method::Exact,
            kind: Some(*kind),
            seconds,
            passes: cells.len() as f64,
        });
        say_swept(
            options,
            plan,
            direction,
            &kind.to_string(),
            cells.len(),
            seconds,
        );
    }
    Ok((results, costs))
}

/// A line per swept (direction, kind or method) when the progress bar is not shown.
fn say_swept(
    options: &RunOptions,
    plan: &PairPlan,
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
