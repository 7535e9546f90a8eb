//! Faithfulness curves against `golden_edges.json`'s `faithfulness` (made with MIB's
//! `evaluate_area_under_curve` on the EAP-IG library): the library's EAP-IG-inputs(5)
//! scores, circuits at MIB's fractions, patching and zero ablation, both fixtures and
//! both pairs: edges after pruning, f per size, CPR, CMD, m(∅) and m(full) within 1e-4.

use crate::common;

use actpatch_circuits::{
    exact_edges, faithfulness_curve, Ablation, Graph, Select, Size, MIB_FRACTIONS,
};
use actpatch_model::HookedTransformer;
use common::{fixture, golden_pairs, golden_scores, pair_and_swap, read_json};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-4
}

/// Zero ablation on the Llama fixture (no biases, no position embeddings) leaves
/// receivers whose inputs are all ablated with an input of exactly 0, which RMSNorm
/// maps to 0; the library subtracts every live output from the live stream instead and
/// leaves float residue of ~1e-7, which RMSNorm (eps 1e-5) scales up: its m(∅) is
/// -1.4e-4 where the exact value is 0. There the tolerance is 5e-4.
fn close_zero_llama(a: f64, b: f64) -> bool {
    (a - b).abs() < 5e-4
}

#[test]
fn curves_equal_mibs() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        let graph = Graph::of_model(&model);
        let golden = read_json(fixture(name).join("golden_edges.json"));
        for (pair_name, pair) in golden_pairs(name) {
            let expected = &golden["pairs"][pair_name.as_str()];
            let scores = golden_scores(&graph, &golden, &pair_name, "EAP-IG-inputs(5)");
            let sizes: Vec<Size> = MIB_FRACTIONS.iter().map(|f| Size::Fraction(*f)).collect();
            for (label, ablation) in [("patching", Ablation::Patching), ("zero", Ablation::Zero)] {
                let want = &expected["faithfulness"][label];
                let curve = faithfulness_curve(
                    &model,
                    &graph,
                    std::slice::from_ref(&pair),
                    &scores,
                    (ablation, Select::Abs),
                    &sizes,
                )
                .unwrap();
                let at = |key: &str, i: usize| want[key][i].as_f64().unwrap();
                let tag = format!("{name} {pair_name} {label}");
                let close = |a: f64, b: f64| match (name, ablation) {
                    ("tiny-llama", Ablation::Zero) => close_zero_llama(a, b),
                    _ => close(a, b),
                };
                for (i, point) in curve.points.iter().enumerate() {
                    assert_eq!(
                        point.requested as f64,
                        at("top_n", i),
                        "{tag}: top_n at {}",
                        point.fraction
                    );
                    assert_eq!(
                        point.edges as f64,
                        at("edges_after_prune", i),
                        "{tag}: edges after pruning at {}",
                        point.fraction
                    );
                    assert!(
                        close(point.faithfulness, at("faithfulness", i)),
                        "{tag}: f at {}: {} vs {}",
                        point.fraction,
                        point.faithfulness,
                        at("faithfulness", i)
                    );
                }
                assert!(
                    close(curve.ld_empty, want["ld_empty"].as_f64().unwrap()),
                    "{tag}: m(∅) {}",
                    curve.ld_empty
                );
                assert!(
                    close(
                        curve.ld_full,
                        expected["faithfulness"]["ld_full"].as_f64().unwrap()
                    ),
                    "{tag}: m(full)"
                );
                assert!(
                    close(curve.cpr, want["cpr"].as_f64().unwrap()),
                    "{tag}: CPR {} vs {}",
                    curve.cpr,
                    want["cpr"]
                );
                assert!(
                    close(curve.cmd, want["cmd"].as_f64().unwrap()),
                    "{tag}: CMD {} vs {}",
                    curve.cmd,
                    want["cmd"]
                );
                // The full circuit is the clean run, the empty one every edge ablated.
                assert!(
                    (curve.points.last().unwrap().faithfulness - 1.0).abs() < 1e-5,
                    "{tag}: f(full)"
                );
            }
        }
    }
}

