//! Baseline validation of every pair before any sweep: tokenizations, answers,
//! alignment, clean and corrupted logit differences, expectations, and warnings about
//! prompts that do not test what they seem to.

use actpatch_model::{HookedTransformer, ModelError};
use actpatch_patching::{
    Align, Answers, Baseline, Baselines, Direction, Pair, PairRuns, PositionMap,
};

use crate::experiment::{Experiment, PairSpec};
use crate::gaussian::GaussianPlan;
use crate::roles::{pair_roles, Prompt};
use crate::RunnerError;

/// A pair after validation: everything the sweep and the tables need.
pub struct PairPlan {
    pub index: usize,
    pub name: String,
    pub spec: PairSpec,
    pub align: Align,
    pub clean_tokens: Vec<u32>,
    pub corrupted_tokens: Vec<u32>,
    pub clean_str: Vec<String>,
    pub corrupted_str: Vec<String>,
    /// The role of each clean and each corrupted position (`BOS`, `subject.last`,
    /// `end`, …): what lines positions up across the pairs of a concept.
    pub clean_roles: Vec<String>,
    pub corrupted_roles: Vec<String>,
    pub answers: Option<Answers>,
    /// Corrupted position ← clean position; `None` when the lengths cannot be
    /// aligned (unequal under `strict`).
    pub map: Option<PositionMap>,
    /// Both unpatched runs, when the answers are single tokens.
    pub baselines: Option<Baselines>,
    /// The two passes the baselines came from, with what the sweep continues from
    /// (kept for the sweep within a memory budget, see [`crate::run`]).
    pub runs: Option<PairRuns>,
    /// Why the pair failed; empty when it passed.
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// Gaussian-noise corruption: the answer, the noised positions and both runs'
    /// scores (`None` for prompt pairs, whose baselines are `baselines`).
    pub gaussian: Option<GaussianPlan>,
}

impl PairPlan {
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }

    pub fn clean_logit_diff(&self) -> Option<f64> {
        self.baselines.as_ref().map(|b| b.clean_logit_diff)
    }

    pub fn corrupted_logit_diff(&self) -> Option<f64> {
        self.baselines.as_ref().map(|b| b.corrupted_logit_diff)
    }

    /// Whether the experiment file marks the pair `reference = true` (validated, not
    /// swept).
    pub fn reference(&self) -> bool {
        self.spec.reference
    }

    /// The pair as the engine sweeps it, when it can be swept at all (answers,
    /// alignment and a non-degenerate, finite baseline), whether or not it passed.
    pub fn sweepable(&self) -> Option<(Pair, &Baselines)> {
        self.baseline()?;
        let pair = Pair {
            clean_tokens: self.clean_tokens.clone(),
            corrupted_tokens: self.corrupted_tokens.clone(),
            answers: self.answers?,
            alignment: self.map.clone()?,
        };
        Some((pair, self.baselines.as_ref()?))
    }

    /// The role of target position `position` of `direction` (a corrupted position
    /// when denoising, a clean one when noising).
    pub fn role(&self, direction: Direction, position: usize) -> Option<&str> {
        let roles = match direction {
            Direction::Denoising => &self.corrupted_roles,
            Direction::Noising => &self.clean_roles,
        };
        roles.get(position).map(String::as_str)
    }

    /// The length of the run `direction` patches.
    pub fn target_len(&self, direction: Direction) -> usize {
        match direction {
            Direction::Denoising => self.corrupted_tokens.len(),
            Direction::Noising => self.clean_tokens.len(),
        }
    }

    /// The metric normalized effects are measured in, and its values on the clean and
    /// the corrupted run (`None` where they could not be computed).
    pub fn metric(&self) -> (&'static str, Option<(f64, f64)>) {
        match &self.gaussian {
            Some(g) => (g.metric.name(), g.baselines()),
            None => (
                "logit_diff",
                (self.clean_logit_diff()).zip(self.corrupted_logit_diff()),
            ),
        }
    }

    /// A few lines for the terminal: outcome, both tokenizations, both baselines,
    /// reasons (✗) and warnings (!). (Gaussian-noise pairs: `validate_gaussian::describe`.)
    pub fn describe(&self) -> String {
        let ld = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
        let mut text = format!(
            "{} {} [{}]\n    clean     {:?} → {} tokens {:?}\n    corrupted {:?} → {} tokens {:?}\n    logit diff {:?} − {:?}: clean {}, corrupted {}",
            match (self.passed(), self.reference()) {
                (true, false) => "PASS",
                (false, false) => "FAIL",
                (true, true) => "PASS (reference, not swept)",
                (false, true) => "FAIL (reference, not swept)",
            },
            self.name,
            self.spec.concept,
            self.spec.clean,
            self.clean_tokens.len(),
            self.clean_str,
            self.spec.corrupted,
            self.corrupted_tokens.len(),
            self.corrupted_str,
            self.spec.correct,
            self.spec.incorrect,
            ld(self.clean_logit_diff()),
            ld(self.corrupted_logit_diff()),
        );
        for reason in &self.reasons {
            text.push_str(&format!("\n    ✗ {reason}"));
        }
        for warning in &self.warnings {
            text.push_str(&format!("\n    ! {warning}"));
        }
        text
    }

    /// The baseline, when the pair can be swept at all (answers, alignment and a
    /// non-degenerate, finite baseline), whether or not it passed. For a Gaussian-noise
    /// pair, the metric (p(answer) or its logit) on the clean and the noised runs.
    pub fn baseline(&self) -> Option<Baseline> {
        if let Some(gaussian) = &self.gaussian {
            return Baseline::new(gaussian.clean.value, gaussian.corrupted.value).ok();
        }
        self.answers?;
        self.map.as_ref()?;
        self.baselines.as_ref()?.baseline().ok()
    }
}

