//! The fast sweep gives the numbers of the naive one (a full forward pass per cell
//! batch): on random patch kinds, positions and heads, on GPT-2 and on Llama with
//! grouped-query attention, aligned and misaligned; and cells skipped as no-ops are
//! exactly what the naive path computes.

use std::path::PathBuf;
use std::sync::OnceLock;

use actpatch_hooks::CacheFilter;
use actpatch_model::HookedTransformer;
use actpatch_runner::experiment::{Align, Experiment, MetricSet};
use actpatch_runner::sweep::{
    cells_of, hook_points, sweep, CellIndex, CellResult, PairSweep, PatchKind,
};
use actpatch_runner::sweep_fast::{corrupted_run, sweep_fast};
use actpatch_runner::validate::{validate_pair, PairPlan};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Setup {
    model: HookedTransformer,
    plans: Vec<PairPlan>,
}

/// The fixture experiment's model and validated pairs, plus a misaligned pair.
fn setup(file: &str) -> Setup {
    let mut experiment = Experiment::load(&fixtures().join("experiments").join(file)).unwrap();
    let mut misaligned = experiment.pairs[0].clone();
    misaligned.name = Some("misaligned".into());
    misaligned.corrupted = "The Champs Elysees is in".into();
    misaligned.align = Some(Align::Start);
    experiment.pairs.push(misaligned.clone());
    misaligned.name = Some("misaligned-end".into());
    misaligned.align = Some(Align::End);
    experiment.pairs.push(misaligned);
    let model = HookedTransformer::load(
        &actpatch_model::ModelSource::Local(experiment.model.path.clone().unwrap()),
        actpatch_model::DeviceSpec::Cpu,
    )
    .unwrap();
    let plans = (0..experiment.pairs.len())
        .map(|i| validate_pair(&model, &experiment, i).unwrap())
        .collect();
    Setup { model, plans }
}

fn gpt2() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| setup("tiny.toml"))
}

fn llama() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| setup("tiny_llama.toml"))
}

/// Both paths on the given cells of one pair; `naive_rows` cells per naive pass.
fn both(
    setup: &Setup,
    pair: usize,
    kind: PatchKind,
    cells: &[CellIndex],
    naive_rows: usize,
) -> (Vec<CellResult>, Vec<CellResult>) {
    both_with(setup, pair, kind, cells, naive_rows, MetricSet::All)
}

fn both_with(
    setup: &Setup,
    pair: usize,
    kind: PatchKind,
    cells: &[CellIndex],
    naive_rows: usize,
    metrics: MetricSet,
) -> (Vec<CellResult>, Vec<CellResult>) {
    both_rows(setup, pair, kind, cells, 7, naive_rows, metrics)
}

fn both_with_rows(
    setup: &Setup,
    pair: usize,
    kind: PatchKind,
    cells: &[CellIndex],
    fast_rows: usize,
    metrics: MetricSet,
) -> (Vec<CellResult>, Vec<CellResult>) {
    both_rows(setup, pair, kind, cells, fast_rows, 64, metrics)
}

fn both_rows(
    setup: &Setup,
    pair: usize,
    kind: PatchKind,
    cells: &[CellIndex],
    fast_rows: usize,
    naive_rows: usize,
    metrics: MetricSet,
) -> (Vec<CellResult>, Vec<CellResult>) {
    let plan = &setup.plans[pair];
    let model = &setup.model;
    let (_, clean_cache) = model
        .run_with_cache(
            std::slice::from_ref(&plan.clean_tokens),
            CacheFilter::only(hook_points(&[kind], model.dims().n_layers)),
        )
        .unwrap();
    let map = plan.map.as_ref().unwrap();
    let pair = PairSweep {
        corrupted_tokens: &plan.corrupted_tokens,
        clean_cache: &clean_cache,
        map,
        answers: plan.answers.unwrap(),
        baseline: plan.baseline().unwrap(),
        clean_log_probs: plan.clean_log_probs.as_ref().unwrap(),
        metrics,
    };
    let corrupted = corrupted_run(model, &plan.corrupted_tokens, &[kind]).unwrap();
    let fast = sweep_fast(
        model,
        &pair,
        &corrupted,
        kind,
        cells,
        fast_rows,
        &mut |_| {},
    )
    .unwrap();
    let naive = sweep(model, &pair, kind, cells, naive_rows, &mut |_| {}).unwrap();
    (fast, naive)
}

