//! Sweeping one validated pair with every patch kind of the experiment.

use std::io::IsTerminal;
use std::time::Instant;

use actpatch_hooks::CacheFilter;
use actpatch_model::HookedTransformer;
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::outputs::SweptPair;
use crate::run::{say, skipped_kinds, RunOptions};
use crate::sweep::{
    cells_of, hook_points, rows_for_budget, sweep, CellIndex, PairSweep, PatchKind,
};
use crate::sweep_fast::{corrupted_run, sweep_fast};
use crate::validate::PairPlan;
use crate::RunnerError;

/// The corrupted positions swept for `plan`: those that receive a clean activation,
/// narrowed to `[sweep] positions` when given.
fn positions_of(experiment: &Experiment, plan: &PairPlan) -> Vec<usize> {
    let patched = plan
        .map
        .as_ref()
        .map(|m| m.patched_positions())
        .unwrap_or_default();
    match experiment.sweep.positions.list() {
        Some(list) => patched.into_iter().filter(|p| list.contains(p)).collect(),
        None => patched,
    }
}

/// The kinds swept for `plan`, each with its cells.
fn planned_cells(
    experiment: &Experiment,
    model: &HookedTransformer,
    plan: &PairPlan,
) -> Vec<(PatchKind, Vec<CellIndex>)> {
    let aligned = plan.map.as_ref().is_some_and(|m| m.is_identity());
    let positions = positions_of(experiment, plan);
    experiment
        .sweep
        .kinds
        .iter()
        .filter(|k| **k != PatchKind::HeadPattern || aligned)
        .map(|k| (*k, cells_of(*k, model.dims(), &positions)))
        .collect()
}

/// How many cells sweeping `plan` produces.
pub fn cell_count(experiment: &Experiment, model: &HookedTransformer, plan: &PairPlan) -> usize {
    planned_cells(experiment, model, plan)
        .iter()
        .map(|(_, c)| c.len())
        .sum()
}

/// Sweeps `plan` with every kind of the experiment.
pub fn sweep_pair<'p>(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &'p PairPlan,
    options: &RunOptions,
    bar: &ProgressBar,
) -> Result<SweptPair<'p>, RunnerError> {
    let (Some(answers), Some(baseline), Some(map), Some(clean_log_probs)) = (
        plan.answers,
        plan.baseline(),
        plan.map.as_ref(),
        plan.clean_log_probs.as_ref(),
    ) else {
        return Err(RunnerError::Input(format!(
            "pair `{}` cannot be swept: {}",
            plan.name,
            plan.reasons.join("; ")
        )));
    };
    let dims = model.dims();
    let points = hook_points(&experiment.sweep.kinds, dims.n_layers);
    let (_, clean_cache) = model.run_with_cache(
        std::slice::from_ref(&plan.clean_tokens),
        CacheFilter::only(points.iter().copied()),
    )?;
    let pair = PairSweep {
        corrupted_tokens: &plan.corrupted_tokens,
        clean_cache: &clean_cache,
        map,
        answers,
        baseline,
        clean_log_probs,
        metrics: experiment.sweep.metrics,
    };
    let rows = rows_for_budget(
        dims,
        plan.corrupted_tokens.len(),
        options.max_batch_mib << 20,
    );
    let corrupted = if options.naive {
        None
    } else {
        Some(corrupted_run(
            model,
            &plan.corrupted_tokens,
            &experiment.sweep.kinds,
        )?)
    };
    let mut results = Vec::new();
    for (kind, cells) in planned_cells(experiment, model, plan) {
        let started = Instant::now();
        let mut progress = |n: usize| bar.inc(n as u64);
        results.extend(match &corrupted {
            None => sweep(model, &pair, kind, &cells, rows, &mut progress)?,
            Some(corrupted) => {
                sweep_fast(model, &pair, corrupted, kind, &cells, rows, &mut progress)?
            }
        });
        if !std::io::stderr().is_terminal() {
            say(
                options,
                format!(
                    "swept {} {kind}: {} cells in {:.2} s",
                    plan.name,
                    cells.len(),
                    started.elapsed().as_secs_f64()
                ),
            );
        }
    }
    Ok(SweptPair {
        plan,
        results,
        skipped: skipped_kinds(experiment, plan),
    })
}
