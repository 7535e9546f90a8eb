//! The fast sweep gives the numbers of the naive one (a full forward pass per cell
//! batch), in both directions: on random patch kinds, positions and heads, on GPT-2
//! and on Llama with grouped-query attention, aligned and misaligned; and cells
//! skipped as no-ops are exactly what the naive path computes.

use crate::common;

use std::sync::OnceLock;

use actpatch_model::HookedTransformer;
use actpatch_patching::{Align, CellIndex, Direction, MetricSet, PatchKind};
use common::{assert_agree, every_cell_agrees, fixtures, pair, setup, Case, Setup};
use proptest::prelude::*;

fn gpt2() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        setup(
            "tiny-gpt2",
            "The capital of Poland is",
            [" Paris", " Warsaw"],
        )
    })
}

fn llama() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| setup("tiny-llama", "The capital of Italy is", [" Paris", " Rome"]))
}

fn check_random(
    setup: &Setup,
    pair: usize,
    direction: Direction,
    kind: PatchKind,
    picks: &[usize],
) {
    let case = Case::new(setup, pair, direction, kind);
    if !case.applies() {
        return; // attention patterns are not defined between prompts of different lengths
    }
    let all = case.all_cells();
    let cells: Vec<CellIndex> = picks.iter().map(|i| all[i % all.len()]).collect();
    let (fast, naive) = case.both(&cells);
    assert_agree(&fast, &naive, &case.label());
}

fn kind_strategy() -> impl Strategy<Value = PatchKind> {
    proptest::sample::select(PatchKind::ALL.to_vec())
}

