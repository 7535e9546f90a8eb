//! A run from start to end: load the experiment and the model, validate every pair,
//! sweep, write the outputs. `check` stops after validation.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_hooks::CacheFilter;
use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::experiment::Experiment;
use crate::manifest;
use crate::outputs::{write_outputs, SweptPair};
use crate::sweep::{cells_of, hook_points, rows_for_budget, sweep, PairSweep, PatchKind};
use crate::validate::{validate_pair, PairPlan};
use crate::RunnerError;

/// Command-line choices that override or extend the experiment file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Sweep pairs that fail validation too (still recorded as failed).
    pub no_validate: bool,
    /// Folder runs go in, instead of `[output] dir`.
    pub out_dir: Option<PathBuf>,
    /// Memory budget of one batched forward pass, in MiB.
    pub max_batch_mib: usize,
    /// Print nothing but errors.
    pub quiet: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            no_validate: false,
            out_dir: None,
            max_batch_mib: 1024,
            quiet: false,
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

fn say(options: &RunOptions, text: impl AsRef<str>) {
    if !options.quiet {
        eprintln!("{}", text.as_ref());
    }
}

fn load_model(experiment: &Experiment) -> Result<HookedTransformer, RunnerError> {
    let device: DeviceSpec = experiment.model.device.parse()?;
    let source = match (&experiment.model.path, &experiment.model.id) {
        (Some(path), _) => ModelSource::Local(path.clone()),
        (None, Some(id)) => ModelSource::Hub {
            id: id.clone(),
            revision: experiment.model.revision.clone(),
        },
        (None, None) => return Err(RunnerError::Input("[model] needs `id` or `path`".into())),
    };
    Ok(HookedTransformer::load(&source, device)?)
}

/// Validates every pair and prints each outcome.
fn validate_all(
    model: &HookedTransformer,
    experiment: &Experiment,
    options: &RunOptions,
) -> Result<Vec<PairPlan>, RunnerError> {
    let mut plans = Vec::new();
    for index in 0..experiment.pairs.len() {
        let plan = validate_pair(model, experiment, index)?;
        let ld = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
        say(
            options,
            format!(
                "{} {} [{}]\n    clean     {:?} → {} tokens {:?}\n    corrupted {:?} → {} tokens {:?}\n    logit diff {:?} − {:?}: clean {}, corrupted {}",
                if plan.passed() { "PASS" } else { "FAIL" },
                plan.name,
                plan.spec.concept,
                plan.spec.clean,
                plan.clean_tokens.len(),
                plan.clean_str,
                plan.spec.corrupted,
                plan.corrupted_tokens.len(),
                plan.corrupted_str,
                plan.spec.correct,
                plan.spec.incorrect,
                ld(plan.clean_logit_diff),
                ld(plan.corrupted_logit_diff),
            ),
        );
        for reason in &plan.reasons {
            say(options, format!("    ✗ {reason}"));
        }
        for warning in &plan.warnings {
            say(options, format!("    ! {warning}"));
        }
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
    let experiment = Experiment::load(path)?;
    let model = load_model(&experiment)?;
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

/// A unique folder `<dir>/<timestamp>-<random>` for this run.
fn create_run_dir(dir: &Path) -> Result<(String, PathBuf), RunnerError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        RunnerError::Input(format!(
            "cannot create the output folder {}: {e}. Choose a writable folder with [output] dir or --out.",
            dir.display()
        ))
    })?;
    for _ in 0..16 {
        let id = format!(
            "{}-{:04x}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            rand::random::<u16>()
        );
        let run_dir = dir.join(&id);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => return Ok((id, run_dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(RunnerError::Input(format!(
                    "cannot create the run folder {}: {e}. Choose a writable folder with [output] dir or --out.",
                    run_dir.display()
                )))
            }
        }
    }
    Err(RunnerError::Input(format!(
        "could not find a free run id under {}",
        dir.display()
    )))
}

