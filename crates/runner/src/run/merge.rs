//! `actpatch merge RUN_DIR`: the shards of a sharded run into the run's tables,
//! figures and reports, exactly as a single-process run writes them.
//!
//! Every shard must be complete and belong to the run (same experiment file, shard
//! count, model, choices); otherwise nothing is merged: missing or unfinished shards
//! are named (exit 1), shards of another run refused (exit 2). The merge validates the
//! pairs again (the baselines are computed, not read back), reads the shards' cells
//! into the order a single-process run sweeps them, and finishes the run as
//! [`super::run`] does.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use actpatch_model::HookedTransformer;
use actpatch_patching::PatchKind;
use actpatch_report::CellRow;

use super::circuits::{self, ExactSource};
use super::partial::results_from_rows;
use super::sweep_pair::{cells, skipped_kinds, swept_kinds};
use super::{
    finish_run, load_experiment, load_model, model_record, pairs_to_sweep, record_circuit,
    validate_all, RunOutcome, Stages, SweepContext,
};
use crate::experiment::Experiment;
use crate::manifest::{sha256_bytes, Manifest, RunStatus};
use crate::options::RunOptions;
use crate::outputs::SweptPair;
use crate::shard::{check::mismatch, layout, ShardSpec};
use crate::validate::PairPlan;
use crate::RunnerError;

/// Merges the shards in `run_dir` (loading the experiment and the model the shards
/// used); `options` gives only `quiet`.
pub fn merge(run_dir: &Path, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    let shards = complete_shards(run_dir)?;
    let reference = &shards[0];
    let file = &reference.experiment_file;
    let text = std::fs::read(file).map_err(|e| {
        RunnerError::Input(format!(
            "cannot merge {}: cannot read the shards' experiment file {}: {e}",
            run_dir.display(),
            file.display()
        ))
    })?;
    if sha256_bytes(&text) != reference.experiment_sha256 {
        return Err(RunnerError::Input(format!(
            "cannot merge {}: {} changed since the shards ran (its SHA-256 differs). Restore it, or run the experiment again under a new --run-id.",
            run_dir.display(),
            file.display()
        )));
    }
    let shard = reference.shard.clone().unwrap_or_default();
    let options = RunOptions {
        no_validate: reference.options.no_validate,
        naive: reference.options.naive,
        model_path: reference.options.model_path.clone(),
        device: reference.options.device.clone(),
        max_batch_mib: shard.max_batch_mib.max(1),
        quiet: options.quiet,
        ..RunOptions::default()
    };
    let experiment = load_experiment(file, &options)?;
    let model = load_model(&experiment, &options)?;
    let used = Manifest {
        model: Some(model_record(&model, &experiment)),
        ..reference.clone()
    };
    if let Some(why) = mismatch(reference, &used) {
        return Err(RunnerError::Input(format!(
            "cannot merge {}: the model found now {why}, than the shards used. Merge where the shards' model is (--model-path when they ran).",
            run_dir.display()
        )));
    }
    let plans = validate_all(&model, &experiment, &options, false)?;
    merge_loaded(run_dir, (&model, &experiment, &options), &plans)
}

