//! Loading what a run needs: the experiment file (with the command line's
//! replacements), the model, and every pair's validation; `actpatch check`.

use std::path::Path;
use std::time::Instant;

use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};

use crate::experiment::{CorruptionKind, Experiment};
use crate::gaussian::NoiseSetup;
use crate::options::RunOptions;
use crate::validate::{validate_pair, PairPlan};
use crate::validate_gaussian;
use crate::RunnerError;

/// Loads the experiment file, with `--model-path` replacing its `[model]` source.
pub(super) fn load_experiment(
    path: &Path,
    options: &RunOptions,
) -> Result<Experiment, RunnerError> {
    let mut experiment = Experiment::load(path)?;
    if let Some(model_path) = &options.model_path {
        experiment.model.path = Some(model_path.clone());
        experiment.model.id = None;
    }
    if let Some(device) = &options.device {
        experiment.model.device = device.clone();
    }
    Ok(experiment)
}

pub(super) fn load_model(
    experiment: &Experiment,
    options: &RunOptions,
) -> Result<HookedTransformer, RunnerError> {
    let device: DeviceSpec = experiment
        .model
        .device
        .parse()
        .map_err(RunnerError::model)?;
    let source = match (&experiment.model.path, &experiment.model.id) {
        (Some(path), _) => ModelSource::Local(path.clone()),
        (None, Some(id)) => ModelSource::Hub {
            id: id.clone(),
            revision: experiment.model.revision.clone(),
        },
        (None, None) => return Err(RunnerError::Input("[model] needs `id` or `path`".into())),
    };
    let clock = Instant::now();
    options.say(format!(
        "loading model {source} on {}…",
        experiment.model.device
    ));
    let model = HookedTransformer::load(&source, device).map_err(RunnerError::model)?;
    // Every kind's hook point exists in the model (e.g. no `resid_mid` where attention
    // and MLP run in parallel), checked before anything runs.
    actpatch_patching::check_kinds(&model, &experiment.sweep.kinds)
        .map_err(|e| RunnerError::Input(format!("[sweep] kinds: {e}")))?;
    let dims = model.dims();
    options.say(format!(
        "loaded {} ({} layers, {} heads, d_model {}) in {:.1} s",
        dims.arch.name(),
        dims.n_layers,
        dims.n_heads,
        dims.d_model,
        clock.elapsed().as_secs_f64()
    ));
    Ok(model)
}

/// Bytes of validation passes kept for the sweep ([`PairPlan::runs`]); the pairs past
/// it run their two passes again when swept.
const KEPT_RUNS_BYTES: usize = 256 << 20;

/// Validates every pair, prints each outcome, and checks the sweep's positions
/// against every pair that will be swept. With `keep_runs`, the validation passes of
/// the pairs to sweep are kept for their sweep, up to [`KEPT_RUNS_BYTES`].
pub(super) fn validate_all(
    model: &HookedTransformer,
    experiment: &Experiment,
    options: &RunOptions,
    keep_runs: bool,
) -> Result<Vec<PairPlan>, RunnerError> {
    for spec in &experiment.sweep.paths {
        spec.heads(model.dims()).map_err(RunnerError::Input)?;
    }
    let mut plans = Vec::new();
    let mut kept = 0;
    let noise = NoiseSetup::of(model, experiment)?;
    if let Some(noise) = &noise {
        options.say(format!(
            "Gaussian noise on the subjects: ν = {:.4} ({} draws, seed {})",
            noise.scale, noise.spec.samples, noise.spec.seed
        ));
    }
    options.say(format!(
        "validating {} pairs (baseline logit differences, answers, alignment)…",
        experiment.pairs.len()
    ));
    for index in 0..experiment.pairs.len() {
        let mut plan = match (experiment.corruption_of(index), &noise) {
            (CorruptionKind::Gaussian, Some(noise)) => {
                let plan = validate_gaussian::validate(model, experiment, index, noise)?;
                options.say(validate_gaussian::describe(&plan));
                plan
            }
            _ => {
                let plan = validate_pair(model, experiment, index)?;
                options.say(plan.describe());
                plan
            }
        };
        let bytes = plan.runs.as_ref().map_or(0, |r| r.bytes());
        if keep_runs && swept(&plan, experiment, options) && kept + bytes <= KEPT_RUNS_BYTES {
            kept += bytes;
        } else {
            plan.runs = None;
        }
        if let (Some(list), false) = (experiment.sweep.positions.list(), plan.reference()) {
            for direction in experiment.sweep.direction.directions() {
                let n = plan.target_len(direction);
                if let Some(bad) = list.iter().find(|p| **p >= n) {
                    return Err(RunnerError::Input(format!(
                        "[sweep] positions lists {bad}, but pair `{}` has {n} tokens in the run {direction} patches (positions 0..={}). Use positions = \"all\" or positions below {n}.",
                        plan.name,
                        n - 1
                    )));
                }
            }
        }
        if !plan.reference() {
            check_receiver_positions(experiment, &plan)?;
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// Checks that every listed receiver position of `[[sweep.paths]]` is inside the
/// pair's patched runs.
fn check_receiver_positions(experiment: &Experiment, plan: &PairPlan) -> Result<(), RunnerError> {
    for spec in &experiment.sweep.paths {
        let Some(list) = spec.positions.list() else {
            continue;
        };
        for direction in experiment.sweep.direction.directions() {
            let n = plan.target_len(direction);
            if let Some(bad) = list.iter().find(|p| **p >= n) {
                return Err(RunnerError::Input(format!(
                    "[[sweep.paths]] `{}` lists receiver position {bad}, but pair `{}` has {n} tokens in the run {direction} patches (positions 0..={}). Use positions = \"end\" for the final position of every pair.",
                    spec.label(),
                    plan.name,
                    n - 1
                )));
            }
        }
    }
    Ok(())
}

/// Validates the file and every pair's baselines without sweeping.
pub fn check(path: &Path, options: &RunOptions) -> Result<(usize, usize), RunnerError> {
    let experiment = load_experiment(path, options)?;
    let model = load_model(&experiment, options)?;
    let plans = validate_all(&model, &experiment, options, false)?;
    let passed = plans.iter().filter(|p| p.passed()).count();
    options.say(format!("{passed} of {} pairs pass validation", plans.len()));
    if passed == 0 {
        return Err(RunnerError::NoPairPassed(format!(
            "0 of {} pairs",
            plans.len()
        )));
    }
    Ok((passed, plans.len() - passed))
}

/// The pairs a run sweeps: not references, with baselines, and passed (or every
/// such pair, when validation is off).
pub(super) fn pairs_to_sweep<'p>(
    plans: &'p [PairPlan],
    experiment: &Experiment,
    options: &RunOptions,
) -> Vec<&'p PairPlan> {
    (plans.iter())
        .filter(|p| swept(p, experiment, options))
        .collect()
}

/// Whether a run sweeps `plan`: not a reference, with baselines, and passed (or
/// validation is off).
fn swept(plan: &PairPlan, experiment: &Experiment, options: &RunOptions) -> bool {
    let sweep_all = options.no_validate || !experiment.validate.enabled;
    !plan.reference() && (plan.passed() || sweep_all) && plan.baseline().is_some()
}