const SENTENCE_END: [char; 6] = ['.', '!', '?', ';', ':', '\u{22}'];

/// Validates prompt pair `index` of `experiment` on `model` (Gaussian-noise pairs:
/// `validate_gaussian::validate`).
pub fn validate_pair(
    model: &HookedTransformer,
    experiment: &Experiment,
    index: usize,
) -> Result<PairPlan, RunnerError> {
    let spec = experiment.pairs[index].clone();
    let name = experiment.pair_name(index);
    let bos = experiment.model.prepend_bos;
    let context = |e: ModelError| RunnerError::Input(format!("pair `{name}`: {e}"));
    let clean_tokens = model.to_tokens(&spec.clean, bos).map_err(context)?;
    let corrupted_tokens = model.to_tokens(&spec.corrupted, bos).map_err(context)?;
    let (clean_str, corrupted_str) = (
        model.to_str_tokens(&clean_tokens),
        model.to_str_tokens(&corrupted_tokens),
    );
    let prompt = |text, tokens, str_tokens| Prompt {
        text,
        tokens,
        str_tokens,
    };
    let (clean_roles, corrupted_roles) = pair_roles(
        model,
        &spec,
        prompt(&spec.clean, &clean_tokens, &clean_str),
        prompt(&spec.corrupted, &corrupted_tokens, &corrupted_str),
        bos,
    )
    .map_err(context)?;
    let mut plan = PairPlan {
        index,
        name: name.clone(),
        clean_str,
        corrupted_str,
        clean_roles,
        corrupted_roles,
        clean_tokens,
        corrupted_tokens,
        answers: None,
        map: None,
        baselines: None,
        runs: None,
        reasons: Vec::new(),
        warnings: prompt_warnings(&spec),
        align: experiment.align_of(index),
        spec,
        gaussian: None,
    };
    plan.answers = answers(model, &mut plan).map_err(context)?;
    plan.map = alignment(&mut plan, bos);
    if let Some(answers) = plan.answers {
        // One pass per prompt, caching what the sweep continues from: the baselines'
        // passes are the sweep's.
        let during = || RunnerError::compute(format!("validating pair `{name}`"));
        let (clean, corrupted) = (&plan.clean_tokens, &plan.corrupted_tokens);
        let runs =
            PairRuns::new(model, clean, corrupted, &experiment.sweep.kinds).map_err(during())?;
        let baselines = runs.baselines(answers).map_err(during())?;
        check_baselines(&mut plan, experiment, &baselines);
        plan.baselines = Some(baselines);
        plan.runs = Some(runs);
    }
    Ok(plan)
}

/// The answers' token ids, when each is one token and they differ (else a reason).
fn answers(model: &HookedTransformer, plan: &mut PairPlan) -> Result<Option<Answers>, ModelError> {
    let correct = model.to_single_token(&plan.spec.correct);
    let incorrect = model.to_single_token(&plan.spec.incorrect);
    match (correct, incorrect) {
        (Ok(c), Ok(i)) if c == i => {
            plan.reasons
                .push("the correct and incorrect answers are the same token".into());
            Ok(None)
        }
        (Ok(correct), Ok(incorrect)) => Ok(Some(Answers { correct, incorrect })),
        (c, i) => {
            for err in [c.err(), i.err()].into_iter().flatten() {
                match err {
                    ModelError::MultiTokenAnswer { .. } => plan.reasons.push(err.to_string()),
                    other => return Err(other),
                }
            }
            Ok(None)
        }
    }
}

/// The position map of the pair's alignment (BOS onto BOS when `bos`), with the
/// reason or warning it calls for.
fn alignment(plan: &mut PairPlan, bos: bool) -> Option<PositionMap> {
    let (n_clean, n_corrupted) = (plan.clean_tokens.len(), plan.corrupted_tokens.len());
    let map = PositionMap::aligned(plan.align, n_clean, n_corrupted, bos);
    match plan.align {
        _ if n_clean == n_corrupted => {}
        Align::Strict => plan.reasons.push(unequal_lengths(plan)),
        Align::Start => plan.warnings.push(format!(
            "token lengths differ (clean {n_clean}, corrupted {n_corrupted}); align = \"start\" patches clean position i into corrupted position i, so after the first differing token the positions hold different words: the grid is misaligned there (this is what the seed notebook did silently)"
        )),
        Align::End => plan.warnings.push(format!(
            "token lengths differ (clean {n_clean}, corrupted {n_corrupted}); align = \"end\" patches the last tokens onto each other (and BOS onto BOS), so positions before the differing span are misaligned"
        )),
    }
    map
}

