//! A run from start to end: load the experiment and the model, validate every pair,
//! sweep, write the outputs. `check` stops after validation; `resume` finishes an
//! interrupted run.
//!
//! Bad input (file, model, positions, output folder) is found before anything is
//! written, and nothing is left behind (exit 2). The run folder then gets a manifest
//! with `status = "running"`, each pair's cells as the pair finishes, and the final
//! tables, figures and report, each written atomically; the manifest says
//! `"complete"` last. A run that fails after that (a computation or a write, exit 1)
//! keeps what it finished for `actpatch run --resume`.

mod circuit_curves;
mod circuit_edges;
mod circuit_intervals;
mod circuit_scores;
mod circuit_shards;
mod circuits;
mod folder;
mod load;
mod merge;
mod partial;
mod progress;
mod shard;
mod sweep_all;
mod sweep_gaussian;
mod sweep_pair;
mod sweep_paths;

use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_model::HookedTransformer;

use crate::experiment::corruption::DEFAULT_NOISE_MULTIPLIER;
use crate::experiment::Experiment;
use crate::manifest::{
    sha256_bytes, CorruptionRecord, Manifest, PairCounts, RepositoryState, RunChoices, RunStatus,
    Timings, Tool,
};
use crate::options::RunOptions;
use crate::outputs::{write_outputs, SweptPair, WriteTimings};
use crate::validate::PairPlan;
use crate::RunnerError;
use folder::{create_run_dir, ensure_writable, model_record};
pub use load::check;
use load::{load_experiment, load_model, pairs_to_sweep, validate_all};
pub use merge::merge;
use partial::partial_dir;
use sweep_all::SweepContext;

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub passed: usize,
    pub failed: usize,
    pub cells: usize,
}

/// How a run starts: fresh, or resuming an interrupted run folder.
enum Start {
    Fresh {
        experiment_path: PathBuf,
    },
    Resume {
        run_dir: PathBuf,
        manifest: Box<Manifest>,
    },
}

/// Runs the experiment at `path` (only `options.shard`'s part of it, for a shard).
pub fn run(path: &Path, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    if let Some(choice) = &options.shard {
        return shard::run_shard(path, options, choice);
    }
    execute(
        Start::Fresh {
            experiment_path: path.to_path_buf(),
        },
        options,
    )
}

/// Finishes the interrupted run in `run_dir`: pairs whose cells were saved are read
/// back, the others swept; the tables equal those of an uninterrupted run.
pub fn resume(run_dir: &Path, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    let manifest = Manifest::read(run_dir)
        .map_err(|e| RunnerError::Input(format!("cannot resume: {e}")))?
        .ok_or_else(|| {
            RunnerError::Input(format!(
                "cannot resume {}: it has no manifest.json. Give the folder of a run that was interrupted.",
                run_dir.display()
            ))
        })?;
    if manifest.complete() {
        return Err(RunnerError::Input(format!(
            "{} is already complete; nothing to resume",
            run_dir.display()
        )));
    }
    if let Some(count) = manifest.shards {
        return Err(RunnerError::Input(format!(
            "{} is a run of {count} shards: run its missing shards again (actpatch run FILE --shard i/{count} --run-id {}), then `actpatch merge {}`",
            run_dir.display(),
            manifest.run_id,
            run_dir.display()
        )));
    }
    execute(
        Start::Resume {
            run_dir: run_dir.to_path_buf(),
            manifest: Box::new(manifest),
        },
        options,
    )
}

/// Everything checked before the model loads: the experiment, its file's hash, the
/// options (a resumed run's own), and where the run goes.
struct Prepared {
    experiment: Experiment,
    experiment_path: PathBuf,
    experiment_sha256: String,
    options: RunOptions,
}

fn prepare(start: &Start, options: &RunOptions) -> Result<Prepared, RunnerError> {
    let (experiment_path, mut options) = match start {
        Start::Fresh { experiment_path } => (experiment_path.clone(), options.clone()),
        Start::Resume { manifest, .. } => {
            if manifest.experiment_file.as_os_str().is_empty() {
                return Err(RunnerError::Input(
                    "cannot resume: the manifest names no experiment_file".into(),
                ));
            }
            // The interrupted run's own choices, so the tables come out the same.
            let resumed = RunOptions {
                no_validate: manifest.options.no_validate,
                naive: manifest.options.naive,
                model_path: manifest.options.model_path.clone(),
                device: manifest.options.device.clone(),
                ..options.clone()
            };
            (manifest.experiment_file.clone(), resumed)
        }
    };
    let text = std::fs::read(&experiment_path).map_err(|e| {
        RunnerError::Input(format!(
            "cannot read experiment file {}: {e}",
            experiment_path.display()
        ))
    })?;
    let experiment_sha256 = sha256_bytes(&text);
    if let Start::Resume { manifest, .. } = start {
        if manifest.experiment_sha256 != experiment_sha256 {
            return Err(RunnerError::Input(format!(
                "cannot resume: {} changed since the run started (its SHA-256 differs). Start a new run instead.",
                experiment_path.display()
            )));
        }
    }
    let experiment = load_experiment(&experiment_path, &options)?;
    if let Start::Fresh { .. } = start {
        let out_dir = (options.out_dir.clone())
            .or_else(|| experiment.output.dir.clone())
            .unwrap_or_else(|| Path::new("results").join(&experiment.experiment.name));
        ensure_writable(&out_dir)?;
        options.out_dir = Some(out_dir);
    }
    Ok(Prepared {
        experiment,
        experiment_path,
        experiment_sha256,
        options,
    })
}