/// Merges the shards with the model, experiment and validated pairs at hand (the last
/// shard's own).
pub(super) fn merge_loaded(
    run_dir: &Path,
    (model, experiment, options): (&HookedTransformer, &Experiment, &RunOptions),
    plans: &[PairPlan],
) -> Result<RunOutcome, RunnerError> {
    let merge_started = Instant::now();
    let shards = complete_shards(run_dir)?;
    let to_sweep = pairs_to_sweep(plans, experiment, options);
    let swept = swept_pairs(run_dir, (model, experiment), &shards, &to_sweep)?;

    // The run's manifest: its shards' start, timings along the slowest shard.
    let mut manifest = Manifest::read(run_dir)
        .ok()
        .flatten()
        .unwrap_or_else(|| shards[0].clone());
    let started = shards.iter().map(|s| s.started.clone()).min();
    manifest.started = started.unwrap_or_default();
    manifest.status = RunStatus::Running;
    manifest.shard = None;
    manifest.shards = Some(shards.len());
    let slowest = |stage: fn(&crate::manifest::Timings) -> f64| {
        (shards.iter())
            .filter_map(|s| s.timings.as_ref().map(stage))
            .fold(0.0, f64::max)
    };
    let t_loaded = slowest(|t| t.load_seconds);
    let t_validated = t_loaded + slowest(|t| t.validate_seconds);
    let t_swept = t_validated + slowest(|t| t.sweep_seconds);
    let since_start = chrono::DateTime::parse_from_rfc3339(&manifest.started)
        .map(|t| chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .ok()
        .and_then(|d| d.to_std().ok())
        .unwrap_or(Duration::ZERO);
    let clock = merge_started
        .checked_sub(since_start)
        .unwrap_or(merge_started);
    let run_id = manifest.run_id.clone();
    let context = SweepContext {
        model,
        experiment,
        options,
        run_dir,
        run_id: &run_id,
    };
    let stages = Stages {
        t_loaded,
        t_validated,
        t_swept,
    };
    options.say(format!("merging {} shards of run {run_id}", shards.len()));
    // `[circuit]`: the exact effects from the shards, the rest computed here.
    let exact = ExactSource::Shards {
        count: shards.len(),
    };
    let circuit = circuits::run(
        model,
        experiment,
        options,
        (&run_id, run_dir),
        &to_sweep,
        exact,
    );
    let circuit_section = record_circuit(&mut manifest, circuit?);
    finish_run(
        &context,
        (plans, &swept),
        (&mut manifest, circuit_section.as_deref()),
        stages,
        clock,
    )
}

/// Every swept pair's cells, from the shards' parts; no cell left over.
fn swept_pairs<'p>(
    run_dir: &Path,
    (model, experiment): (&HookedTransformer, &Experiment),
    shards: &[Manifest],
    to_sweep: &[&'p PairPlan],
) -> Result<Vec<SweptPair<'p>>, RunnerError> {
    let mut parts = read_parts(run_dir, shards)?;
    let swept = (to_sweep.iter())
        .map(|plan| swept_from_parts(experiment, model, plan, &mut parts))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(((pair, direction, kind, ..), _)) = parts.iter().next() {
        return Err(RunnerError::Input(format!(
            "cannot merge {}: the shards hold {} cells this experiment does not sweep (e.g. pair `{pair}` {direction} {kind}); were they written by another version of actpatch?",
            run_dir.display(),
            parts.len()
        )));
    }
    Ok(swept)
}

