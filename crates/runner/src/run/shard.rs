//! One shard of a sharded run: the whole run's validation, then only the sweep
//! batches [`crate::shard::assign`] gives this shard, written as
//! `cells/shard=i-of-n/part-0.parquet` with the shard's manifest; the last shard to
//! finish merges ([`super::merge`]).
//!
//! A shard checks the run folder's other shards before the model loads (same
//! experiment file, shard count, choices) and again after (same model), so a shard of
//! another run refuses (exit 2) before it writes anything. A shard already complete
//! is a no-op; one that died is run again from the start and writes the same files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_model::HookedTransformer;

use super::sweep_pair::{pair_batches, sweep_pair_batches, BatchKey};
use super::{
    finish_manifest, load_model, model_record, pair_counts, pairs_to_sweep, prepare, run_choices,
    validate_all, Prepared, RunOutcome, Start,
};
use crate::experiment::Experiment;
use crate::manifest::{Manifest, RunStatus, ShardRecord, Timings, Tool};
use crate::options::RunOptions;
use crate::outputs::cell_rows;
use crate::shard::{assign::assign, check::mismatch, layout, ShardChoice, ShardSpec};
use crate::validate::PairPlan;
use crate::RunnerError;

use super::partial::test_point;
use super::progress::{cells_bar, ProgressMode};

/// Sharded runs sweep exactly: an approximate method estimates every kind of a pair
/// and direction in one gradient pass, which does not split into the engine's batches.
fn refuse_approximate(experiment: &Experiment, choice: &ShardChoice) -> Result<(), RunnerError> {
    let approximate: Vec<&str> = (experiment.sweep.methods.iter())
        .filter(|m| !m.is_exact())
        .map(|m| m.name())
        .collect();
    if approximate.is_empty() {
        return Ok(());
    }
    Err(RunnerError::Input(format!(
        "shard {}: [sweep] methods lists {}, but sharded runs sweep only \"exact\" (an approximate method estimates all kinds of a pair in one pass, which does not split into shards). Set methods = [\"exact\"] for the sharded run, or run the approximations without --shard",
        choice.shard,
        approximate.join(", ")
    )))
}

/// Sharded runs divide the engine's batches of prompt pairs; a Gaussian-noise trace
/// averages every cell over its draws in one piece, so it runs unsharded.
fn refuse_gaussian(experiment: &Experiment, choice: &ShardChoice) -> Result<(), RunnerError> {
    if !experiment.has_gaussian() {
        return Ok(());
    }
    Err(RunnerError::Input(format!(
        "shard {}: the experiment has pairs corrupted by Gaussian noise (corruption = \"gaussian\"), which sharded runs do not divide (each cell is a mean over the noise draws, traced in one piece). Run it without --shard (or with --no-shard inside a Slurm array task), or put the prompt pairs in a file of their own to shard",
        choice.shard
    )))
}

/// What a shard cannot run: path patching, approximate sweeps, Gaussian noise.
fn refuse_unshardable(experiment: &Experiment, choice: &ShardChoice) -> Result<(), RunnerError> {
    refuse_paths(experiment, choice)?;
    refuse_approximate(experiment, choice)?;
    refuse_gaussian(experiment, choice)
}

