//! The checks every architecture's golden test runs: tokens, last-position logits,
//! logit differences and every cached activation of `model` against the
//! `golden.json` of fixture `fixture_name` (the same model loaded from a folder or a
//! GGUF file).

use actpatch_hooks::{CacheFilter, HookPoint};
use actpatch_model::HookedTransformer;

use super::{assert_close, golden, ids, log_sum_exp, next_token_logits, top_k};

pub const TOL: f64 = 1e-4;

pub fn tokens_with_bos_match_transformer_lens(model: &HookedTransformer, fixture_name: &str) {
    let golden = golden(fixture_name);
    for (name, pair) in golden["pairs"].as_object().unwrap() {
        for side in ["clean", "corrupted"] {
            let tokens = model.to_tokens(pair[side].as_str().unwrap(), true).unwrap();
            assert_eq!(
                tokens,
                ids(&pair[format!("{side}_tokens")]),
                "{name} {side}"
            );
        }
        let correct = model
            .to_single_token(pair["correct"].as_str().unwrap())
            .unwrap();
        assert_eq!(correct as u64, pair["correct_id"].as_u64().unwrap());
        let incorrect = model
            .to_single_token(pair["incorrect"].as_str().unwrap())
            .unwrap();
        assert_eq!(incorrect as u64, pair["incorrect_id"].as_u64().unwrap());
    }
}

pub fn last_position_logits_match(model: &HookedTransformer, fixture_name: &str) {
    let golden = golden(fixture_name);
    for (name, pair) in golden["pairs"].as_object().unwrap() {
        let tokens = ids(&pair["clean_tokens"]);
        let logits = model.logits(&[tokens]).unwrap(); // [1, pos, vocab]
        let pos = logits.dim(1).unwrap();
        let last = logits.get(0).unwrap().get(pos - 1).unwrap(); // [vocab]
        let first32 = last.narrow(0, 0, 32).unwrap();
        assert_close(
            &format!("{name} logits[:32]"),
            &first32,
            &pair["clean_last_logits_first32"],
            TOL,
        );

        let values: Vec<f32> = last.to_vec1().unwrap();
        let lse = log_sum_exp(&values);
        let want = pair["clean_last_logsumexp"].as_f64().unwrap();
        assert!((lse - want).abs() < TOL, "{name} logsumexp {lse} vs {want}");
        assert_eq!(
            top_k(&values, 10),
            ids(&pair["clean_last_logits_top10"]),
            "{name} top-10 ids"
        );
    }
}

pub fn logit_differences_match(model: &HookedTransformer, fixture_name: &str) {
    let golden = golden(fixture_name);
    for (name, pair) in golden["pairs"].as_object().unwrap() {
        let correct = pair["correct_id"].as_u64().unwrap() as usize;
        let incorrect = pair["incorrect_id"].as_u64().unwrap() as usize;
        for side in ["clean", "corrupted"] {
            let logits = next_token_logits(model, &ids(&pair[format!("{side}_tokens")]));
            let ld = (logits[correct] - logits[incorrect]) as f64;
            let want = pair[format!("{side}_logit_diff")].as_f64().unwrap();
            assert!((ld - want).abs() < TOL, "{name} {side}: {ld} vs {want}");
        }
    }
}

pub fn every_cached_activation_matches(
    model: &HookedTransformer,
    fixture_name: &str,
    n_hooks: usize,
) {
    let golden = golden(fixture_name);
    let pair = &golden["pairs"]["landmarks"];
    let (_, cache) = model
        .run_with_cache(&[ids(&pair["clean_tokens"])], CacheFilter::All)
        .unwrap();
    let expected = pair["activations_clean"].as_object().unwrap();
    assert_eq!(expected.len(), n_hooks);
    assert_eq!(cache.len(), n_hooks, "hook points of {fixture_name}");
    for (name, want) in expected {
        let point: HookPoint = name.parse().unwrap();
        let got = cache.get(point).unwrap().squeeze(0).unwrap(); // drop the batch axis
        assert_close(name, &got, want, TOL);
    }
}