/// Creates the run folder and its `running` manifest (or takes the resumed run's).
fn open_run(start: Start, prepared: &Prepared) -> Result<(PathBuf, Manifest), RunnerError> {
    match start {
        Start::Resume { run_dir, manifest } => Ok((run_dir, *manifest)),
        Start::Fresh { .. } => {
            let out_dir = prepared.options.out_dir.clone().unwrap_or_default();
            let (run_id, run_dir) = create_run_dir(&out_dir, prepared.options.run_id.as_deref())?;
            let experiment_file = std::fs::canonicalize(&prepared.experiment_path)
                .unwrap_or(prepared.experiment_path.clone());
            let options = &prepared.options;
            let manifest = Manifest {
                status: RunStatus::Running,
                run_id,
                experiment: prepared.experiment.experiment.name.clone(),
                experiment_repository: RepositoryState::of(&experiment_file),
                experiment_file,
                experiment_sha256: prepared.experiment_sha256.clone(),
                options: run_choices(options),
                tool: Tool::this(),
                started: chrono::Utc::now().to_rfc3339(),
                ..Manifest::default()
            };
            manifest
                .write(&run_dir)
                .map_err(RunnerError::write_run(&run_dir))?;
            Ok((run_dir, manifest))
        }
    }
}

/// The choices a manifest records (and a resumed run or a merge repeats).
fn run_choices(options: &RunOptions) -> RunChoices {
    RunChoices {
        no_validate: options.no_validate,
        naive: options.naive,
        model_path: options.model_path.clone(),
        device: options.device.clone(),
    }
}

fn execute(start: Start, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    let clock = Instant::now();
    let prepared = prepare(&start, options)?;
    let (experiment, options) = (&prepared.experiment, &prepared.options);
    let model = load_model(experiment, options)?;
    let t_loaded = clock.elapsed().as_secs_f64();
    let plans = validate_all(&model, experiment, options, true)?;
    let t_validated = clock.elapsed().as_secs_f64();

    let to_sweep = pairs_to_sweep(&plans, experiment, options);
    circuits::check(&model, experiment, &to_sweep)?;

    // Only now, with every input checked, does the run folder appear.
    let (run_dir, mut manifest) = open_run(start, &prepared)?;
    options.say(format!("run {} → {}", manifest.run_id, run_dir.display()));
    let run_id = manifest.run_id.clone();
    let context = SweepContext {
        model: &model,
        experiment,
        options,
        run_dir: &run_dir,
        run_id: &run_id,
    };
    let swept = context.sweep_all(&to_sweep)?;
    options.stop_point(&run_dir)?;
    let circuit = circuits::run(
        &model,
        experiment,
        options,
        (&run_id, &run_dir),
        &to_sweep,
        circuits::ExactSource::Compute,
    )?;
    let t_swept = clock.elapsed().as_secs_f64();

    let stages = Stages {
        t_loaded,
        t_validated,
        t_swept,
    };
    let circuit_section = record_circuit(&mut manifest, circuit);
    finish_run(
        &context,
        (&plans, &swept),
        (&mut manifest, circuit_section.as_deref()),
        stages,
        clock,
    )
}

/// The circuit stage's outcome into the manifest; its report section.
fn record_circuit(
    manifest: &mut Manifest,
    circuit: Option<circuits::CircuitOutcome>,
) -> Option<String> {
    let circuit = circuit?;
    manifest.circuit_top_edges = circuit.top_edges();
    manifest.circuit_areas = (circuit.curves.as_ref())
        .map(|c| c.areas.clone())
        .unwrap_or_default();
    manifest.circuit_seconds = Some(circuit.seconds);
    let section = circuit.report_section();
    manifest.circuit_files = circuit.files;
    Some(section)
}

/// When each stage ended, in seconds since the run started.
struct Stages {
    t_loaded: f64,
    t_validated: f64,
    t_swept: f64,
}