/// Runs shard `choice` of the experiment at `path` into `<out>/<run id>/`.
pub(super) fn run_shard(
    path: &Path,
    options: &RunOptions,
    choice: &ShardChoice,
) -> Result<RunOutcome, RunnerError> {
    let clock = Instant::now();
    let run_id = options.run_id.clone().ok_or_else(|| {
        RunnerError::Input(format!(
            "shard {} needs the run id its shards share: pass --run-id ID",
            choice.shard
        ))
    })?;
    let start = Start::Fresh {
        experiment_path: path.to_path_buf(),
    };
    let prepared = prepare(&start, options)?;
    refuse_unshardable(&prepared.experiment, choice)?;
    let options = &prepared.options;
    let run_dir = options.out_dir.clone().unwrap_or_default().join(&run_id);
    let mut mine = shard_manifest(&prepared, &run_id, choice);
    check_siblings(&run_dir, &mine)?;
    if let Some(outcome) = already_done(&run_dir, &mine, options)? {
        return Ok(outcome);
    }
    options.say(format!(
        "shard {} (from {}) of run {run_id} → {}",
        choice.shard,
        choice.from,
        run_dir.display()
    ));
    let model = load_model(&prepared.experiment, options)?;
    let t_loaded = clock.elapsed().as_secs_f64();
    let plans = validate_all(&model, &prepared.experiment, options, true)?;
    let t_validated = clock.elapsed().as_secs_f64();
    let checked = pairs_to_sweep(&plans, &prepared.experiment, options);
    super::circuits::check(&model, &prepared.experiment, &checked)?;
    mine.model = Some(model_record(&model, &prepared.experiment));
    check_siblings(&run_dir, &mine)?;
    start_shard(&run_dir, &mine)?;

    let shard = Shard {
        model: &model,
        experiment: &prepared.experiment,
        options,
        run_dir: &run_dir,
        spec: choice.shard,
    };
    let to_sweep = pairs_to_sweep(&plans, shard.experiment, options);
    let cells = shard.sweep(&to_sweep, &mut mine)?;
    // `[circuit]`: this shard's receiver groups of the exact edge effects.
    let part = (to_sweep.as_slice(), choice.shard);
    super::circuit_shards::run_part(&model, shard.experiment, options, &run_dir, part)?;
    let t_swept = clock.elapsed().as_secs_f64();

    mine.pairs = Some(pair_counts(&plans, to_sweep.len()));
    mine.cells = Some(cells);
    mine.timings = Some(Timings {
        load_seconds: t_loaded,
        validate_seconds: t_validated - t_loaded,
        sweep_seconds: t_swept - t_validated,
        write_seconds: clock.elapsed().as_secs_f64() - t_swept,
        ..Timings::default()
    });
    finish_manifest(
        &mut mine,
        &model,
        shard.experiment,
        clock.elapsed().as_secs_f64(),
    );
    let manifest_path = layout::shard_manifest_path(&run_dir, choice.shard);
    mine.write_to(&manifest_path)
        .map_err(RunnerError::write_run(&run_dir))?;
    options.say(format!("shard {} complete: {cells} cells", choice.shard));
    let outcome = outcome_of(&run_dir, Some(&mine));
    match options.merge {
        true => merge_if_last(&shard, &plans, outcome),
        false => Ok(outcome),
    }
}

/// Path kinds are swept whole per pair and direction, not in the engine's batches a
/// sharded run divides, so a sharded run refuses them before anything is written.
fn refuse_paths(experiment: &Experiment, choice: &ShardChoice) -> Result<(), RunnerError> {
    let paths: Vec<&str> = (experiment.sweep.kinds.iter())
        .filter(|k| actpatch_patching::path::is_path(**k))
        .map(|k| k.name())
        .collect();
    match paths.is_empty() {
        true => Ok(()),
        false => Err(RunnerError::Input(format!(
            "[sweep] kinds has {}, but path patching cannot be sharded yet (shard {} from {}): run this experiment without --shard (and without the Slurm/Kubernetes array variables), or move the path kinds into an experiment file of their own and run that one unsharded",
            paths.join(" and "),
            choice.shard,
            choice.from
        ))),
    }
}

/// What sweeping this shard's part of the run needs.
struct Shard<'a> {
    model: &'a HookedTransformer,
    experiment: &'a Experiment,
    options: &'a RunOptions,
    run_dir: &'a Path,
    spec: ShardSpec,
}

