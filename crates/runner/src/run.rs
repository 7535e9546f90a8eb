//! A run from start to end: load the experiment and the model, validate every pair,
//! sweep, write the outputs. `check` stops after validation; `resume` finishes an
//! interrupted run.
//!
//! Bad input (file, model, positions, output folder) is found before anything is
//! written. The run folder then gets a manifest with `status = "running"`, each
//! pair's cells as the pair finishes, and the final tables, figures and report, each
//! written atomically; the manifest says `"complete"` last.

use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_hooks::HookPoint;
use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};
use serde_json::{json, Value};

use crate::experiment::Experiment;
use crate::manifest;
use crate::outputs::{write_outputs, SweptPair};
use crate::partial::{partial_dir, partial_path, pause_point, results_from_rows};
use crate::progress::{cells_bar, ProgressMode};
use crate::run_folder::{create_run_dir, describe_model, ensure_writable, unwritable};
use crate::sweep::PatchKind;
use crate::validate::{validate_pair, PairPlan};
use crate::{sweep_pair, RunnerError};

/// Command-line choices that override or extend the experiment file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Sweep pairs that fail validation too (still recorded as failed).
    pub no_validate: bool,
    /// Folder for runs, instead of `[output] dir`.
    pub out_dir: Option<PathBuf>,
    /// Memory budget of one batched forward pass, in MiB.
    pub max_batch_mib: usize,
    /// One full forward pass per batch of cells, no reuse (to check the fast path).
    pub naive: bool,
    /// Print nothing but errors.
    pub quiet: bool,
    /// A local model folder or GGUF file to use instead of the file's `[model]`.
    pub model_path: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            no_validate: false,
            out_dir: None,
            max_batch_mib: 1024,
            naive: false,
            quiet: false,
            model_path: None,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub passed: usize,
    pub failed: usize,
    pub cells: usize,
}

pub(crate) fn say(options: &RunOptions, text: impl AsRef<str>) {
    if !options.quiet {
        eprintln!("{}", text.as_ref());
    }
}

/// Loads the experiment file, with `--model-path` replacing its `[model]` source.
fn load_experiment(path: &Path, options: &RunOptions) -> Result<Experiment, RunnerError> {
    let mut experiment = Experiment::load(path)?;
    if let Some(model_path) = &options.model_path {
        experiment.model.path = Some(model_path.clone());
        experiment.model.id = None;
    }
    Ok(experiment)
}

fn load_model(
    experiment: &Experiment,
    options: &RunOptions,
) -> Result<HookedTransformer, RunnerError> {
    let device: DeviceSpec = experiment.model.device.parse()?;
    let source = match (&experiment.model.path, &experiment.model.id) {
        (Some(path), _) => ModelSource::Local(path.clone()),
        (None, Some(id)) => ModelSource::Hub {
            id: id.clone(),
            revision: experiment.model.revision.clone(),
        },
        (None, None) => return Err(RunnerError::Input("[model] needs `id` or `path`".into())),
    };
    let clock = Instant::now();
    say(
        options,
        format!("loading model {source} on {}…", experiment.model.device),
    );
    let model = HookedTransformer::load(&source, device)?;
    check_kinds(&model, &experiment.sweep.kinds)?;
    let dims = model.dims();
    say(
        options,
        format!(
            "loaded {} ({} layers, {} heads, d_model {}) in {:.1} s",
            dims.arch.name(),
            dims.n_layers,
            dims.n_heads,
            dims.d_model,
            clock.elapsed().as_secs_f64()
        ),
    );
    Ok(model)
}

/// Every patch kind's hook point exists in the model (e.g. no `resid_mid` where
/// attention and MLP run in parallel), checked before anything runs.
fn check_kinds(model: &HookedTransformer, kinds: &[PatchKind]) -> Result<(), RunnerError> {
    let space = model.hook_space();
    let has = |kind: &PatchKind| space.check(HookPoint::block(0, kind.site())).is_ok();
    if let Some(kind) = kinds.iter().find(|k| !has(k)) {
        let available: Vec<&str> = PatchKind::ALL
            .iter()
            .filter(|k| has(k))
            .map(|k| k.name())
            .collect();
        return Err(RunnerError::Input(format!(
            "[sweep] kinds: `{kind}` patches blocks.L.{}, which this {} model does not have. Patch kinds it has: {}",
            kind.site().suffix(),
            model.dims().arch.name(),
            available.join(", ")
        )));
    }
    Ok(())
}

