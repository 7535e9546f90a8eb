//! The GPT-2 forward pass against Hugging Face transformers and TransformerLens 2.15
//! (`tests/fixtures/tiny-gpt2/golden.json`).

use crate::common;

use actpatch_model::HookedTransformer;
use common::golden_checks as checks;

const FIXTURE: &str = "tiny-gpt2";

fn fixture_model() -> HookedTransformer {
    HookedTransformer::from_dir(common::fixture(FIXTURE)).unwrap()
}

#[test]
fn tokens_with_bos_match_transformer_lens() {
    checks::tokens_with_bos_match_transformer_lens(&fixture_model(), FIXTURE);
}

#[test]
fn last_position_logits_match() {
    checks::last_position_logits_match(&fixture_model(), FIXTURE);
}

#[test]
fn logit_differences_match() {
    checks::logit_differences_match(&fixture_model(), FIXTURE);
}

#[test]
fn every_cached_activation_matches() {
    // hook_embed, hook_pos_embed, 17 per block, 2 of ln_final.
    checks::every_cached_activation_matches(&fixture_model(), FIXTURE, 2 + 2 * 17 + 2);
}