fn direction_strategy() -> impl Strategy<Value = Direction> {
    proptest::sample::select(Direction::BOTH.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn fast_equals_naive_on_gpt2(kind in kind_strategy(), direction in direction_strategy(), pair in 0usize..4, picks in proptest::collection::vec(any::<usize>(), 1..24)) {
        check_random(gpt2(), pair, direction, kind, &picks);
    }

    #[test]
    fn fast_equals_naive_on_llama(kind in kind_strategy(), direction in direction_strategy(), pair in 0usize..4, picks in proptest::collection::vec(any::<usize>(), 1..24)) {
        check_random(llama(), pair, direction, kind, &picks);
    }
}

#[test]
fn every_kind_agrees_on_every_cell_in_both_directions() {
    for setup in [gpt2(), llama()] {
        for kind in PatchKind::ALL {
            every_cell_agrees(setup, kind);
        }
    }
}

#[test]
fn no_op_cells_are_exactly_the_naive_result() {
    // Positions 0 and 1 (BOS, "The") are shared by clean and corrupted: patching them
    // changes nothing, and the fast path skips them: the target run's own value, 0
    // when denoising and 1 when noising.
    let cells: Vec<CellIndex> = (0..2)
        .flat_map(|layer| {
            (0..2).map(move |p| CellIndex {
                layer,
                head: None,
                position: Some(p),
                src: None,
            })
        })
        .collect();
    for (direction, target_value) in [(Direction::Denoising, 0.0), (Direction::Noising, 1.0)] {
        for kind in [PatchKind::ResidPre, PatchKind::AttnOut, PatchKind::MlpOut] {
            let case = Case {
                naive_rows: 1,
                ..Case::new(gpt2(), 0, direction, kind)
            };
            let (fast, naive) = case.both(&cells);
            for (f, n) in fast.iter().zip(&naive) {
                assert_eq!(f.metrics, n.metrics, "{} {:?}", case.label(), f.index);
                assert!((f.metrics.normalized_logit_diff - target_value).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn logit_diff_only_metrics_agree_and_leave_the_distribution_empty() {
    for direction in Direction::BOTH {
        for kind in [PatchKind::ResidPre, PatchKind::HeadOutByPos] {
            let full = Case {
                naive_rows: 64,
                ..Case::new(gpt2(), 0, direction, kind)
            };
            let cheap = Case {
                metrics: MetricSet::LogitDiff,
                ..Case::new(gpt2(), 0, direction, kind)
            };
            let cells = full.all_cells();
            let (fast, naive) = cheap.both(&cells);
            let (reference, _) = full.both(&cells);
            for ((f, n), a) in fast.iter().zip(&naive).zip(&reference) {
                let nld = a.metrics.normalized_logit_diff;
                assert!((f.metrics.normalized_logit_diff - nld).abs() < 1e-4);
                assert!((n.metrics.logit_diff - a.metrics.logit_diff).abs() < 1e-4);
                assert_eq!((f.metrics.prob_correct, f.metrics.kl_div), (None, None));
                assert_eq!((n.metrics.prob_correct, n.metrics.kl_div), (None, None));
            }
        }
    }
}

#[test]
fn unread_last_layer_cells_are_exactly_the_naive_result() {
    // In the last layer, what a non-final position writes after attention never
    // reaches the final position: the fast path answers these cells without a pass.
    let setup = gpt2();
    let n_pos = setup.pairs[0].1.corrupted_tokens.len();
    let last = setup.model.dims().n_layers - 1;
    let cells: Vec<CellIndex> = (2..n_pos - 1)
        .map(|p| CellIndex {
            layer: last,
            head: None,
            position: Some(p),
            src: None,
        })
        .collect();
    for direction in Direction::BOTH {
        for kind in [
            PatchKind::AttnOut,
            PatchKind::MlpOut,
            PatchKind::ResidMid,
            PatchKind::ResidPost,
        ] {
            let case = Case {
                naive_rows: 1,
                ..Case::new(setup, 0, direction, kind)
            };
            let (fast, naive) = case.both(&cells);
            for (f, n) in fast.iter().zip(&naive) {
                assert_eq!(f.metrics, n.metrics, "{} {:?}", case.label(), f.index);
            }
        }
    }
}

#[test]
fn noising_maps_positions_back_onto_the_clean_run() {
    // Misaligned under "end": the clean prompt is shorter, so in the noising direction
    // every clean position receives a corrupted activation (BOS from BOS), and the
    // corrupted run's extra position is patched nowhere.
    let (_, pair, _) = &gpt2().pairs[3];
    let (n_clean, n_corrupted) = (pair.clean_tokens.len(), pair.corrupted_tokens.len());
    assert!(n_corrupted > n_clean);
    let noising = pair.map(Direction::Noising);
    assert_eq!(noising.n_target(), n_clean);
    assert_eq!(noising.source_of[0], Some(0));
    assert_eq!(noising.source_of[n_clean - 1], Some(n_corrupted - 1));
    assert_eq!(pair.clean_position(Direction::Noising, 2), Some(2));
}

/// A random 5-layer GPT-2 (d_model 32) with the real tokenizer: deep enough that
/// patched rows join at intermediate layers, run full blocks, and reach a pruned
/// last layer — what the 2-layer fixtures cannot show.
fn deep_random_gpt2() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        use candle_core::{DType, Device, Tensor};
        let dir = std::env::temp_dir().join(format!("actpatch-deep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (d, layers, vocab, ctx) = (32usize, 5usize, 50257usize, 64usize);
        let config = serde_json::json!({
            "model_type": "gpt2", "vocab_size": vocab, "n_positions": ctx, "n_embd": d,
            "n_layer": layers, "n_head": 4, "layer_norm_epsilon": 1e-5, "bos_token_id": 50256,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::copy(
            fixtures().join("tiny-gpt2/tokenizer.json"),
            dir.join("tokenizer.json"),
        )
        .unwrap();
        let dev = Device::Cpu;
        // Seeded, so every run tests the same model (unseeded draws made this test fail
        // now and then where a small clean − corrupted gap magnified rounding).
        let rng = std::cell::RefCell::new(
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5),
        );
        let randn = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    // Box–Muller: N(0, 0.3²).
                    let mut rng = rng.borrow_mut();
                    let (u, v): (f32, f32) = (rand::Rng::gen(&mut *rng), rand::Rng::gen(&mut *rng));
                    0.3 * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect();
            Tensor::from_vec(values, shape, &dev).unwrap()
        };
        let mut w = std::collections::HashMap::new();
        w.insert("wte.weight".to_string(), randn(&[vocab, d]));
        w.insert("wpe.weight".to_string(), randn(&[ctx, d]));
        w.insert(
            "ln_f.weight".to_string(),
            Tensor::ones(d, DType::F32, &dev).unwrap(),
        );
        w.insert(
            "ln_f.bias".to_string(),
            Tensor::zeros(d, DType::F32, &dev).unwrap(),
        );
        for l in 0..layers {
            for ln in ["ln_1", "ln_2"] {
                w.insert(
                    format!("h.{l}.{ln}.weight"),
                    Tensor::ones(d, DType::F32, &dev).unwrap(),
                );
                w.insert(format!("h.{l}.{ln}.bias"), randn(&[d]));
            }
            for (name, d_in, d_out) in [
                ("attn.c_attn", d, 3 * d),
                ("attn.c_proj", d, d),
                ("mlp.c_fc", d, 4 * d),
                ("mlp.c_proj", 4 * d, d),
            ] {
                w.insert(format!("h.{l}.{name}.weight"), randn(&[d_in, d_out]));
                w.insert(format!("h.{l}.{name}.bias"), randn(&[d_out]));
            }
        }
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
        let model = HookedTransformer::from_dir(&dir).unwrap();
        let (p, b) = pair(
            &model,
            "The Colosseum is in the city of",
            "The Eiffel Tower is in the city of",
            [" Rome", " Paris"],
            Align::Strict,
        );
        Setup {
            model,
            pairs: vec![("deep".into(), p, b)],
        }
    })
}

#[test]
fn every_kind_agrees_on_a_deeper_model() {
    let setup = deep_random_gpt2();
    for direction in Direction::BOTH {
        for kind in PatchKind::ALL {
            for metrics in [MetricSet::All, MetricSet::LogitDiff] {
                // Few rows per batch too, so batches split inside start groups.
                for fast_rows in [7, 256] {
                    let case = Case {
                        metrics,
                        fast_rows,
                        naive_rows: 64,
                        ..Case::new(setup, 0, direction, kind)
                    };
                    let (fast, naive) = case.both(&case.all_cells());
                    assert_agree(
                        &fast,
                        &naive,
                        &format!("{} {metrics:?} rows {fast_rows}", case.label()),
                    );
                }
            }
        }
    }
}
