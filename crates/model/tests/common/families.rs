//! The checks of the family fixtures (`tests/fixtures/tiny-<family>/`, golden values from
//! Hugging Face transformers made by `tests/fixtures/gen/make_tiny_*.py`; see
//! `hf_golden.py` there): tokens, every position's logits, every layer's resid_pre,
//! attention output, MLP output, resid_post and attention pattern, the logit
//! differences, and the resid_pre, attn_out, mlp_out and per-head z denoising grids,
//! all within 1e-4.

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Patch};
use actpatch_model::{HookedTransformer, Readout};
use serde_json::Value;

use super::{flatten, golden, ids};

pub const TOL: f64 = 1e-4;

/// The largest |actual − golden| over a tensor, checking the shape.
pub fn deviation(name: &str, actual: &candle_core::Tensor, expected: &Value) -> f64 {
    let (shape, want) = flatten(expected);
    assert_eq!(actual.dims(), shape.as_slice(), "{name}: shape");
    let got: Vec<f32> = actual.flatten_all().unwrap().to_vec1().unwrap();
    got.iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w.unwrap()).abs())
        .fold(0.0, f64::max)
}

/// Checks `model` against everything the golden.json of `fixture_name` holds (see the
/// module docs); returns the largest deviation seen.
pub fn check_family(model: &HookedTransformer, fixture_name: &str) -> f64 {
    let golden = golden(fixture_name);
    let bos = golden["bos_id"].as_u64().unwrap() as u32;
    assert_eq!(model.tokenizer().bos_id(), Some(bos));
    let mut worst = 0.0f64;
    let mut note = |name: String, dev: f64| {
        assert!(dev <= TOL, "{fixture_name} {name}: deviation {dev:e}");
        worst = worst.max(dev);
    };
    for (pair_name, pair) in golden["pairs"].as_object().unwrap() {
        let clean = ids(&pair["clean_tokens"]);
        let corrupted = ids(&pair["corrupted_tokens"]);
        let text = |k: &str| pair[k].as_str().unwrap();
        assert_eq!(model.to_tokens(text("clean"), true).unwrap(), clean);
        assert_eq!(model.to_tokens(text("corrupted"), true).unwrap(), corrupted);
        let correct = model.to_single_token(text("correct")).unwrap();
        let incorrect = model.to_single_token(text("incorrect")).unwrap();
        assert_eq!(correct as u64, pair["correct_id"].as_u64().unwrap());
        assert_eq!(incorrect as u64, pair["incorrect_id"].as_u64().unwrap());

        let (logits, cache) = model
            .run_with_cache(std::slice::from_ref(&clean), CacheFilter::All)
            .unwrap();
        let logits = logits.squeeze(0).unwrap(); // [pos, vocab]
        let last = logits.get(logits.dim(0).unwrap() - 1).unwrap();
        let first32 = last.narrow(0, 0, 32).unwrap();
        note(
            format!("{pair_name} last logits"),
            deviation("logits", &first32, &pair["clean_last_logits_first32"]),
        );
        let ld = |tokens: &[u32]| {
            let row = model
                .run_with_patches(&[tokens.to_vec()], &[], Readout::LastPosition)
                .unwrap();
            let row: Vec<f32> = row.squeeze(0).unwrap().to_vec1().unwrap();
            (row[correct as usize] - row[incorrect as usize]) as f64
        };
        let (ld_clean, ld_corrupted) = (ld(&clean), ld(&corrupted));
        let want_clean = pair["clean_logit_diff"].as_f64().unwrap();
        let want_corrupted = pair["corrupted_logit_diff"].as_f64().unwrap();
        note(
            format!("{pair_name} logit diffs"),
            (ld_clean - want_clean)
                .abs()
                .max((ld_corrupted - want_corrupted).abs()),
        );

        if let Some(acts) = pair.get("activations") {
            for (name, want) in acts.as_object().unwrap() {
                let dev = match name.as_str() {
                    "logits" => deviation(name, &logits, want),
                    _ => {
                        let point: HookPoint = name.parse().unwrap();
                        let got = cache.get(point).unwrap().squeeze(0).unwrap();
                        deviation(name, &got, want)
                    }
                };
                note(format!("{pair_name} {name}"), dev);
            }
        }

        // Denoising grids, one patched run per cell.
        let normalized = |patch: Patch| {
            let row = model
                .run_with_patches(
                    std::slice::from_ref(&corrupted),
                    &[patch],
                    Readout::LastPosition,
                )
                .unwrap();
            let row: Vec<f32> = row.squeeze(0).unwrap().to_vec1().unwrap();
            let ld = (row[correct as usize] - row[incorrect as usize]) as f64;
            (ld - want_corrupted) / (want_clean - want_corrupted)
        };
        let grids = &pair["grids"];
        for (kind, site) in [
            ("resid_pre", BlockSite::ResidPre),
            ("attn_out", BlockSite::AttnOut),
            ("mlp_out", BlockSite::MlpOut),
        ] {
            for (layer, row) in grids[kind].as_array().unwrap().iter().enumerate() {
                let point = HookPoint::block(layer, site);
                let source = cache.get(point).unwrap().clone();
                for (pos, want) in row.as_array().unwrap().iter().enumerate() {
                    let got = normalized(Patch::replace(point, source.clone()).positions([pos]));
                    note(
                        format!("{pair_name} {kind} L{layer} p{pos}"),
                        (got - want.as_f64().unwrap()).abs(),
                    );
                }
            }
        }
        for (layer, by_pos) in grids["head_z_by_pos"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let point = HookPoint::block(layer, BlockSite::Z);
            let source = cache.get(point).unwrap().clone();
            for (pos, by_head) in by_pos.as_array().unwrap().iter().enumerate() {
                for (head, want) in by_head.as_array().unwrap().iter().enumerate() {
                    let patch = Patch::replace(point, source.clone())
                        .positions([pos])
                        .heads([head]);
                    note(
                        format!("{pair_name} head_z L{layer} p{pos} h{head}"),
                        (normalized(patch) - want.as_f64().unwrap()).abs(),
                    );
                }
            }
        }
    }
    println!("{fixture_name}: largest deviation from transformers {worst:.2e}");
    worst
}
