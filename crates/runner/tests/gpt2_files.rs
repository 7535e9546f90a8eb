//! The shipped GPT-2 experiment files (`experiments/*.toml`) are well formed for GPT-2's
//! own tokenizer: GPT-2's weights need the hub, but the tiny fixture carries OpenAI's
//! real BPE vocabulary (`tests/fixtures/tiny-gpt2/tokenizer.json`), so every pair is
//! validated on it and may fail only for what its random weights decide (the gap, the
//! clean logit difference's sign, the notebook's `expect` values), never for a
//! tokenization: every answer one token, every strict pair of equal token lengths.

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_runner::experiment::Experiment;
use actpatch_runner::validate::validate_pair;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reasons the random weights give, not the files.
fn baseline_reason(reason: &str) -> bool {
    [
        "clean − corrupted logit difference",
        "the clean logit difference is",
        "but expect says",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

#[test]
fn every_gpt2_concept_file_tokenizes_into_well_formed_pairs() {
    let model = HookedTransformer::from_dir(repo().join("tests/fixtures/tiny-gpt2")).unwrap();
    for concept in [
        "landmarks",
        "country_capitals",
        "gender_bias",
        "nobel_prize",
        "number_agreement",
        "temporal_consistency",
        "ioi",
    ] {
        let experiment =
            Experiment::load(&repo().join(format!("experiments/{concept}.toml"))).unwrap();
        assert_eq!(experiment.model.id.as_deref(), Some("gpt2"), "{concept}");
        assert!(
            experiment.pairs.len() >= 40,
            "{concept}: {} pairs",
            experiment.pairs.len()
        );
        for index in 0..experiment.pairs.len() {
            let plan = validate_pair(&model, &experiment, index).unwrap();
            assert!(
                plan.answers.is_some(),
                "{concept} {}: {:?}",
                plan.name,
                plan.reasons
            );
            let other: Vec<&String> = (plan.reasons.iter())
                .filter(|r| !baseline_reason(r))
                .collect();
            assert!(other.is_empty(), "{concept} {}: {other:?}", plan.name);
        }
    }
}
