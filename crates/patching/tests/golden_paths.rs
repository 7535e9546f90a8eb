//! Path patching equals TransformerLens 2.15 (`tests/fixtures/*/golden_paths.json`,
//! made by `tests/fixtures/gen/make_golden_paths.py`) within 1e-4: both fixtures
//! (GPT-2, and Llama with grouped-query attention), both directions, receivers the
//! logits and the q, k and v inputs of every head of the last layer; the naive and the
//! fast sweep alike.

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::path::{self, ReceiverHead, ReceiverInput, Receivers};
use actpatch_patching::{Align, CellResult, DirectedPair, Direction, MetricSet, Pair, PatchKind};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Naive,
    Fast,
}

fn run(
    model: &HookedTransformer,
    directed: &DirectedPair,
    receivers: &Receivers,
    method: Method,
) -> Vec<CellResult> {
    let positions = directed.positions(None);
    let senders = receivers.senders(PatchKind::Path, model.dims(), &positions);
    let kind = (PatchKind::Path, receivers);
    match method {
        Method::Naive => path::naive::sweep(model, directed, kind, &senders, 3, &mut |_| {}),
        Method::Fast => {
            let target = path::fast::target_run(model, directed).unwrap();
            path::fast::sweep(model, directed, &target, kind, &senders, 5, &mut |_| {})
        }
    }
    .unwrap()
}

/// The receiver set a golden grid is named after: `logits` or `layer{L}_{q,k,v}`.
fn receivers_of(name: &str, model: &HookedTransformer) -> Receivers {
    if name == "logits" {
        return Receivers::Logits;
    }
    let (layer, input) = name.trim_start_matches("layer").split_once('_').unwrap();
    let layer: usize = layer.parse().unwrap();
    let input = match input {
        "q" => ReceiverInput::Q,
        "k" => ReceiverInput::K,
        _ => ReceiverInput::V,
    };
    let heads = (0..input.n_heads(model.dims()))
        .map(|head| ReceiverHead { layer, head })
        .collect();
    Receivers::Heads {
        input,
        heads,
        positions: None,
    }
}

fn check_fixture(name: &str, method: Method) {
    let dir = fixture(name);
    let model = HookedTransformer::from_dir(&dir).unwrap();
    let golden = read_json(dir.join("golden.json"));
    let paths = read_json(dir.join("golden_paths.json"));
    let mut checked = 0;
    for (pair_name, expected) in paths["pairs"].as_object().unwrap() {
        let g = &golden["pairs"][pair_name];
        let s = |k: &str| g[k].as_str().unwrap();
        let pair = Pair::from_prompts(
            &model,
            s("clean"),
            s("corrupted"),
            [s("correct"), s("incorrect")],
            Align::Strict,
        )
        .unwrap();
        let baselines = pair.baselines(&model).unwrap();
        for direction in Direction::BOTH {
            let directed = DirectedPair::new(
                &model,
                &pair,
                &baselines,
                direction,
                &[PatchKind::Path],
                MetricSet::All,
            )
            .unwrap();
            for (grid_name, grid) in expected["grids"][direction.name()].as_object().unwrap() {
                let receivers = receivers_of(grid_name, &model);
                let cells = run(&model, &directed, &receivers, method);
                let what = format!("{name} {pair_name} {direction} {grid_name} {method:?}");
                checked += compare(&cells, grid, &what);
            }
        }
    }
    assert_eq!(
        checked,
        2 * 2 * (8 + 3 * 4),
        "{name}: every golden value checked"
    );
}

