//! The rows of `cells.parquet` and `baselines.parquet`.

use actpatch_model::HookedTransformer;
use actpatch_report::{BaselineRow, CellRow};

use crate::experiment::{CorruptionKind, Experiment};
use crate::outputs::SweptPair;
use crate::validate::PairPlan;

/// One row per swept cell.
pub fn cell_rows(
    experiment: &Experiment,
    model: &HookedTransformer,
    run_id: &str,
    swept: &[SweptPair],
) -> Vec<CellRow> {
    let mut rows = Vec::new();
    for pair in swept {
        let plan = pair.plan;
        // Gaussian-noise pairs have one answer: no logit difference.
        let logit_diff = |value: f64| plan.gaussian.is_none().then_some(value);
        let plain = pair.results.iter().map(|r| (r, None));
        let paths = (pair.paths.iter())
            .flat_map(|p| p.results.iter().map(move |r| (r, Some(p.label.clone()))));
        for (r, receivers) in plain.chain(paths) {
            let token = (r.index.position)
                .and_then(|p| pair.clean_position(r.direction, p))
                .and_then(|c| plan.clean_str.get(c).cloned());
            rows.push(CellRow {
                run_id: run_id.to_string(),
                experiment: experiment.experiment.name.clone(),
                concept: plan.spec.concept.clone(),
                pair: plan.name.clone(),
                model: model.source().to_string(),
                kind: r.kind.name().to_string(),
                receivers,
                direction: r.direction.name().to_string(),
                method: r.method.name().to_string(),
                layer: r.index.layer as u32,
                head: r.index.head.map(|h| h as u32),
                position: r.index.position.map(|p| p as u32),
                src_position: r.index.src.map(|p| p as u32),
                token,
                role: (r.index.position)
                    .and_then(|p| plan.role(r.direction, p))
                    .map(str::to_string),
                patched_logit_diff: logit_diff(r.metrics.logit_diff),
                normalized_logit_diff: r.metrics.normalized_logit_diff,
                logprob_diff: logit_diff(r.metrics.logprob_diff),
                prob_correct: r.metrics.prob_correct,
                kl_div: r.metrics.kl_div,
                pair_valid: plan.passed(),
            });
        }
    }
    rows
}

/// One row per pair, swept or not.
pub(crate) fn baseline_rows(
    experiment: &Experiment,
    model: &HookedTransformer,
    run_id: &str,
    plans: &[PairPlan],
    swept: &[SweptPair],
) -> Vec<BaselineRow> {
    plans
        .iter()
        .map(|plan| {
            let swept_pair = swept.iter().find(|s| s.plan.index == plan.index);
            let skipped = swept_pair.map(|s| s.skipped.clone()).unwrap_or_default();
            let (metric, values) = plan.metric();
            let corruption = match plan.gaussian {
                Some(_) => CorruptionKind::Gaussian,
                None => CorruptionKind::Prompt,
            };
            BaselineRow {
                run_id: run_id.to_string(),
                experiment: experiment.experiment.name.clone(),
                concept: plan.spec.concept.clone(),
                pair: plan.name.clone(),
                model: model.source().to_string(),
                clean: plan.spec.clean.clone(),
                corrupted: plan.spec.corrupted.clone(),
                correct: plan.spec.correct.clone(),
                incorrect: plan.spec.incorrect.clone(),
                clean_tokens: plan.clean_str.clone(),
                corrupted_tokens: plan.corrupted_str.clone(),
                align: plan.align.name().to_string(),
                clean_logit_diff: plan.clean_logit_diff(),
                corrupted_logit_diff: plan.corrupted_logit_diff(),
                corruption: Some(corruption.name().to_string()),
                metric: Some(metric.to_string()),
                clean_metric: values.map(|v| v.0),
                corrupted_metric: values.map(|v| v.1),
                subject: plan.spec.subject.clone(),
                passed: plan.passed(),
                swept: swept_pair.is_some(),
                reference: plan.reference(),
                reasons: plan.reasons.clone(),
                warnings: plan.warnings.iter().chain(&skipped).cloned().collect(),
            }
        })
        .collect()
}
