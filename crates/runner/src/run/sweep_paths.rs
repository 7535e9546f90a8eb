//! Path patching of one pair and direction: every path kind of the experiment to
//! every receiver set of `[[sweep.paths]]`, each its own grid.

use std::io::IsTerminal;
use std::time::Instant;

use actpatch_model::HookedTransformer;
use actpatch_patching::{path, CellIndex, Direction, PairSweeper, PatchKind};
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::PathResults;
use crate::validate::PairPlan;
use crate::RunnerError;

/// The sender cells of `kind` to receiver set `spec` in a patched run of `n_pos`
/// tokens at the sweep's `positions`.
pub(crate) fn senders(
    model: &HookedTransformer,
    spec: &crate::experiment::PathSpec,
    kind: PatchKind,
    (n_pos, positions): (usize, &[usize]),
) -> Result<(path::Receivers, Vec<CellIndex>), String> {
    let receivers = spec.receivers(model.dims(), n_pos)?;
    let senders = receivers.senders(kind, model.dims(), positions);
    Ok((receivers, senders))
}

/// Sweeps every path kind to every receiver set for one direction of `plan`, adding
/// each set's cells to `out` (one entry per set, in file order).
pub(crate) fn sweep_paths(
    model: &HookedTransformer,
    experiment: &Experiment,
    (sweeper, direction, plan): (&PairSweeper, Direction, &PairPlan),
    (rows, positions, options, bar): (usize, &[usize], &RunOptions, &ProgressBar),
    out: &mut Vec<PathResults>,
) -> Result<(), RunnerError> {
    let started = Instant::now();
    let n_pos = sweeper.directed().target_tokens.len();
    let mut progress = |n: usize| bar.inc(n as u64);
    let kinds = (experiment.sweep.kinds.iter()).filter(|k| path::is_path(**k));
    for kind in kinds {
        for spec in &experiment.sweep.paths {
            let label = spec.label();
            let (receivers, cells) =
                senders(model, spec, *kind, (n_pos, positions)).map_err(RunnerError::Input)?;
            let swept = sweeper
                .sweep_path((*kind, &receivers), &cells, rows, &mut progress)
                .map_err(RunnerError::compute(format!(
                    "path patching ({direction} {kind} to `{label}`) of pair `{}`",
                    plan.name
                )))?;
            match out.iter_mut().find(|p| p.label == label) {
                Some(entry) => entry.results.extend(swept),
                None => out.push(PathResults {
                    label,
                    results: swept,
                }),
            }
        }
    }
    if !std::io::stderr().is_terminal() {
        options.say(format!(
            "swept {} {direction} path patching ({} receiver sets) in {:.2} s",
            plan.name,
            experiment.sweep.paths.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}
