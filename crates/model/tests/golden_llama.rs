//! The Llama forward pass against Hugging Face transformers and TransformerLens 2.15
//! (`tests/fixtures/tiny-llama/golden.json`).

use crate::common;

use actpatch_hooks::{CacheFilter, HookPoint};
use actpatch_model::{HookedTransformer, Readout};
use common::golden_checks::{self as checks, TOL};
use common::{fixture, golden, ids};

const FIXTURE: &str = "tiny-llama";

fn fixture_model() -> HookedTransformer {
    model()
}

fn model() -> HookedTransformer {
    HookedTransformer::from_dir(fixture(FIXTURE)).unwrap()
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
    // hook_embed, 20 per block (with rot_q, rot_k, pre_linear), 2 of ln_final.
    checks::every_cached_activation_matches(&fixture_model(), FIXTURE, 1 + 2 * 20 + 2);
}

/// Denoising: each clean activation patched into the corrupted run, one cell at a time;
/// the normalized logit difference against TransformerLens's `patching.py` grids.
#[test]
fn patching_grids_match() {
    use actpatch_hooks::{BlockSite, Patch};
    let model = model();
    let golden = golden("tiny-llama");
    let pair = &golden["pairs"]["landmarks"];
    let (clean, corrupted) = (ids(&pair["clean_tokens"]), ids(&pair["corrupted_tokens"]));
    let correct = pair["correct_id"].as_u64().unwrap() as usize;
    let incorrect = pair["incorrect_id"].as_u64().unwrap() as usize;
    let ld_clean = pair["clean_logit_diff"].as_f64().unwrap();
    let ld_corrupted = pair["corrupted_logit_diff"].as_f64().unwrap();
    let (_, cache) = model.run_with_cache(&[clean], CacheFilter::All).unwrap();
    let normalized = |patch: Patch| {
        let logits: Vec<f32> = model
            .run_with_patches(
                std::slice::from_ref(&corrupted),
                &[patch],
                Readout::LastPosition,
            )
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        ((logits[correct] - logits[incorrect]) as f64 - ld_corrupted) / (ld_clean - ld_corrupted)
    };
    let grids = &pair["grids"];
    for (kind, site) in [
        ("resid_pre", BlockSite::ResidPre),
        ("attn_out", BlockSite::AttnOut),
        ("mlp_out", BlockSite::MlpOut),
    ] {
        for (layer, row) in grids[kind].as_array().unwrap().iter().enumerate() {
            for (pos, want) in row.as_array().unwrap().iter().enumerate() {
                let point = HookPoint::block(layer, site);
                let got = normalized(
                    Patch::replace(point, cache.get(point).unwrap().clone()).positions([pos]),
                );
                let want = want.as_f64().unwrap();
                assert!(
                    (got - want).abs() < TOL,
                    "{kind} layer {layer} pos {pos}: {got} vs {want}"
                );
            }
        }
    }
    // hook_z has a query head axis even under grouped-query attention: [layer][pos][head].
    for (layer, by_pos) in grids["head_z_by_pos"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (pos, by_head) in by_pos.as_array().unwrap().iter().enumerate() {
            for (head, want) in by_head.as_array().unwrap().iter().enumerate() {
                let point = HookPoint::block(layer, BlockSite::Z);
                let patch = Patch::replace(point, cache.get(point).unwrap().clone())
                    .positions([pos])
                    .heads([head]);
                let got = normalized(patch);
                let want = want.as_f64().unwrap();
                assert!(
                    (got - want).abs() < TOL,
                    "head_z layer {layer} pos {pos} head {head}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn dims_and_hook_space_are_llamas() {
    let model = model();
    let dims = model.dims();
    assert_eq!(dims.arch.name(), "llama");
    assert_eq!(
        (dims.n_layers, dims.d_model, dims.n_heads, dims.n_kv_heads),
        (2, 32, 4, 2)
    );
    assert_eq!(
        (dims.d_head, dims.d_mlp, dims.n_ctx, dims.d_vocab),
        (8, 64, 64, 49152)
    );
    assert_eq!(model.hook_space(), actpatch_hooks::HookSpace::llama(2));
    assert_eq!(model.tokenizer().bos_id(), Some(1));
}