/// Asserts `cells` equal the non-null entries of `grid` (and that null entries have
/// no cell); returns the number of values compared.
fn compare(cells: &[CellResult], grid: &Value, what: &str) -> usize {
    let mut compared = 0;
    for (layer, row) in grid.as_array().unwrap().iter().enumerate() {
        for (head, want) in row.as_array().unwrap().iter().enumerate() {
            let cell = cells
                .iter()
                .find(|c| c.index.layer == layer && c.index.head == Some(head));
            match (want.as_f64(), cell) {
                (None, None) => {}
                (Some(want), Some(cell)) => {
                    let got = cell.metrics.normalized_logit_diff;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{what} sender {layer}.{head}: {got} vs golden {want}"
                    );
                    compared += 1;
                }
                (want, cell) => {
                    panic!("{what} sender {layer}.{head}: golden {want:?}, computed {cell:?}")
                }
            }
        }
    }
    compared
}

#[test]
fn naive_path_patching_equals_transformer_lens_on_gpt2() {
    check_fixture("tiny-gpt2", Method::Naive);
}

#[test]
fn naive_path_patching_equals_transformer_lens_on_llama() {
    check_fixture("tiny-llama", Method::Naive);
}

#[test]
fn fast_path_patching_equals_transformer_lens_on_gpt2() {
    check_fixture("tiny-gpt2", Method::Fast);
}

#[test]
fn fast_path_patching_equals_transformer_lens_on_llama() {
    check_fixture("tiny-llama", Method::Fast);
}

/// Pairs of different token lengths (aligned at the start or the end): the fast path
/// equals the naive passes for both path kinds, every receiver form, both directions.
fn check_misaligned(name: &str) {
    let model = HookedTransformer::from_dir(fixture(name)).unwrap();
    let n_heads = model.dims().n_heads;
    let n_kv = model.dims().n_kv_heads;
    for align in [Align::Start, Align::End] {
        let pair = Pair::from_prompts(
            &model,
            "The Colosseum is in",
            "The Champs Elysees is in",
            [" Rome", " Paris"],
            align,
        )
        .unwrap();
        let baselines = pair.baselines(&model).unwrap();
        for direction in Direction::BOTH {
            let directed = DirectedPair::new(
                &model,
                &pair,
                &baselines,
                direction,
                &[PatchKind::Path],
                MetricSet::All,
            )
            .unwrap();
            let n_pos = directed.target_tokens.len();
            let sets = [
                Receivers::Logits,
                Receivers::Heads {
                    input: ReceiverInput::Q,
                    heads: vec![ReceiverHead {
                        layer: 1,
                        head: n_heads - 1,
                    }],
                    positions: Some(vec![n_pos - 1]),
                },
                Receivers::Heads {
                    input: ReceiverInput::K,
                    heads: (0..n_kv)
                        .map(|head| ReceiverHead { layer: 1, head })
                        .collect(),
                    positions: Some(vec![2, n_pos - 2]),
                },
            ];
            let target = path::fast::target_run(&model, &directed).unwrap();
            for receivers in &sets {
                for kind in [PatchKind::Path, PatchKind::PathByPos] {
                    let senders = receivers.senders(kind, model.dims(), &directed.positions(None));
                    let what = (kind, receivers);
                    let fast = path::fast::sweep(
                        &model,
                        &directed,
                        &target,
                        what,
                        &senders,
                        4,
                        &mut |_| {},
                    )
                    .unwrap();
                    let naive =
                        path::naive::sweep(&model, &directed, what, &senders, 3, &mut |_| {})
                            .unwrap();
                    assert_eq!(fast.len(), senders.len());
                    for (f, n) in fast.iter().zip(&naive) {
                        let gap = (f.metrics.normalized_logit_diff
                            - n.metrics.normalized_logit_diff)
                            .abs();
                        assert!(
                            gap < 1e-4,
                            "{name} {align:?} {direction} {kind} {receivers} {:?}: fast {} naive {}",
                            f.index,
                            f.metrics.normalized_logit_diff,
                            n.metrics.normalized_logit_diff
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fast_equals_naive_on_misaligned_pairs_gpt2() {
    check_misaligned("tiny-gpt2");
}

#[test]
fn fast_equals_naive_on_misaligned_pairs_llama() {
    check_misaligned("tiny-llama");
}
