//! The Llama forward pass against Hugging Face transformers and TransformerLens 2.15
//! (`tests/fixtures/tiny-llama/golden.json`).

mod common;

use actpatch_hooks::{CacheFilter, HookPoint};
use actpatch_model::{HookedTransformer, Readout};
use common::{assert_close, fixture, golden, ids};

const TOL: f64 = 1e-4;

fn model() -> HookedTransformer {
    HookedTransformer::from_dir(fixture("tiny-llama")).unwrap()
}

#[test]
fn tokens_with_bos_match_transformer_lens() {
    let model = model();
    let golden = golden("tiny-llama");
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

#[test]
fn last_position_logits_match() {
    let model = model();
    let golden = golden("tiny-llama");
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
        let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + values
                .iter()
                .map(|v| (*v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let want = pair["clean_last_logsumexp"].as_f64().unwrap();
        assert!((lse - want).abs() < TOL, "{name} logsumexp {lse} vs {want}");

        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|a, b| values[*b].total_cmp(&values[*a]));
        let top10: Vec<u32> = order[..10].iter().map(|i| *i as u32).collect();
        assert_eq!(
            top10,
            ids(&pair["clean_last_logits_top10"]),
            "{name} top-10 ids"
        );
    }
}

#[test]
fn logit_differences_match() {
    let model = model();
    let golden = golden("tiny-llama");
    for (name, pair) in golden["pairs"].as_object().unwrap() {
        let correct = pair["correct_id"].as_u64().unwrap() as usize;
        let incorrect = pair["incorrect_id"].as_u64().unwrap() as usize;
        for side in ["clean", "corrupted"] {
            let tokens = model
                .tokens_tensor(&[ids(&pair[format!("{side}_tokens")])])
                .unwrap();
            let logits: Vec<f32> = model
                .forward(
                    &tokens,
                    &mut actpatch_hooks::Hooks::none(),
                    Readout::LastPosition,
                )
                .unwrap()
                .get(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let ld = (logits[correct] - logits[incorrect]) as f64;
            let want = pair[format!("{side}_logit_diff")].as_f64().unwrap();
            assert!((ld - want).abs() < TOL, "{name} {side}: {ld} vs {want}");
        }
    }
}

#[test]
fn every_cached_activation_matches() {
    let model = model();
    let golden = golden("tiny-llama");
    let pair = &golden["pairs"]["landmarks"];
    let (_, cache) = model
        .run_with_cache(&[ids(&pair["clean_tokens"])], CacheFilter::All)
        .unwrap();
    let expected = pair["activations_clean"].as_object().unwrap();
    assert_eq!(expected.len(), 43);
    assert_eq!(cache.len(), 43, "Llama has 43 hook points at 2 layers");
    for (name, want) in expected {
        let point: HookPoint = name.parse().unwrap();
        let got = cache.get(point).unwrap().squeeze(0).unwrap(); // drop the batch axis
        assert_close(name, &got, want, TOL);
    }
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