/// Writes the outputs and the complete manifest of a swept run.
fn finish_run(
    context: &SweepContext,
    (plans, swept): (&[PairPlan], &[SweptPair]),
    (manifest, circuit_section): (&mut Manifest, Option<&str>),
    stages: Stages,
    clock: Instant,
) -> Result<RunOutcome, RunnerError> {
    let SweepContext {
        model,
        experiment,
        options,
        run_dir,
        ..
    } = *context;
    options.say(format!(
        "swept in {:.1} s; writing tables, figures and reports",
        stages.t_swept - stages.t_validated
    ));
    let writing = Instant::now();
    let started = chrono::DateTime::parse_from_rfc3339(&manifest.started)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let (cells, mut written) = write_outputs(
        experiment,
        model,
        (&manifest.run_id, run_dir),
        (plans, swept),
        circuit_section,
        (started, clock.elapsed().as_secs_f64()),
    )
    .map_err(RunnerError::write_run(run_dir))?;
    let _ = std::fs::remove_dir_all(partial_dir(run_dir));
    let page_started = Instant::now();

    manifest.pairs = Some(pair_counts(plans, swept.len()));
    let passed = plans.iter().filter(|p| p.passed()).count();
    manifest.cells = Some(cells);
    manifest.costs = crate::outputs::accuracy::cost_records(swept);
    finish_manifest(manifest, model, experiment, clock.elapsed().as_secs_f64());
    manifest.corruption = corruption_record(experiment, plans);
    // From the files just written and the final manifest: `actpatch report` renders
    // the same page from the folder.
    let page_manifest = serde_json::to_value(&*manifest).ok();
    actpatch_report::html::run_page::write_run_page(run_dir, page_manifest.as_ref())
        .map_err(RunnerError::write_run(run_dir))?;
    written.report += page_started.elapsed().as_secs_f64();
    manifest.timings = Some(timings(&stages, writing.elapsed().as_secs_f64(), written));
    manifest
        .write(run_dir)
        .map_err(RunnerError::write_run(run_dir))?;
    options.say(format!(
        "{cells} cells, {passed} of {} pairs passed; report: {}",
        plans.len(),
        run_dir.join("report.html").display()
    ));
    if swept.is_empty() {
        return Err(RunnerError::NoPairPassed(format!(
            "0 of {} pairs; baselines and report written to {}",
            plans.len(),
            run_dir.display()
        )));
    }
    Ok(RunOutcome {
        run_dir: run_dir.to_path_buf(),
        passed,
        failed: plans.len() - passed,
        cells,
    })
}

/// The manifest's timings: each stage, and what writing each kind of output took.
fn timings(stages: &Stages, write_seconds: f64, written: WriteTimings) -> Timings {
    Timings {
        load_seconds: stages.t_loaded,
        validate_seconds: stages.t_validated - stages.t_loaded,
        sweep_seconds: stages.t_swept - stages.t_validated,
        write_seconds,
        tables_seconds: Some(written.tables),
        statistics_seconds: Some(written.statistics),
        figures_seconds: Some(written.figures),
        report_seconds: Some(written.report),
    }
}

/// How the pairs fared, `swept` of them swept.
fn pair_counts(plans: &[PairPlan], swept: usize) -> PairCounts {
    let passed = plans.iter().filter(|p| p.passed()).count();
    PairCounts {
        total: plans.len(),
        passed,
        failed: plans.len() - passed,
        swept,
        reference: plans.iter().filter(|p| p.reference()).count(),
    }
}

/// What a complete run's manifest adds: the model, the sweep, the end.
fn finish_manifest(
    manifest: &mut Manifest,
    model: &HookedTransformer,
    experiment: &Experiment,
    wall_seconds: f64,
) {
    manifest.model = Some(model_record(model, experiment));
    manifest.tokenizer = Some(format!("{:?}", model.files().tokenizer));
    manifest.prepend_bos = Some(experiment.model.prepend_bos);
    manifest.device = Some(experiment.model.device.clone());
    manifest.kinds = (experiment.sweep.kinds.iter())
        .map(|k| k.name().to_string())
        .collect();
    manifest.directions = (experiment.sweep.direction.directions().iter())
        .map(|d| d.name().to_string())
        .collect();
    let statistics = experiment.statistics;
    manifest.statistics = Some(crate::manifest::StatisticsRecord {
        bootstrap: statistics.bootstrap,
        seed: statistics.seed,
        level: statistics.level,
    });
    manifest.finished = Some(chrono::Utc::now().to_rfc3339());
    manifest.wall_seconds = Some(wall_seconds);
    manifest.status = RunStatus::Complete;
}

/// The Gaussian noise the run's pairs were traced with, if any pair was.
fn corruption_record(experiment: &Experiment, plans: &[PairPlan]) -> Option<CorruptionRecord> {
    let noise = plans.iter().find_map(|p| p.gaussian.as_ref())?.noise;
    let given = experiment.corruption;
    Some(CorruptionRecord {
        kind: "gaussian".into(),
        samples: noise.spec.samples,
        seed: noise.spec.seed,
        noise: noise.scale,
        embedding_std: noise.embedding_std,
        noise_multiplier: match given.noise {
            Some(_) => None,
            None => Some(given.noise_multiplier.unwrap_or(DEFAULT_NOISE_MULTIPLIER)),
        },
        window: noise.spec.window,
        metric: noise.spec.metric.name().to_string(),
    })
}