fn assert_agree(fast: &[CellResult], naive: &[CellResult], what: &str) {
    assert_eq!(fast.len(), naive.len());
    for (f, n) in fast.iter().zip(naive) {
        assert_eq!(f.index, n.index);
        let (a, b) = (f.metrics, n.metrics);
        for (name, x, y) in [
            ("logit_diff", a.logit_diff, b.logit_diff),
            (
                "normalized",
                a.normalized_logit_diff,
                b.normalized_logit_diff,
            ),
            (
                "prob_correct",
                a.prob_correct.unwrap_or(0.0),
                b.prob_correct.unwrap_or(0.0),
            ),
            ("kl_div", a.kl_div.unwrap_or(0.0), b.kl_div.unwrap_or(0.0)),
        ] {
            assert!(
                (x - y).abs() < 1e-4,
                "{what} {:?} {name}: fast {x} vs naive {y}",
                f.index
            );
        }
    }
}

fn kind_strategy() -> impl Strategy<Value = PatchKind> {
    proptest::sample::select(PatchKind::ALL.to_vec())
}

fn check_random(setup: &Setup, pair: usize, kind: PatchKind, picks: &[usize]) {
    let plan = &setup.plans[pair];
    let aligned = plan.map.as_ref().unwrap().is_identity();
    if kind == PatchKind::HeadPattern && !aligned {
        return; // not defined between prompts of different lengths
    }
    let positions = plan.map.as_ref().unwrap().patched_positions();
    let all = cells_of(kind, setup.model.dims(), &positions);
    let cells: Vec<CellIndex> = picks.iter().map(|i| all[i % all.len()]).collect();
    let (fast, naive) = both(setup, pair, kind, &cells, 5);
    assert_agree(&fast, &naive, &format!("{} {kind}", plan.name));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn fast_equals_naive_on_gpt2(kind in kind_strategy(), pair in 0usize..4, picks in proptest::collection::vec(any::<usize>(), 1..24)) {
        check_random(gpt2(), pair, kind, &picks);
    }

    #[test]
    fn fast_equals_naive_on_llama(kind in kind_strategy(), pair in 0usize..4, picks in proptest::collection::vec(any::<usize>(), 1..24)) {
        check_random(llama(), pair, kind, &picks);
    }
}

#[test]
fn every_kind_agrees_on_every_cell() {
    for setup in [gpt2(), llama()] {
        for (pair, plan) in setup.plans.iter().enumerate() {
            for kind in PatchKind::ALL {
                let map = plan.map.as_ref().unwrap();
                if kind == PatchKind::HeadPattern && !map.is_identity() {
                    continue;
                }
                let cells = cells_of(kind, setup.model.dims(), &map.patched_positions());
                let (fast, naive) = both(setup, pair, kind, &cells, 64);
                assert_agree(&fast, &naive, &format!("{} {kind}", plan.name));
            }
        }
    }
}

#[test]
fn no_op_cells_are_exactly_the_naive_result() {
    // Positions 0 and 1 (BOS, "The") are shared by clean and corrupted: patching them
    // changes nothing, and the fast path skips them.
    let setup = gpt2();
    let cells: Vec<CellIndex> = (0..2)
        .flat_map(|layer| {
            (0..2).map(move |p| CellIndex {
                layer,
                head: None,
                position: Some(p),
            })
        })
        .collect();
    for kind in [PatchKind::ResidPre, PatchKind::AttnOut, PatchKind::MlpOut] {
        let (fast, naive) = both(setup, 0, kind, &cells, 1);
        for (f, n) in fast.iter().zip(&naive) {
            assert_eq!(f.metrics, n.metrics, "{kind} {:?}", f.index);
            assert_eq!(f.metrics.normalized_logit_diff, 0.0);
        }
    }
}