/// Runs the experiment at `path`.
pub fn run(path: &Path, options: &RunOptions) -> Result<RunOutcome, RunnerError> {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let text = std::fs::read(path).map_err(|e| {
        RunnerError::Input(format!(
            "cannot read experiment file {}: {e}",
            path.display()
        ))
    })?;
    let experiment = Experiment::load(path)?;
    let out_dir = options
        .out_dir
        .clone()
        .or_else(|| experiment.output.dir.clone())
        .unwrap_or_else(|| Path::new("results").join(&experiment.experiment.name));
    let (run_id, run_dir) = create_run_dir(&out_dir)?;
    let mut manifest = json!({
        "status": "running",
        "run_id": run_id,
        "experiment": experiment.experiment.name,
        "experiment_file": path.display().to_string(),
        "experiment_sha256": manifest::sha256_bytes(&text),
        "tool": manifest::tool(),
        "git_commit": manifest::git_commit(),
        "started": started.to_rfc3339(),
    });
    manifest::write(&run_dir, &manifest)?;
    say(options, format!("run {run_id} → {}", run_dir.display()));

    let model = load_model(&experiment)?;
    let t_loaded = clock.elapsed().as_secs_f64();
    let plans = validate_all(&model, &experiment, options)?;
    let t_validated = clock.elapsed().as_secs_f64();
    let sweep_all = options.no_validate || !experiment.validate.enabled;
    let to_sweep: Vec<&PairPlan> = plans
        .iter()
        .filter(|p| (p.passed() || sweep_all) && p.baseline().is_some())
        .collect();

    let dims = model.dims().clone();
    let kinds = &experiment.sweep.kinds;
    let points = hook_points(kinds, dims.n_layers);
    let positions_of = |plan: &PairPlan| -> Vec<usize> {
        let patched = plan
            .map
            .as_ref()
            .map(|m| m.patched_positions())
            .unwrap_or_default();
        match experiment.sweep.positions.list() {
            Some(list) => patched.into_iter().filter(|p| list.contains(p)).collect(),
            None => patched,
        }
    };
    let total: usize = to_sweep
        .iter()
        .map(|p| {
            kinds
                .iter()
                .map(|k| cells_of(*k, &dims, &positions_of(p)).len())
                .sum::<usize>()
        })
        .sum();
    let bar = progress_bar(total as u64, options);
    let mut swept = Vec::new();
    for plan in &to_sweep {
        let (Some(answers), Some(baseline), Some(map), Some(clean_log_probs)) = (
            plan.answers,
            plan.baseline(),
            plan.map.as_ref(),
            plan.clean_log_probs.as_ref(),
        ) else {
            continue;
        };
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
        };
        let rows = rows_for_budget(
            &dims,
            plan.corrupted_tokens.len(),
            options.max_batch_mib << 20,
        );
        let mut results = Vec::new();
        let mut skipped = Vec::new();
        for kind in kinds {
            if *kind == PatchKind::HeadPattern && !map.is_identity() {
                skipped.push(format!(
                    "{kind} not swept: attention patterns cannot be patched between prompts of different token lengths"
                ));
                continue;
            }
            let cells = cells_of(*kind, &dims, &positions_of(plan));
            let t0 = Instant::now();
            results.extend(sweep(&model, &pair, *kind, &cells, rows, &mut |n| {
                bar.inc(n as u64)
            })?);
            if !std::io::stderr().is_terminal() {
                say(
                    options,
                    format!(
                        "swept {} {kind}: {} cells in {:.2} s",
                        plan.name,
                        cells.len(),
                        t0.elapsed().as_secs_f64()
                    ),
                );
            }
        }
        swept.push(SweptPair {
            plan,
            results,
            skipped,
        });
    }
    bar.finish_and_clear();
    let t_swept = clock.elapsed().as_secs_f64();

    let passed = plans.iter().filter(|p| p.passed()).count();
    let failed = plans.len() - passed;
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
    let finished = chrono::Utc::now();
    let files = model.files();
    manifest["model"] = json!({
        "source": model.source().to_string(),
        "revision": experiment.model.revision,
        "architecture": dims.arch.name(),
        "n_layers": dims.n_layers,
        "d_model": dims.d_model,
        "n_heads": dims.n_heads,
        "config_sha256": manifest::sha256_file(&files.config),
        "weights": files.weights.iter().map(|w| json!({
            "file": w.display().to_string(),
            "sha256": manifest::sha256_file(w),
        })).collect::<Vec<_>>(),
    });
    manifest["tokenizer"] = json!(format!("{:?}", files.tokenizer));
    manifest["prepend_bos"] = json!(experiment.model.prepend_bos);
    manifest["device"] = json!(experiment.model.device);
    manifest["finished"] = json!(finished.to_rfc3339());
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
    manifest["kinds"] = json!(kinds.iter().map(|k| k.name()).collect::<Vec<_>>());
    manifest["status"] = json!("complete");
    manifest::write(&run_dir, &manifest)?;
    say(
        options,
        format!(
            "{cells} cells, {passed} of {} pairs passed; report: {}",
            plans.len(),
            run_dir.join("report.md").display()
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

fn progress_bar(total: u64, options: &RunOptions) -> ProgressBar {
    if options.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} cells  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}