impl Shard<'_> {
    /// Plans every pair's batches, sweeps this shard's and writes its part; returns
    /// the number of cells and records the share in `mine`.
    fn sweep(&self, to_sweep: &[&PairPlan], mine: &mut Manifest) -> Result<usize, RunnerError> {
        let mut batches = Vec::new();
        for plan in to_sweep {
            batches.extend(pair_batches(
                self.model,
                self.experiment,
                plan,
                self.options,
            )?);
        }
        let costs: Vec<u64> = batches.iter().map(|(_, b)| b.cost).collect();
        let owner = assign(&costs, self.spec.count);
        let owned: Vec<_> = (batches.iter().zip(&owner))
            .filter(|(_, shard)| **shard == self.spec.index)
            .map(|((key, batch), _)| (*key, *batch))
            .collect();
        if let Some(record) = mine.shard.as_mut() {
            record.batches = owned.len();
            record.total_batches = batches.len();
            record.cost = owned.iter().map(|(_, b)| b.cost).sum();
            record.total_cost = costs.iter().sum();
        }
        let n_cells: usize = owned.iter().map(|(_, b)| b.cells).sum();
        self.options.say(format!(
            "shard {}: {} of {} batches ({n_cells} cells, {:.1}% of the estimated work)",
            self.spec,
            owned.len(),
            batches.len(),
            100.0 * owned.iter().map(|(_, b)| b.cost).sum::<u64>() as f64
                / costs.iter().sum::<u64>().max(1) as f64
        ));
        let owned: HashSet<BatchKey> = owned.into_iter().map(|(key, _)| key).collect();
        let keep = |key: BatchKey| owned.contains(&key);
        let bar = cells_bar(n_cells as u64, ProgressMode::detect(self.options.quiet));
        let run_id = mine.run_id.clone();
        let mut rows = Vec::new();
        let mine_pairs = to_sweep
            .iter()
            .filter(|plan| owned.iter().any(|key| key.pair == plan.index));
        for (done, plan) in mine_pairs.enumerate() {
            let swept = sweep_pair_batches(
                self.model,
                self.experiment,
                plan,
                (self.options, &keep),
                &bar,
            )?;
            rows.extend(cell_rows(
                self.experiment,
                self.model,
                &run_id,
                std::slice::from_ref(&swept),
            ));
            test_point(done + 1)?;
        }
        bar.finish_and_clear();
        let part = layout::part_path(self.run_dir, self.spec);
        actpatch_report::tables::write_cells(&part, &rows)
            .map_err(RunnerError::write_run(self.run_dir))?;
        Ok(rows.len())
    }
}

