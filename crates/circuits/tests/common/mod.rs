//! What the circuits tests share: the fixtures, their golden pairs as token ids, and a
//! pair with its swap (two corrupted prompts of one length, for mean ablation).
#![allow(dead_code)]

use std::path::PathBuf;

use actpatch_circuits::EdgePair;
use actpatch_model::HookedTransformer;
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

pub fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The pairs of the fixture's `golden.json`, by name, as token ids and answer ids.
pub fn golden_pairs(name: &str) -> Vec<(String, EdgePair)> {
    let pairs = read_json(fixture(name).join("golden.json"));
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let id = |v: &Value| v.as_u64().unwrap() as u32;
    pairs["pairs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, p)| {
            let pair = EdgePair {
                clean: ids(&p["clean_tokens"]),
                corrupted: ids(&p["corrupted_tokens"]),
                answers: [id(&p["correct_id"]), id(&p["incorrect_id"])],
            };
            (name.clone(), pair)
        })
        .collect()
}

/// A pair and its swap (clean and corrupted exchanged, answers too): two corrupted
/// prompts of one length, as mean ablation needs.
pub fn pair_and_swap(
    model: &HookedTransformer,
    prompts: [&str; 2],
    answers: [&str; 2],
) -> [EdgePair; 2] {
    let answers = [
        model.to_single_token(answers[0]).unwrap(),
        model.to_single_token(answers[1]).unwrap(),
    ];
    let clean = model.to_tokens(prompts[0], true).unwrap();
    let corrupted = model.to_tokens(prompts[1], true).unwrap();
    assert_eq!(clean.len(), corrupted.len(), "the pair's token lengths");
    [
        EdgePair {
            clean: clean.clone(),
            corrupted: corrupted.clone(),
            answers,
        },
        EdgePair {
            clean: corrupted,
            corrupted: clean,
            answers: [answers[1], answers[0]],
        },
    ]
}

/// The golden file's scores of `method` (its label, e.g. `EAP-IG-inputs(5)`) for
/// `pair`, in the graph's edge order.
pub fn golden_scores(
    graph: &actpatch_circuits::Graph,
    golden: &Value,
    pair: &str,
    method: &str,
) -> Vec<f32> {
    let scores = &golden["pairs"][pair]["scores"][method];
    graph
        .edges
        .iter()
        .map(|e| scores[graph.edge_name(e).as_str()].as_f64().unwrap() as f32)
        .collect()
}