/// The shards' manifests, in shard order, when all are present, complete and of one
/// run; otherwise what is wrong (nothing is written).
fn complete_shards(run_dir: &Path) -> Result<Vec<Manifest>, RunnerError> {
    let found = layout::read_shards(run_dir);
    let cannot = |what: String| format!("cannot merge {}: {what}", run_dir.display());
    if found.is_empty() {
        return Err(RunnerError::Input(cannot(format!(
            "it holds no shard manifests ({}/*.json). Give the folder of a sharded run (actpatch run FILE --shard i/n --run-id ID writes <out>/ID/).",
            layout::shards_dir(run_dir).display()
        ))));
    }
    let mut shards = Vec::new();
    for (spec, manifest) in found {
        shards.push((spec, manifest.map_err(|e| RunnerError::Input(cannot(e)))?));
    }
    let (first_spec, reference) = shards[0].clone();
    for (spec, manifest) in &shards {
        if let Some(why) = mismatch(&reference, manifest) {
            return Err(RunnerError::Input(cannot(format!(
                "shard {spec} {why}, unlike shard {first_spec}. Shards of different runs do not merge: move the stray shard's files (shards/{}.json, cells/{}/) out of the run folder.",
                spec.label(),
                spec.partition()
            ))));
        }
    }
    let count = first_spec.count;
    let missing: Vec<String> = (0..count)
        .filter_map(|index| {
            let spec = ShardSpec { index, count };
            let manifest = shards.iter().find(|(s, _)| *s == spec).map(|(_, m)| m);
            match manifest {
                None => Some(format!("{spec} (never started)")),
                Some(m) if !m.complete() => Some(format!(
                    "{spec} (started {}{}, not finished: still running, or it died)",
                    m.started,
                    (m.shard.as_ref().and_then(|s| s.host.as_ref()))
                        .map(|h| format!(" on {h}"))
                        .unwrap_or_default()
                )),
                Some(_) if !layout::part_path(run_dir, spec).is_file() => Some(format!(
                    "{spec} (complete, but {} is gone)",
                    layout::part_path(run_dir, spec).display()
                )),
                Some(_) => None,
            }
        })
        .collect();
    if !missing.is_empty() {
        let indexes: Vec<String> = missing
            .iter()
            .filter_map(|m| m.split('/').next().map(str::to_string))
            .collect();
        return Err(RunnerError::ShardsMissing(cannot(format!(
            "{} of {count} shards are missing: {}. Nothing was merged. Run them again (actpatch run FILE --shard i/{count} --run-id {}; Slurm: sbatch --array={} …), then `actpatch merge {}`.",
            missing.len(),
            missing.join("; "),
            reference.run_id,
            indexes.join(","),
            run_dir.display()
        ))));
    }
    Ok(shards.into_iter().map(|(_, m)| m).collect())
}

/// A cell's identity across the shards' parts: pair, direction, kind, layer, head,
/// position.
type CellKey = (String, String, String, u32, Option<u32>, Option<u32>);

fn read_parts(
    run_dir: &Path,
    shards: &[Manifest],
) -> Result<HashMap<CellKey, CellRow>, RunnerError> {
    let mut cells = HashMap::new();
    for index in 0..shards.len() {
        let part = layout::part_path(
            run_dir,
            ShardSpec {
                index,
                count: shards.len(),
            },
        );
        for row in actpatch_report::tables::read_cells(&part).map_err(RunnerError::read)? {
            let key = (
                row.pair.clone(),
                row.direction.clone(),
                row.kind.clone(),
                row.layer,
                row.head,
                row.position,
            );
            if cells.insert(key, row).is_some() {
                return Err(RunnerError::Input(format!(
                    "cannot merge {}: {} repeats a cell of another shard; the shards did not divide the work alike (another version of actpatch?)",
                    run_dir.display(),
                    part.display()
                )));
            }
        }
    }
    Ok(cells)
}

/// `plan`'s cells taken from the parts, in the order a single-process run sweeps them.
fn swept_from_parts<'p>(
    experiment: &Experiment,
    model: &HookedTransformer,
    plan: &'p PairPlan,
    parts: &mut HashMap<CellKey, CellRow>,
) -> Result<SweptPair<'p>, RunnerError> {
    let mut rows = Vec::new();
    let kinds: Vec<PatchKind> = swept_kinds(experiment, plan);
    for direction in experiment.sweep.direction.directions() {
        for kind in &kinds {
            for cell in cells(experiment, model, plan, (direction, *kind)) {
                let key = (
                    plan.name.clone(),
                    direction.name().to_string(),
                    kind.name().to_string(),
                    cell.layer as u32,
                    cell.head.map(|h| h as u32),
                    cell.position.map(|p| p as u32),
                );
                let row = parts.remove(&key).ok_or_else(|| {
                    RunnerError::ShardsMissing(format!(
                        "the shards' cells lack pair `{}` {direction} {kind} layer {} head {:?} position {:?}: a part was damaged or written by another version; run the shards again",
                        plan.name, cell.layer, cell.head, cell.position
                    ))
                })?;
                rows.push(row);
            }
        }
    }
    let (results, paths) = results_from_rows(&rows, Path::new("cells/"), plan.baseline())?;
    Ok(SweptPair {
        plan,
        results,
        paths,
        skipped: skipped_kinds(experiment, plan),
        costs: Vec::new(), // shards record no costs
    })
}
