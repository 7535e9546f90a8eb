//! Path patching of one pair and direction: every path kind of the experiment to
//! every receiver set of `[[sweep.paths]]`, each its own grid.

use actpatch_model::HookedTransformer;
use actpatch_patching::{path, CellIndex, Direction, PairSweeper, PatchKind};

use crate::experiment::Experiment;
use crate::outputs::PathResults;
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

/// Sweeps every path kind to every receiver set for one direction, adding each set's
/// cells to `out` (one entry per set, in file order).
pub(crate) fn sweep_paths(
    model: &HookedTransformer,
    experiment: &Experiment,
    (sweeper, direction, pair_name): (&PairSweeper, Direction, &str),
    (rows, positions): (usize, &[usize]),
    progress: &mut dyn FnMut(usize),
    out: &mut Vec<PathResults>,
) -> Result<(), RunnerError> {
    let n_pos = sweeper.directed().target_tokens.len();
    let kinds = (experiment.sweep.kinds.iter()).filter(|k| path::is_path(**k));
    for kind in kinds {
        for spec in &experiment.sweep.paths {
            let label = spec.label();
            let (receivers, cells) =
                senders(model, spec, *kind, (n_pos, positions)).map_err(RunnerError::Input)?;
            let swept = sweeper
                .sweep_path((*kind, &receivers), &cells, rows, progress)
                .map_err(RunnerError::compute(format!(
                    "path patching ({direction} {kind} to `{label}`) of pair `{pair_name}`"
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
    Ok(())
}