/// Validates every pair, prints each outcome, and checks the sweep's positions.
fn validate_all(
    model: &HookedTransformer,
    experiment: &Experiment,
    options: &RunOptions,
) -> Result<Vec<PairPlan>, RunnerError> {
    let mut plans = Vec::new();
    say(
        options,
        format!(
            "validating {} pairs (baseline logit differences, answers, alignment)…",
            experiment.pairs.len()
        ),
    );
    for index in 0..experiment.pairs.len() {
        let plan = validate_pair(model, experiment, index)?;
        say(options, plan.describe());
        if let Some(list) = experiment.sweep.positions.list() {
            let n = plan.corrupted_tokens.len();
            if let Some(bad) = list.iter().find(|p| **p >= n) {
                return Err(RunnerError::Input(format!(
                    "[sweep] positions lists {bad}, but pair `{}` has {n} tokens (positions 0..={}). Use positions = \"all\" or positions below {n}.",
                    plan.name,
                    n - 1
                )));
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// Validates the file and every pair's baselines without sweeping.
pub fn check(path: &Path, options: &RunOptions) -> Result<(usize, usize), RunnerError> {
    let experiment = load_experiment(path, options)?;
    let model = load_model(&experiment, options)?;
    let plans = validate_all(&model, &experiment, options)?;
    let passed = plans.iter().filter(|p| p.passed()).count();
    say(
        options,
        format!("{passed} of {} pairs pass validation", plans.len()),
    );
    if passed == 0 {
        return Err(RunnerError::NoPairPassed(format!(
            "0 of {} pairs",
            plans.len()
        )));
    }
    Ok((passed, plans.len() - passed))
}

/// How a run starts: fresh, or resuming an interrupted run folder.
enum Start {
    Fresh { experiment_path: PathBuf },
    Resume { run_dir: PathBuf, manifest: Value },
}

/// Runs the experiment at `path`.
pub fn run(path: &Path, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
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
    let manifest_path = run_dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        RunnerError::Input(format!(
            "cannot resume {}: no readable manifest.json ({e}). Give the folder of a run that was interrupted.",
            run_dir.display()
        ))
    })?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| {
        RunnerError::Input(format!(
            "cannot resume: {} is not valid JSON ({e})",
            manifest_path.display()
        ))
    })?;
    if manifest["status"] == "complete" {
        return Err(RunnerError::Input(format!(
            "{} is already complete; nothing to resume",
            run_dir.display()
        )));
    }
    execute(
        Start::Resume {
            run_dir: run_dir.to_path_buf(),
            manifest,
        },
        options,
    )
}

fn execute(start: Start, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    let clock = Instant::now();
    let (experiment_path, mut options) = match &start {
        Start::Fresh { experiment_path } => (experiment_path.clone(), options.clone()),
        Start::Resume { manifest, .. } => {
            let path = manifest["experiment_file"]
                .as_str()
                .map(PathBuf::from)
                .ok_or_else(|| {
                    RunnerError::Input(
                        "cannot resume: the manifest names no experiment_file".into(),
                    )
                })?;
            // The interrupted run's own choices, so the tables come out the same.
            let mut resumed = options.clone();
            resumed.no_validate = manifest["options"]["no_validate"]
                .as_bool()
                .unwrap_or(false);
            resumed.naive = manifest["options"]["naive"].as_bool().unwrap_or(false);
            resumed.model_path = manifest["options"]["model_path"]
                .as_str()
                .map(PathBuf::from);
            (path, resumed)
        }
    };
    let text = std::fs::read(&experiment_path).map_err(|e| {
        RunnerError::Input(format!(
            "cannot read experiment file {}: {e}",
            experiment_path.display()
        ))
    })?;
    let experiment_sha256 = manifest::sha256_bytes(&text);
    if let Start::Resume { manifest, .. } = &start {
        if manifest["experiment_sha256"].as_str() != Some(experiment_sha256.as_str()) {
            return Err(RunnerError::Input(format!(
                "cannot resume: {} changed since the run started (its SHA-256 differs). Start a new run instead.",
                experiment_path.display()
            )));
        }
    }
    let experiment = load_experiment(&experiment_path, &options)?;
    if let Start::Fresh { .. } = &start {
        let out_dir = options
            .out_dir
            .clone()
            .or_else(|| experiment.output.dir.clone())
            .unwrap_or_else(|| Path::new("results").join(&experiment.experiment.name));
        ensure_writable(&out_dir)?;
        options.out_dir = Some(out_dir);
    }

    let model = load_model(&experiment, &options)?;
    let t_loaded = clock.elapsed().as_secs_f64();
    let plans = validate_all(&model, &experiment, &options)?;
    let t_validated = clock.elapsed().as_secs_f64();

    // Only now, with every input checked, does the run folder appear.
    let (run_id, run_dir, mut manifest) = match start {
        Start::Fresh { .. } => {
            let out_dir = options.out_dir.clone().unwrap_or_default();
            let (run_id, run_dir) = create_run_dir(&out_dir)?;
            let manifest = json!({
                "status": "running",
                "run_id": run_id,
                "experiment": experiment.experiment.name,
                "experiment_file": std::fs::canonicalize(&experiment_path).unwrap_or(experiment_path.clone()).display().to_string(),
                "experiment_sha256": experiment_sha256,
                "options": {
                    "no_validate": options.no_validate,
                    "naive": options.naive,
                    "model_path": options.model_path.as_ref().map(|p| p.display().to_string()),
                },
                "tool": manifest::tool(),
                "git_commit": manifest::git_commit(),
                "started": chrono::Utc::now().to_rfc3339(),
            });
            manifest::write(&run_dir, &manifest)?;
            (run_id, run_dir, manifest)
        }
        Start::Resume { run_dir, manifest } => {
            let run_id = manifest["run_id"].as_str().unwrap_or_default().to_string();
            (run_id, run_dir, manifest)
        }
    };
    say(&options, format!("run {run_id} → {}", run_dir.display()));

    let sweep_all = options.no_validate || !experiment.validate.enabled;
    let to_sweep: Vec<&PairPlan> = plans
        .iter()
        .filter(|p| (p.passed() || sweep_all) && p.baseline().is_some())
        .collect();
    let total: usize = to_sweep
        .iter()
        .map(|p| sweep_pair::cell_count(&experiment, &model, p))
        .sum();
    say(
        &options,
        format!("sweeping {} pairs: {total} cells", to_sweep.len()),
    );
    let bar = cells_bar(total as u64, ProgressMode::detect(options.quiet));
    std::fs::create_dir_all(partial_dir(&run_dir)).map_err(|e| unwritable(&run_dir, e))?;
    let mut swept = Vec::new();
    for (done, plan) in to_sweep.iter().enumerate() {
        let saved = partial_path(&run_dir, plan.index);
        let pair = if saved.is_file() {
            let rows = actpatch_report::tables::read_cells(&saved)?;
            bar.inc(rows.len() as u64);
            say(
                &options,
                format!(
                    "{}: {} cells read back from {}",
                    plan.name,
                    rows.len(),
                    saved.display()
                ),
            );
            let skipped = skipped_kinds(&experiment, plan);
            SweptPair {
                plan,
                results: results_from_rows(&rows, &saved)?,
                skipped,
            }
        } else {
            let pair = sweep_pair::sweep_pair(&model, &experiment, plan, &options, &bar)?;
            let rows = crate::outputs::cell_rows(
                &experiment,
                &model,
                &run_id,
                std::slice::from_ref(&pair),
            );
            actpatch_report::tables::write_cells(&saved, &rows)?;
            pair
        };
        swept.push(pair);
        pause_point(done + 1);
    }
    bar.finish_and_clear();
    let t_swept = clock.elapsed().as_secs_f64();
    say(
        &options,
        format!(
            "swept {total} cells in {:.1} s; writing tables, figures and reports",
            t_swept - t_validated
        ),
    );

    let passed = plans.iter().filter(|p| p.passed()).count();
    let failed = plans.len() - passed;
    let started = manifest["started"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    let cells = write_outputs(
        &experiment,
        &model,
        &run_id,
        &run_dir,
        &plans,
        &swept,
        started,
        clock.elapsed().as_secs_f64(),
    )?;
    let _ = std::fs::remove_dir_all(partial_dir(&run_dir));

    describe_model(&mut manifest, &model, &experiment);
    manifest["finished"] = json!(chrono::Utc::now().to_rfc3339());
    manifest["wall_seconds"] = json!(clock.elapsed().as_secs_f64());
    manifest["timings"] = json!({
        "load_seconds": t_loaded,
        "validate_seconds": t_validated - t_loaded,
        "sweep_seconds": t_swept - t_validated,
        "write_seconds": clock.elapsed().as_secs_f64() - t_swept,
    });
    manifest["pairs"] =
        json!({ "total": plans.len(), "passed": passed, "failed": failed, "swept": swept.len() });
    manifest["cells"] = json!(cells);
    manifest["kinds"] = json!(experiment
        .sweep
        .kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>());
    manifest["status"] = json!("complete");
    // From the files just written and the final manifest: `actpatch report` renders
    // the same page from the folder.
    actpatch_report::html::run_page::write_run_page(&run_dir, Some(&manifest))?;
    manifest::write(&run_dir, &manifest)?;
    say(
        &options,
        format!(
            "{cells} cells, {passed} of {} pairs passed; report: {}",
            plans.len(),
            run_dir.join("report.html").display()
        ),
    );
    if swept.is_empty() {
        return Err(RunnerError::NoPairPassed(format!(
            "0 of {} pairs; baselines and report written to {}",
            plans.len(),
            run_dir.display()
        )));
    }
    Ok(RunOutcome {
        run_dir,
        passed,
        failed,
        cells,
    })
}

/// Kinds a pair cannot be swept with, and why.
pub(crate) fn skipped_kinds(experiment: &Experiment, plan: &PairPlan) -> Vec<String> {
    let aligned = plan.map.as_ref().is_some_and(|m| m.is_identity());
    experiment
        .sweep
        .kinds
        .iter()
        .filter(|k| **k == PatchKind::HeadPattern && !aligned)
        .map(|k| format!("{k} not swept: attention patterns cannot be patched between prompts of different token lengths"))
        .collect()
}
