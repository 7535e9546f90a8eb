//! Sweeping one validated Gaussian-noise pair: a causal trace per kind and direction
//! ([`actpatch_patching::gaussian`]), each cell the mean over the noise draws.

use std::time::Instant;

use actpatch_model::HookedTransformer;
use actpatch_patching::gaussian::{NoisedPrompt, TraceCell, TraceIndex};
use actpatch_patching::{rows_for_budget, CellIndex, CellMetrics, CellResult, Execution, Method};
use indicatif::ProgressBar;

use crate::experiment::Experiment;
use crate::options::RunOptions;
use crate::outputs::SweptPair;
use crate::run::sweep_pair::{cells, say_swept};
use crate::validate::PairPlan;
use crate::RunnerError;

/// Traces `plan` (a Gaussian-noise pair) with every kind and direction of the
/// experiment.
pub(crate) fn sweep_gaussian<'p>(
    model: &HookedTransformer,
    experiment: &Experiment,
    plan: &'p PairPlan,
    options: &RunOptions,
    bar: &ProgressBar,
) -> Result<SweptPair<'p>, RunnerError> {
    let Some(gaussian) = plan.gaussian.as_ref().filter(|g| g.scored) else {
        return Err(RunnerError::Input(format!(
            "pair `{}` cannot be traced: {}",
            plan.name,
            plan.reasons.join("; ")
        )));
    };
    let kinds = &experiment.sweep.kinds;
    let during = |what: &str| format!("{what} pair `{}`", plan.name);
    let prompt = NoisedPrompt::new(
        model,
        &plan.clean_tokens,
        gaussian.subject.clone(),
        gaussian.answer,
        kinds,
        gaussian.noise.spec,
    )
    .map_err(RunnerError::compute(during("noising")))?;
    let execution = match options.naive {
        true => Execution::Naive,
        false => Execution::Fast,
    };
    let n_pos = plan.clean_tokens.len();
    let rows = rows_for_budget(model.dims(), n_pos, options.max_batch_mib << 20);
    let mut results = Vec::new();
    for direction in experiment.sweep.direction.directions() {
        // Every kind's cells in one trace: each draw's restorations at one position
        // run as one batch, however many kinds they restore.
        let started = Instant::now();
        let indices: Vec<TraceIndex> = (kinds.iter())
            .flat_map(|&kind| {
                let cells = cells(experiment, model, plan, (direction, kind));
                cells.into_iter().filter_map(move |c| {
                    c.position.map(|position| TraceIndex {
                        kind,
                        layer: c.layer,
                        position,
                    })
                })
            })
            .collect();
        let mut progress = |n: usize| bar.inc(n as u64);
        let traced = prompt
            .trace(model, (direction, execution), &indices, rows, &mut progress)
            .map_err(RunnerError::compute(during(&format!(
                "tracing {direction}"
            ))))?;
        let seconds = started.elapsed().as_secs_f64();
        say_swept((options, plan), direction, "trace", traced.len(), seconds);
        results.extend(traced.iter().map(result_of));
    }
    Ok(SweptPair {
        plan,
        results,
        paths: Vec::new(),
        skipped: Vec::new(),
        // Costs compare exact sweeps with approximations, which Gaussian pairs lack.
        costs: Vec::new(),
    })
}

/// A traced cell as a table row's result: the metric (p(answer) or its logit, mean
/// over the draws) where prompt pairs have the logit difference, which the tables
/// leave null for Gaussian pairs.
fn result_of(cell: &TraceCell) -> CellResult {
    CellResult {
        direction: cell.direction,
        kind: cell.index.kind,
        method: Method::Exact,
        index: CellIndex {
            layer: cell.index.layer,
            head: None,
            position: Some(cell.index.position),
            src: None,
        },
        metrics: CellMetrics {
            logit_diff: cell.score.value,
            normalized_logit_diff: cell.normalized,
            logprob_diff: cell.score.value,
            prob_correct: Some(cell.score.prob),
            kl_div: Some(cell.score.kl),
        },
    }
}
