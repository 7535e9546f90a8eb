//! Edge scores against `golden_edges.json`, made with the EAP-IG library itself on both
//! tiny fixtures (`tests/fixtures/gen/make_golden_edges.py`): every method the library
//! and actpatch share, edge by edge, within 1e-4 logit units.

use crate::common;

use actpatch_circuits::{attribute, Ablation, EdgePair, Graph, Method};
use actpatch_model::HookedTransformer;
use common::{fixture, golden_pairs, read_json};
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

/// The fixture's model, graph, golden edge file and its pairs as token ids.
fn setup(name: &str) -> (HookedTransformer, Graph, Value, Vec<(String, EdgePair)>) {
    let model = HookedTransformer::from_dir(fixture(name)).unwrap();
    let graph = Graph::of_model(&model);
    let golden = read_json(fixture(name).join("golden_edges.json"));
    let pairs = golden_pairs(name);
    (model, graph, golden, pairs)
}

fn check_method(name: &str, label: &str, method: Method, ablation: Ablation) {
    let (model, graph, golden, pairs) = setup(name);
    let names: Vec<String> = graph.edges.iter().map(|e| graph.edge_name(e)).collect();
    let golden_names: Vec<String> = golden["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, golden_names, "{name}: edge names and order");
    for (pair_name, pair) in &pairs {
        let expected = &golden["pairs"][pair_name.as_str()];
        let scores =
            attribute(&model, &graph, std::slice::from_ref(pair), method, ablation).unwrap();
        let got = &scores[0];
        let ld_clean = expected["ld_clean"].as_f64().unwrap();
        assert!(
            (f64::from(got.ld_clean) - ld_clean).abs() < TOLERANCE,
            "{name} {pair_name}: ld_clean {} vs {ld_clean}",
            got.ld_clean
        );
        let mut worst = (0.0f64, String::new());
        for (edge, score) in names.iter().zip(&got.scores) {
            let want = expected["scores"][label][edge.as_str()].as_f64().unwrap();
            let gap = (f64::from(*score) - want).abs();
            if gap > worst.0 {
                worst = (gap, format!("{edge}: {score} vs {want}"));
            }
        }
        assert!(
            worst.0 < TOLERANCE,
            "{name} {pair_name} {label}: worst edge {} (gap {:.2e})",
            worst.1,
            worst.0
        );
    }
}

macro_rules! golden_tests {
    ($($test:ident: $fixture:expr, $label:expr, $method:expr, $ablation:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check_method($fixture, $label, $method, $ablation);
            }
        )*
    };
}

golden_tests! {
    gpt2_eap: "tiny-gpt2", "EAP", Method::Eap, Ablation::Patching;
    gpt2_eap_zero: "tiny-gpt2", "EAP zero", Method::Eap, Ablation::Zero;
    gpt2_eap_ig_inputs_5: "tiny-gpt2", "EAP-IG-inputs(5)", Method::EapIgInputs { steps: 5 }, Ablation::Patching;
    gpt2_eap_ig_inputs_1: "tiny-gpt2", "EAP-IG-inputs(1)", Method::EapIgInputs { steps: 1 }, Ablation::Patching;
    gpt2_clean_corrupted: "tiny-gpt2", "clean-corrupted", Method::CleanCorrupted, Ablation::Patching;
    gpt2_exact: "tiny-gpt2", "exact", Method::Exact, Ablation::Patching;
    llama_eap: "tiny-llama", "EAP", Method::Eap, Ablation::Patching;
    llama_eap_zero: "tiny-llama", "EAP zero", Method::Eap, Ablation::Zero;
    llama_eap_ig_inputs_5: "tiny-llama", "EAP-IG-inputs(5)", Method::EapIgInputs { steps: 5 }, Ablation::Patching;
    llama_eap_ig_inputs_1: "tiny-llama", "EAP-IG-inputs(1)", Method::EapIgInputs { steps: 1 }, Ablation::Patching;
    llama_clean_corrupted: "tiny-llama", "clean-corrupted", Method::CleanCorrupted, Ablation::Patching;
    llama_exact: "tiny-llama", "exact", Method::Exact, Ablation::Patching;
}

/// Principled EAP-IG on activations with one step is EAP exactly (its one run is the
/// clean run), under every ablation.
#[test]
fn eap_ig_activations_with_one_step_is_eap() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let (model, graph, _, pairs) = setup(name);
        let (_, first) = &pairs[0];
        // Mean ablation averages over corrupted prompts of one length: a pair and its swap.
        let swapped = EdgePair {
            clean: first.corrupted.clone(),
            corrupted: first.clean.clone(),
            answers: [first.answers[1], first.answers[0]],
        };
        let pairs = vec![first.clone(), swapped];
        for ablation in [Ablation::Patching, Ablation::Zero, Ablation::Mean] {
            let eap = attribute(&model, &graph, &pairs, Method::Eap, ablation).unwrap();
            let ig = attribute(
                &model,
                &graph,
                &pairs,
                Method::EapIgActivations { steps: 1 },
                ablation,
            )
            .unwrap();
            for (a, b) in eap.iter().zip(&ig) {
                for (x, y) in a.scores.iter().zip(&b.scores) {
                    assert!((x - y).abs() < 1e-5, "{name} {ablation:?}: {x} vs {y}");
                }
            }
        }
    }
}

/// Pairs of different token lengths (8 and 6 tokens on the GPT-2 fixture) scored in
/// one call: each pair's scores are its own one-pair run's (the library's), and the
/// mean over pairs is their mean.
#[test]
fn pairs_of_different_lengths_score_as_one_pair_runs() {
    let (model, graph, golden, pairs) = setup("tiny-gpt2");
    let names: Vec<String> = graph.edges.iter().map(|e| graph.edge_name(e)).collect();
    let only: Vec<EdgePair> = pairs.iter().map(|(_, p)| p.clone()).collect();
    assert_ne!(only[0].clean.len(), only[1].clean.len());
    let method = Method::EapIgInputs { steps: 5 };
    let together = attribute(&model, &graph, &only, method, Ablation::Patching).unwrap();
    let mean = actpatch_circuits::mean_scores(&together);
    for (i, edge) in names.iter().enumerate() {
        let want: Vec<f64> = pairs
            .iter()
            .map(|(name, _)| {
                golden["pairs"][name.as_str()]["scores"]["EAP-IG-inputs(5)"][edge.as_str()]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        for (scores, w) in together.iter().zip(&want) {
            assert!(
                (f64::from(scores.scores[i]) - w).abs() < TOLERANCE,
                "{edge}"
            );
        }
        let want_mean = want.iter().sum::<f64>() / want.len() as f64;
        assert!(
            (f64::from(mean[i]) - want_mean).abs() < TOLERANCE,
            "{edge}: mean"
        );
    }
}
