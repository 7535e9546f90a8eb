//! Validating a Gaussian-noise pair: its tokens, the subject's positions, ROME's token
//! roles, and the clean and noised runs' scores, with the reasons it fails and the
//! warnings it deserves.

use std::ops::Range;

use actpatch_concepts::roles::{after_span_roles, roles_from_spans, Span, TokenText};
use actpatch_model::{HookedTransformer, ModelError};
use actpatch_patching::gaussian::{AnswerScore, NoisedPrompt, TraceMetric};
use actpatch_patching::{Align, PositionMap};

use crate::experiment::Experiment;
use crate::gaussian::{short, GaussianPlan, NoiseSetup};
use crate::validate::{prompt_warnings, PairPlan};
use crate::RunnerError;

/// Validates Gaussian-noise pair `index` of `experiment`.
pub fn validate(
    model: &HookedTransformer,
    experiment: &Experiment,
    index: usize,
    noise: &NoiseSetup,
) -> Result<PairPlan, RunnerError> {
    let spec = experiment.pairs[index].clone();
    let name = experiment.pair_name(index);
    let bos = experiment.model.prepend_bos;
    let context = |e: ModelError| RunnerError::Input(format!("pair `{name}`: {e}"));
    let tokens = model.to_tokens(&spec.clean, bos).map_err(context)?;
    let str_tokens = model.to_str_tokens(&tokens);
    let subject_text = spec.subject.clone().unwrap_or_default();
    let (subject, roles) = subject_and_roles(model, (&spec.clean, &subject_text), &str_tokens, bos)
        .map_err(context)?;
    let mut plan = PairPlan {
        index,
        name: name.clone(),
        align: Align::Strict,
        map: PositionMap::aligned(Align::Strict, tokens.len(), tokens.len(), bos),
        clean_tokens: tokens.clone(),
        corrupted_tokens: tokens.clone(),
        clean_str: str_tokens.clone(),
        corrupted_str: str_tokens,
        clean_roles: roles.clone(),
        corrupted_roles: roles,
        answers: None,
        baselines: None,
        runs: None,
        reasons: Vec::new(),
        warnings: prompt_warnings(&spec),
        gaussian: None,
        spec,
    };
    let answer = match model.to_single_token(&plan.spec.correct) {
        Ok(answer) => Some(answer),
        Err(err @ ModelError::MultiTokenAnswer { .. }) => {
            plan.reasons.push(err.to_string());
            None
        }
        Err(other) => return Err(context(other)),
    };
    let mut gaussian = GaussianPlan {
        answer: answer.unwrap_or(0),
        subject: subject.clone(),
        metric: noise.spec.metric,
        noise: *noise,
        clean: AnswerScore::default(),
        corrupted: AnswerScore::default(),
        scored: false,
    };
    if let (Some(answer), false) = (answer, subject.is_empty()) {
        let noised = NoisedPrompt::new(model, &tokens, subject, answer, &[], noise.spec)
            .map_err(RunnerError::compute(format!("validating pair `{name}`")))?;
        (gaussian.clean, gaussian.corrupted, gaussian.scored) =
            (noised.clean, noised.corrupted, true);
        check_scores(&mut plan, experiment, &noised, model);
    }
    if gaussian.subject.is_empty() {
        plan.reasons.push(format!(
            "the subject {subject_text:?} covers no token of the prompt"
        ));
    }
    plan.gaussian = Some(gaussian);
    Ok(plan)
}

/// The positions of the tokens of `prompt` that overlap `subject`, and every token's
/// role (`subject.*`, then `after.first`, `after.mid` and `end` as ROME groups them).
fn subject_and_roles(
    model: &HookedTransformer,
    (prompt, subject): (&str, &str),
    str_tokens: &[String],
    bos: bool,
) -> Result<(Range<usize>, Vec<String>), ModelError> {
    let start = prompt.find(subject).unwrap_or(0);
    let span = Span {
        name: "subject".into(),
        start,
        end: start + subject.len(),
    };
    let byte_spans = model.token_byte_spans(prompt, bos)?;
    let texts: Vec<TokenText> = (str_tokens.iter().zip(&byte_spans))
        .map(|(text, (start, end))| TokenText {
            text: text.clone(),
            start: *start,
            end: *end,
        })
        .collect();
    let has_bos = bos && model.tokenizer().bos_id().is_some();
    let roles = after_span_roles(
        &roles_from_spans(&texts, std::slice::from_ref(&span), has_bos),
        "subject",
    );
    Ok((positions_of(&byte_spans, &span), roles))
}

