//! Sweeping one validated pair with every patch kind and direction of the
//! experiment, through the engine.

use std::io::IsTerminal;
use std::time::Instant;

use actpatch_model::HookedTransformer;
use actpatch_patching::{
    path, rows_for_budget, CellIndex, Direction, Execution, PairSweeper, PatchKind,
};
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::SweptPair;
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
    let directions = experiment.sweep.direction.directions();
    directions
        .iter()
        .flat_map(|d| {
            let positions = positions(experiment, plan, *d);
            let n_pos = plan.target_len(*d);
            kinds_of(experiment, plan).into_iter().map(move |k| {
                if !path::is_path(k) {
                    return actpatch_patching::cells_of(k, model.dims(), &positions).len();
                }
                (experiment.sweep.paths.iter())
                    .filter_map(|spec| senders(model, spec, k, (n_pos, &positions)).ok())
                    .map(|(_, cells)| cells.len())
                    .sum()
            })
        })
        .sum()
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
    let mut paths = Vec::new();
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
        for kind in kinds.iter().filter(|k| !path::is_path(**k)) {
            let started = Instant::now();
            let cells: Vec<CellIndex> = sweeper
                .cells(*kind, experiment.sweep.positions.list())
                .map_err(RunnerError::compute(during("planning")))?;
            let mut progress = |n: usize| bar.inc(n as u64);
            let swept =
                sweeper
                    .sweep(*kind, &cells, rows, &mut progress)
                    .map_err(RunnerError::compute(during(&format!(
                        "sweeping {direction} {kind} of"
                    ))))?;
            results.extend(swept);
            if !std::io::stderr().is_terminal() {
                options.say(format!(
                    "swept {} {direction} {kind}: {} cells in {:.2} s",
                    plan.name,
                    cells.len(),
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        if kinds.iter().any(|k| path::is_path(*k)) {
            let positions = positions(experiment, plan, direction);
            let how = (rows, positions.as_slice(), options, bar);
            sweep_paths(
                model,
                experiment,
                (&sweeper, direction, plan),
                how,
                &mut paths,
            )?;
        }
    }
    Ok(SweptPair {
        plan,
        results,
        paths,
        skipped: skipped_kinds(experiment, plan),
    })
}