/// A circuit of every edge but one, run block by block with live sender outputs, equals
/// that edge's exact effect (one receiver input patched in a clean run), for every
/// ablation (the empty and the full circuit: `evaluate`'s unit tests).
#[test]
fn all_but_one_edge_is_that_edges_exact_effect() {
    let landmarks = (
        ["The Colosseum is in", "The Eiffel Tower is in"],
        [" Rome", " Paris"],
    );
    let capital = (
        ["The capital of France is", "The capital of Italy is"],
        [" Paris", " Rome"],
    );
    // tiny-pythia: parallel blocks (GPT-NeoX); tiny-gemma2: norms after attention and MLP.
    for (name, (prompts, answers)) in [
        ("tiny-gpt2", landmarks),
        ("tiny-llama", landmarks),
        ("tiny-pythia", capital),
        ("tiny-gemma2", capital),
    ] {
        let model = HookedTransformer::from_dir(fixture(name)).unwrap();
        let graph = Graph::of_model(&model);
        let pairs = pair_and_swap(&model, prompts, answers);
        let n = graph.edges.len();
        for ablation in [Ablation::Patching, Ablation::Zero, Ablation::Mean] {
            let exact = exact_edges(
                &model,
                &graph,
                &pairs,
                ablation,
                &(0..n).collect::<Vec<_>>(),
            )
            .unwrap();
            let mut checked = 0;
            for edge in [0, 13, n / 2, n - 1] {
                let mut scores = vec![1.0f32; n];
                scores[edge] = 0.0;
                let curve = faithfulness_curve(
                    &model,
                    &graph,
                    &pairs,
                    &scores,
                    (ablation, Select::Abs),
                    &[Size::Edges(n - 1)],
                )
                .unwrap();
                let point = &curve.points[0];
                if point.edges != n - 1 {
                    continue; // pruning took more edges with it
                }
                checked += 1;
                for (p, pair_scores) in exact.iter().enumerate() {
                    let effect = f64::from(point.per_pair[p] - curve.full_per_pair[p]);
                    let want = f64::from(pair_scores.scores[edge]);
                    assert!(
                        (effect - want).abs() < 1e-4,
                        "{name} {ablation:?} {}: {effect} vs exact {want}",
                        graph.edge_name(&graph.edges[edge])
                    );
                }
            }
            assert!(
                checked >= 2,
                "{name} {ablation:?}: pruning left too few edges to check"
            );
        }
    }
}

/// A circuit written to the library's graph JSON and read back scores as the circuit
/// itself: MIB's faithfulness at that size (`golden_edges.json`); a file of another
/// model's graph is refused.
#[test]
fn circuit_files_read_back_to_the_same_faithfulness() {
    use actpatch_circuits::json::{graph_json, read_circuit};
    use actpatch_circuits::{circuits_faithfulness, top_edges, Circuit};
    let model = HookedTransformer::from_dir(fixture("tiny-gpt2")).unwrap();
    let graph = Graph::of_model(&model);
    let golden = read_json(fixture("tiny-gpt2").join("golden_edges.json"));
    let (name, pair) = golden_pairs("tiny-gpt2")
        .into_iter()
        .find(|(n, _)| n == "landmarks")
        .unwrap();
    let expected = &golden["pairs"][name.as_str()];
    let scores = golden_scores(&graph, &golden, &name, "EAP-IG-inputs(5)");
    // MIB's 0.2: 22 edges asked for, index 7 of its fractions.
    let in_graph = top_edges(&graph, &scores, 22, Select::Abs);
    let text = graph_json(&graph, &scores, Some(&in_graph));
    let read = read_circuit(&graph, &text).unwrap();
    assert_eq!(read, in_graph);
    let curve = circuits_faithfulness(
        &model,
        &graph,
        &[pair],
        Ablation::Patching,
        &[Circuit::given(&graph, read)],
    )
    .unwrap();
    let want = expected["faithfulness"]["patching"]["faithfulness"][7]
        .as_f64()
        .unwrap();
    assert!(
        close(curve.points[0].faithfulness, want),
        "{} vs {want}",
        curve.points[0].faithfulness
    );
    let other = Graph::new(3, 4, 32, false);
    let error = read_circuit(&other, &text).unwrap_err();
    assert!(
        error.contains("n_layers") && error.contains("another model"),
        "{error}"
    );
}