/// The positions of the tokens that overlap `span` (BOS covers nothing).
fn positions_of(byte_spans: &[(usize, usize)], span: &Span) -> Range<usize> {
    let inside: Vec<usize> = (byte_spans.iter().enumerate())
        .filter(|(_, (start, end))| end > start && *start < span.end && *end > span.start)
        .map(|(i, _)| i)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(first), Some(last)) => *first..last + 1,
        _ => 0..0,
    }
}

/// Reasons and warnings from the clean and noised runs' scores.
fn check_scores(
    plan: &mut PairPlan,
    experiment: &Experiment,
    noised: &NoisedPrompt,
    model: &HookedTransformer,
) {
    let (clean, corrupted) = (noised.clean, noised.corrupted);
    let metric = match noised.spec.metric {
        TraceMetric::Prob => "probability",
        TraceMetric::Logit => "logit",
    };
    if !clean.value.is_finite() || !corrupted.value.is_finite() {
        plan.reasons.push(format!(
            "the {metric} of the answer is not finite (clean {}, noised {}): the model produced NaN or infinite logits",
            clean.value, corrupted.value
        ));
        return;
    }
    if clean.value <= corrupted.value {
        plan.reasons.push(format!(
            "the noise on the subject does not lower the answer's {metric} (clean {}, noised {}, ν = {:.4}): the answer does not depend on the subject's embeddings, so there is nothing to restore. Check the subject span, or raise [corruption] noise_multiplier",
            short(clean.value), short(corrupted.value), noised.scale
        ));
    } else if corrupted.prob > 0.5 * clean.prob {
        plan.warnings.push(format!(
            "with its subject noised the answer keeps {:.0} % of its probability ({} of {}): the model answers largely without the subject, so restored cells have little to show",
            100.0 * corrupted.prob / clean.prob, short(corrupted.prob), short(clean.prob)
        ));
    }
    if experiment.validate.require_clean_positive && noised.clean_top != noised.answer {
        let top = model.to_str_tokens(&[noised.clean_top]).join("");
        plan.reasons.push(format!(
            "the clean run's most likely next token is {top:?}, not the answer {:?} (p = {}): the model does not state this fact as phrased, and causal tracing traces facts the model predicts. Reword the prompt, or set [validate] require_clean_positive = false",
            plan.spec.correct, short(clean.prob)
        ));
    }
}

/// A few lines for the terminal, as [`PairPlan::describe`].
pub fn describe(plan: &PairPlan) -> String {
    let outcome = match (plan.passed(), plan.reference()) {
        (true, false) => "PASS",
        (false, false) => "FAIL",
        (true, true) => "PASS (reference, not swept)",
        (false, true) => "FAIL (reference, not swept)",
    };
    let mut text = format!(
        "{outcome} {} [{}]\n    clean {:?} → {} tokens {:?}\n    subject {:?} noised (Gaussian)",
        plan.name,
        plan.spec.concept,
        plan.spec.clean,
        plan.clean_tokens.len(),
        plan.clean_str,
        plan.spec.subject.as_deref().unwrap_or(""),
    );
    if let Some(g) = plan.gaussian.as_ref().filter(|g| g.scored) {
        text.push_str(&format!(
            " at positions {}..{}\n    p({:?}): clean {}, noised {} (mean over the draws)",
            g.subject.start,
            g.subject.end,
            plan.spec.correct,
            short(g.clean.prob),
            short(g.corrupted.prob)
        ));
    }
    for reason in &plan.reasons {
        text.push_str(&format!("\n    ✗ {reason}"));
    }
    for warning in &plan.warnings {
        text.push_str(&format!("\n    ! {warning}"));
    }
    text
}