#[test]
fn logit_diff_only_metrics_agree_and_leave_the_distribution_empty() {
    let setup = gpt2();
    let plan = &setup.plans[0];
    for kind in [PatchKind::ResidPre, PatchKind::HeadOutByPos] {
        let cells = cells_of(
            kind,
            setup.model.dims(),
            &plan.map.as_ref().unwrap().patched_positions(),
        );
        let (fast, naive) = both_with(setup, 0, kind, &cells, 64, MetricSet::LogitDiff);
        let (full, _) = both(setup, 0, kind, &cells, 64);
        for ((f, n), a) in fast.iter().zip(&naive).zip(&full) {
            assert!(
                (f.metrics.normalized_logit_diff - a.metrics.normalized_logit_diff).abs() < 1e-4
            );
            assert!((n.metrics.logit_diff - a.metrics.logit_diff).abs() < 1e-4);
            assert_eq!((f.metrics.prob_correct, f.metrics.kl_div), (None, None));
            assert_eq!((n.metrics.prob_correct, n.metrics.kl_div), (None, None));
        }
    }
}

#[test]
fn unread_last_layer_cells_are_exactly_the_naive_result() {
    // In the last layer, what a non-final position writes after attention never
    // reaches the final position: the fast path answers these cells without a pass.
    let setup = gpt2();
    let n_pos = setup.plans[0].corrupted_tokens.len();
    let last = setup.model.dims().n_layers - 1;
    let cells: Vec<CellIndex> = (2..n_pos - 1)
        .map(|p| CellIndex {
            layer: last,
            head: None,
            position: Some(p),
        })
        .collect();
    for kind in [
        PatchKind::AttnOut,
        PatchKind::MlpOut,
        PatchKind::ResidMid,
        PatchKind::ResidPost,
    ] {
        let (fast, naive) = both(setup, 0, kind, &cells, 1);
        for (f, n) in fast.iter().zip(&naive) {
            assert_eq!(f.metrics, n.metrics, "{kind} {:?}", f.index);
        }
    }
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
        std::fs::copy(fixtures().join("tiny-gpt2/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        let dev = Device::Cpu;
        let randn = |shape: &[usize]| Tensor::randn(0f32, 0.3, shape, &dev).unwrap();
        let mut w = std::collections::HashMap::new();
        w.insert("wte.weight".to_string(), randn(&[vocab, d]));
        w.insert("wpe.weight".to_string(), randn(&[ctx, d]));
        w.insert("ln_f.weight".to_string(), Tensor::ones(d, DType::F32, &dev).unwrap());
        w.insert("ln_f.bias".to_string(), Tensor::zeros(d, DType::F32, &dev).unwrap());
        for l in 0..layers {
            for ln in ["ln_1", "ln_2"] {
                w.insert(format!("h.{l}.{ln}.weight"), Tensor::ones(d, DType::F32, &dev).unwrap());
                w.insert(format!("h.{l}.{ln}.bias"), randn(&[d]));
            }
            for (name, d_in, d_out) in [("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, 4 * d), ("mlp.c_proj", 4 * d, d)] {
                w.insert(format!("h.{l}.{name}.weight"), randn(&[d_in, d_out]));
                w.insert(format!("h.{l}.{name}.bias"), randn(&[d_out]));
            }
        }
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
        let toml = format!(
            "[experiment]\nname = \"deep\"\n[model]\npath = {:?}\n[validate]\nenabled = false\n[[pairs]]\nconcept = \"c\"\nclean = \"The Colosseum is in the city of\"\ncorrupted = \"The Eiffel Tower is in the city of\"\ncorrect = \" Rome\"\nincorrect = \" Paris\"\n",
            dir.display().to_string()
        );
        let experiment = Experiment::parse(&toml, &dir.join("deep.toml")).unwrap();
        let model = HookedTransformer::from_dir(&dir).unwrap();
        let plans = vec![validate_pair(&model, &experiment, 0).unwrap()];
        Setup { model, plans }
    })
}

#[test]
fn every_kind_agrees_on_a_deeper_model() {
    let setup = deep_random_gpt2();
    let plan = &setup.plans[0];
    let positions = plan.map.as_ref().unwrap().patched_positions();
    for kind in PatchKind::ALL {
        let cells = cells_of(kind, setup.model.dims(), &positions);
        for metrics in [MetricSet::All, MetricSet::LogitDiff] {
            // Few rows per batch too, so batches split inside start groups.
            for fast_rows in [7, 256] {
                let (fast, naive) = both_with_rows(setup, 0, kind, &cells, fast_rows, metrics);
                assert_agree(
                    &fast,
                    &naive,
                    &format!("deep {kind} {metrics:?} rows {fast_rows}"),
                );
            }
        }
    }
}