fn check_baselines(plan: &mut PairPlan, experiment: &Experiment, baselines: &Baselines) {
    let (clean_ld, corrupted_ld) = (baselines.clean_logit_diff, baselines.corrupted_logit_diff);
    let v = &experiment.validate;
    if !clean_ld.is_finite() || !corrupted_ld.is_finite() {
        plan.reasons.push(format!(
            "the logit differences are not finite (clean {clean_ld}, corrupted {corrupted_ld}): the model produced NaN or infinite logits"
        ));
        return;
    }
    let gap = clean_ld - corrupted_ld;
    if gap == 0.0 {
        plan.reasons.push("clean and corrupted logit differences are equal: the normalized logit difference would divide by zero".into());
    } else if gap < 0.0 {
        plan.reasons.push(format!(
            "clean − corrupted logit difference is {gap:.3}: the corrupted prompt favours the correct answer more than the clean one, so the corruption works the wrong way round. Swap the prompts or choose another corruption"
        ));
    } else if gap < v.min_gap {
        plan.reasons.push(format!(
            "clean − corrupted logit difference is {gap:.3}, below min_gap = {}: the corruption barely changes the answer, so normalized values would be noise. Choose a stronger corruption or lower [validate] min_gap",
            v.min_gap
        ));
    }
    if v.require_clean_positive && clean_ld <= 0.0 {
        plan.reasons.push(format!(
            "the clean logit difference is {clean_ld:.3} ≤ 0: the model prefers {:?} over {:?} even on the clean prompt, so there is no behaviour to trace",
            plan.spec.incorrect, plan.spec.correct
        ));
    }
    if let Some(expect) = plan.spec.expect {
        for (what, want, got) in [
            ("clean", expect.clean_logit_diff, clean_ld),
            ("corrupted", expect.corrupted_logit_diff, corrupted_ld),
        ] {
            if let Some(want) = want {
                if (got - want).abs() > expect.tolerance {
                    plan.reasons.push(format!(
                        "the {what} logit difference is {got:.3}, but expect says {want:.3} ± {}: a different model, tokenizer or prompt than the one the value came from",
                        expect.tolerance
                    ));
                }
            }
        }
    }
}

/// Both tokenizations side by side, and how to fix the pair.
fn unequal_lengths(plan: &PairPlan) -> String {
    let (n_clean, n_corrupted) = (plan.clean_str.len(), plan.corrupted_str.len());
    let mut text = format!(
        "token lengths differ under align = \"strict\": clean {n_clean}, corrupted {n_corrupted} tokens\n      pos  clean              corrupted\n"
    );
    for i in 0..n_clean.max(n_corrupted) {
        let c = plan
            .clean_str
            .get(i)
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        let x = plan
            .corrupted_str
            .get(i)
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        let mark = if c == x { "" } else { "  ≠" };
        text.push_str(&format!("      {i:>3}  {c:<18} {x}{mark}\n"));
    }
    text.push_str("      Fix: use a corruption of the same token length, or set align = \"start\" (position i into position i) or align = \"end\" (last tokens aligned) on this pair.");
    text
}

/// Warnings about prompts that measure something other than the concept.
pub(crate) fn prompt_warnings(spec: &PairSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    for (side, prompt) in [("clean", &spec.clean), ("corrupted", &spec.corrupted)] {
        let trimmed = prompt.trim_end();
        if let Some(last) = trimmed.chars().last().filter(|c| SENTENCE_END.contains(c)) {
            warnings.push(format!(
                "the {side} prompt ends with {last:?}: the answer is scored at the token after the sentence end, where neither answer is the natural continuation; stop the prompt right before the answer"
            ));
        }
        for answer in [&spec.correct, &spec.incorrect] {
            let word = answer.trim();
            if !word.is_empty() && contains_word(prompt, word) {
                warnings.push(format!(
                    "the {side} prompt already contains the answer {word:?}: the model is not asked to produce it; stop the prompt right before the answer"
                ));
            }
        }
    }
    warnings
}

fn contains_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|token| token == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(clean: &str, correct: &str) -> PairSpec {
        PairSpec {
            name: None,
            concept: "c".into(),
            clean: clean.into(),
            corrupted: "The capital of Italy is".into(),
            correct: correct.into(),
            incorrect: " Rome".into(),
            ..PairSpec::default()
        }
    }

    #[test]
    fn warns_on_punctuation_and_contained_answers() {
        let w = prompt_warnings(&spec("The capital of France is Paris.", " Paris"));
        assert!(w.iter().any(|w| w.contains("ends with '.'")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("already contains the answer \"Paris\"")),
            "{w:?}"
        );
        assert!(prompt_warnings(&spec("The capital of France is", " Paris")).is_empty());
    }
}
