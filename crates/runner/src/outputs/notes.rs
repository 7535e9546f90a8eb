//! What the report says about the run as a whole: reference pairs, misaligned
//! positions, prompts that do not test their concept, failed pairs.

use actpatch_report::ReferencePair;

use crate::validate::PairPlan;

/// The reference pairs, their baselines against their `expect` values, and why they
/// are not swept.
pub(crate) fn reference_pairs(plans: &[PairPlan]) -> Vec<ReferencePair> {
    plans
        .iter()
        .filter(|p| p.reference())
        .map(|plan| ReferencePair {
            pair: plan.name.clone(),
            concept: plan.spec.concept.clone(),
            clean: plan.spec.clean.clone(),
            corrupted: plan.spec.corrupted.clone(),
            clean_logit_diff: plan.clean_logit_diff(),
            corrupted_logit_diff: plan.corrupted_logit_diff(),
            expected: expected(plan),
            reason: reason(plan),
        })
        .collect()
}

/// The `expect` values and whether the baselines reproduce them.
fn expected(plan: &PairPlan) -> String {
    let Some(expect) = plan.spec.expect else {
        return "–".into();
    };
    let mut parts = Vec::new();
    for (what, want, got) in [
        ("clean", expect.clean_logit_diff, plan.clean_logit_diff()),
        (
            "corrupted",
            expect.corrupted_logit_diff,
            plan.corrupted_logit_diff(),
        ),
    ] {
        if let Some(want) = want {
            let verdict = match got {
                Some(got) if (got - want).abs() <= expect.tolerance => "reproduced",
                Some(_) => "**not reproduced**",
                None => "not computed",
            };
            parts.push(format!(
                "{what} {want:.3} ± {}: {verdict}",
                expect.tolerance
            ));
        }
    }
    parts.join("; ")
}

/// The pair's `note`, else its warnings, else that the file marks it so.
fn reason(plan: &PairPlan) -> String {
    if let Some(note) = &plan.spec.note {
        return note.clone();
    }
    if !plan.warnings.is_empty() {
        return plan.warnings.join("; ");
    }
    "marked `reference = true` in the experiment file".into()
}

/// Paragraphs about the run: misaligned pairs, prompts that cannot test the concept,
/// and the pairs that failed.
pub(crate) fn run_notes(plans: &[PairPlan]) -> Vec<String> {
    let swept_kind = |p: &&PairPlan| !p.reference();
    let mut notes = Vec::new();
    if (plans.iter().filter(swept_kind)).any(|p| p.map.as_ref().is_some_and(|m| !m.is_identity())) {
        notes.push("**Misaligned positions.** Some pairs have clean and corrupted prompts of different token lengths and were patched with align = \"start\" or \"end\". Past the first differing token, a position of one run is patched into a position of the other that holds a different word, so those columns do not measure one token's role (BOS is always patched into BOS). Prefer corruptions of equal token length.".into());
    }
    if plans.iter().any(|p| {
        p.warnings
            .iter()
            .any(|w| w.contains("sentence end") || w.contains("already contains"))
    }) {
        notes.push("**Why prompts that end with punctuation or contain the answer do not test the concept.** The logit difference is read at the last position, i.e. on the model's prediction of the *next* token. If the prompt already ends with the answer and a full stop, that next token starts a new sentence: neither answer is a natural continuation, and the difference measures which word is likelier to open the next sentence, not whether the model knows the fact. Stop the prompt right before the answer (\"The capital of France is\" → \" Paris\").".into());
    }
    let failed: Vec<&PairPlan> = (plans.iter().filter(swept_kind))
        .filter(|p| !p.passed())
        .collect();
    if !failed.is_empty() {
        let mut text = String::from("**Failed pairs.**\n");
        for plan in failed {
            text.push_str(&format!(
                "\n- `{}`: {}",
                plan.name,
                plan.reasons.join("; ").replace('\n', " ")
            ));
        }
        notes.push(text);
    }
    notes
}
