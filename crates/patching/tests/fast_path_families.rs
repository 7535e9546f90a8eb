//! The fast sweep gives the numbers of the naive one on every family fixture (Llama 3
//! rotary scaling, Qwen2.5 biases, Qwen3 key norms, Gemma 2 soft-capping and sliding
//! windows, Pythia's parallel blocks and partial rotary): every kind the model has, on
//! every cell, in both directions, on the two golden pairs and a misaligned one under
//! each alignment. A kind whose hook point a model lacks is refused, not swept.

use crate::common;

use actpatch_model::HookedTransformer;
use actpatch_patching::{check_kinds, Align, PatchKind, PatchingError};
use common::{every_cell_agrees, fixtures, pair, Setup};

/// The fixture with the two pairs of its golden file, and the first pair's clean
/// prompt against a longer corruption under each alignment.
fn family(dir: &str) -> Setup {
    let model = HookedTransformer::from_dir(fixtures().join(dir)).unwrap();
    let text = std::fs::read_to_string(fixtures().join(dir).join("golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut pairs = Vec::new();
    for (i, (name, p)) in golden["pairs"].as_object().unwrap().iter().enumerate() {
        let text = |k: &str| p[k].as_str().unwrap().to_string();
        let answers = [text("correct"), text("incorrect")];
        let mut add = |name: String, corrupted: &str, align| {
            let answers = [answers[0].as_str(), answers[1].as_str()];
            let (pair, baselines) = pair(&model, &text("clean"), corrupted, answers, align);
            pairs.push((name, pair, baselines));
        };
        add(name.clone(), &text("corrupted"), Align::Strict);
        if i == 0 {
            let longer = text("corrupted").replacen("The ", "The old ", 1);
            add(format!("{name}-misaligned-start"), &longer, Align::Start);
            add(format!("{name}-misaligned-end"), &longer, Align::End);
        }
    }
    assert_eq!(pairs.len(), 4, "{dir}");
    let (_, misaligned, _) = &pairs[1];
    assert_ne!(
        misaligned.clean_tokens.len(),
        misaligned.corrupted_tokens.len()
    );
    Setup { model, pairs }
}

/// Every kind `setup`'s model has agrees on every cell; returns the kinds refused.
fn every_kind_agrees(setup: &Setup) -> Vec<PatchKind> {
    let mut refused = Vec::new();
    for kind in PatchKind::ALL {
        if let Err(err) = check_kinds(&setup.model, &[kind]) {
            assert!(matches!(err, PatchingError::KindNotInModel { .. }), "{err}");
            refused.push(kind);
            continue;
        }
        every_cell_agrees(setup, kind);
    }
    refused
}

#[test]
fn llama3_fast_equals_naive() {
    assert_eq!(every_kind_agrees(&family("tiny-llama3")), []);
}

#[test]
fn qwen2_fast_equals_naive() {
    assert_eq!(every_kind_agrees(&family("tiny-qwen2")), []);
}

#[test]
fn qwen3_fast_equals_naive() {
    assert_eq!(every_kind_agrees(&family("tiny-qwen3")), []);
}

#[test]
fn gemma2_fast_equals_naive() {
    assert_eq!(every_kind_agrees(&family("tiny-gemma2")), []);
}

#[test]
fn pythia_fast_equals_naive_and_refuses_resid_mid() {
    // Parallel attention and MLP: there is no resid_mid to patch.
    let setup = family("tiny-pythia");
    assert_eq!(every_kind_agrees(&setup), [PatchKind::ResidMid]);
    let err = check_kinds(&setup.model, &[PatchKind::ResidPre, PatchKind::ResidMid])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("resid_mid") && err.contains("gpt_neox") && err.contains("resid_post"),
        "{err}"
    );
}