/// The shard's manifest as it starts: `running`, with what every shard of the run
/// must share.
fn shard_manifest(prepared: &Prepared, run_id: &str, choice: &ShardChoice) -> Manifest {
    let options = &prepared.options;
    let experiment_file = std::fs::canonicalize(&prepared.experiment_path)
        .unwrap_or(prepared.experiment_path.clone());
    Manifest {
        status: RunStatus::Running,
        run_id: run_id.to_string(),
        experiment: prepared.experiment.experiment.name.clone(),
        experiment_repository: crate::manifest::RepositoryState::of(&experiment_file),
        experiment_file,
        experiment_sha256: prepared.experiment_sha256.clone(),
        options: run_choices(options),
        tool: Tool::this(),
        started: chrono::Utc::now().to_rfc3339(),
        device: Some(prepared.experiment.model.device.clone()),
        shards: Some(choice.shard.count),
        shard: Some(ShardRecord {
            index: choice.shard.index,
            count: choice.shard.count,
            from: choice.from.to_string(),
            max_batch_mib: options.max_batch_mib,
            host: host_name(),
            ..ShardRecord::default()
        }),
        ..Manifest::default()
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Refuses (bad input, nothing written) when the run folder holds a run or shards
/// that `mine` cannot merge with.
fn check_siblings(run_dir: &Path, mine: &Manifest) -> Result<(), RunnerError> {
    let shard = mine
        .shard
        .as_ref()
        .map(|s| format!("{}/{}", s.index, s.count));
    let shard = shard.unwrap_or_default();
    let refuse = |what: String| {
        RunnerError::Input(format!(
            "shard {shard} cannot join run {}: {what}. Give this run another --run-id (or --out).",
            run_dir.display()
        ))
    };
    if let Ok(Some(run)) = Manifest::read(run_dir) {
        if run.experiment_sha256 != mine.experiment_sha256 || run.shards.is_none() {
            let what = match run.shards {
                None => "it holds a run that is not sharded".to_string(),
                Some(_) => format!(
                    "it holds a run of {} (SHA-256 {}…), another experiment file than this shard's {} ({}…)",
                    run.experiment_file.display(),
                    run.experiment_sha256.chars().take(12).collect::<String>(),
                    mine.experiment_file.display(),
                    mine.experiment_sha256.chars().take(12).collect::<String>()
                ),
            };
            return Err(refuse(what));
        }
    }
    for (spec, manifest) in layout::read_shards(run_dir) {
        let other = manifest.map_err(refuse)?;
        if let Some(why) = mismatch(&other, mine) {
            return Err(refuse(format!(
                "its shard {spec} differs: this shard {why}"
            )));
        }
    }
    Ok(())
}

/// `Some` when there is nothing to do: the run is merged, or this shard is complete
/// (then merging if every shard is and `options.merge`).
fn already_done(
    run_dir: &Path,
    mine: &Manifest,
    options: &RunOptions,
) -> Result<Option<RunOutcome>, RunnerError> {
    let Some(spec) = mine.shard.as_ref() else {
        return Ok(None);
    };
    let spec = ShardSpec::new(spec.index, spec.count).map_err(RunnerError::Input)?;
    let run = Manifest::read(run_dir).ok().flatten();
    if run.as_ref().is_some_and(|r| r.complete()) {
        options.say(format!(
            "run {} is already merged; nothing to do",
            run_dir.display()
        ));
        return Ok(Some(outcome_of(run_dir, run.as_ref())));
    }
    let own = Manifest::read_from(&layout::shard_manifest_path(run_dir, spec))
        .ok()
        .flatten();
    let done =
        own.as_ref().is_some_and(|m| m.complete()) && layout::part_path(run_dir, spec).is_file();
    if !done {
        return Ok(None);
    }
    options.say(format!(
        "shard {spec} of {} is already complete; nothing to run",
        run_dir.display()
    ));
    if options.merge && layout::complete_shards(run_dir, spec.count) == spec.count {
        return super::merge::merge(run_dir, options).map(Some);
    }
    Ok(Some(outcome_of(run_dir, own.as_ref())))
}

fn outcome_of(run_dir: &Path, manifest: Option<&Manifest>) -> RunOutcome {
    let pairs = manifest.and_then(|m| m.pairs.clone()).unwrap_or_default();
    RunOutcome {
        run_dir: run_dir.to_path_buf(),
        passed: pairs.passed,
        failed: pairs.failed,
        cells: manifest.and_then(|m| m.cells).unwrap_or(0),
    }
}

/// Creates the run folder's shard folders and writes the run's manifest (when no
/// shard has yet) and this shard's, both `running`.
fn start_shard(run_dir: &Path, mine: &Manifest) -> Result<(), RunnerError> {
    let spec = (mine.shard.as_ref())
        .and_then(|s| ShardSpec::new(s.index, s.count).ok())
        .ok_or_else(|| RunnerError::Input("a shard manifest without its shard".into()))?;
    let part_dir: PathBuf = (layout::part_path(run_dir, spec).parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for dir in [layout::shards_dir(run_dir), part_dir] {
        std::fs::create_dir_all(&dir).map_err(|e| super::folder::unwritable(&dir, e))?;
    }
    if !run_dir.join("manifest.json").is_file() {
        let run = Manifest {
            shard: None,
            device: None,
            ..mine.clone()
        };
        run.write(run_dir)
            .map_err(RunnerError::write_run(run_dir))?;
    }
    mine.write_to(&layout::shard_manifest_path(run_dir, spec))
        .map_err(RunnerError::write_run(run_dir))
}

/// Merges the run when every shard is complete, unless another shard is merging.
fn merge_if_last(
    shard: &Shard,
    plans: &[PairPlan],
    outcome: RunOutcome,
) -> Result<RunOutcome, RunnerError> {
    let count = shard.spec.count;
    if layout::complete_shards(shard.run_dir, count) < count {
        return Ok(outcome);
    }
    let lock = layout::merge_lock_path(shard.run_dir);
    let taken = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock);
    if taken.is_err() {
        shard.options.say(format!(
            "every shard is complete and another process is merging them ({} exists; if none is, run `actpatch merge {}`)",
            lock.display(),
            shard.run_dir.display()
        ));
        return Ok(outcome);
    }
    shard.options.say("every shard is complete: merging");
    let loaded = (shard.model, shard.experiment, shard.options);
    let merged = super::merge::merge_loaded(shard.run_dir, loaded, plans);
    let _ = std::fs::remove_file(&lock);
    merged
}
