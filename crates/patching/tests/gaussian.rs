//! Gaussian-noise corruption (ROME's causal tracing) on the tiny fixtures: the noise
//! scale from the embedding matrix (against numpy, `tests/fixtures/gen/embedding_std.py`,
//! and against a plain loop here), the draws (reproducible for a seed, zero outside the
//! subject, of standard deviation ν), each cell as the mean over the draws of full
//! forward passes written out here with the window's layers spelled out as ROME's
//! `range(max(0, l - W // 2), min(L, l - (-W // 2)))`, the fast trace against the naive
//! one, and identities.

use std::path::{Path, PathBuf};

use actpatch_hooks::{CacheFilter, Cell, HookPoint, Patch, PatchValue};
use actpatch_model::{HookedTransformer, Readout};
use actpatch_patching::gaussian::{
    embedding_std, window, GaussianSpec, NoiseLevel, NoisedPrompt, TraceCell, TraceIndex,
};
use actpatch_patching::{Direction, Execution, PatchKind};
use candle_core::{DType, Tensor, D};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference_std(fixture: &str) -> f64 {
    let text = std::fs::read_to_string(fixtures().join("embedding_std.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[fixture]["std"].as_f64().unwrap()
}

/// The population standard deviation of `W_E`'s entries by a plain two-pass loop.
fn std_by_loop(model: &HookedTransformer) -> f64 {
    let rows: Vec<Vec<f32>> = model.token_embeddings().to_vec2().unwrap();
    let n = rows.iter().map(Vec::len).sum::<usize>() as f64;
    let mean = rows.iter().flatten().map(|v| *v as f64).sum::<f64>() / n;
    let var = (rows.iter().flatten())
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var.sqrt()
}

/// A 6-layer GPT-2: the tiny fixture's two blocks repeated (layer l = block l % 2), so
/// that windows of a few layers differ from the whole model.
fn deep_gpt2() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-deep-gpt2-{}", std::process::id()));
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("tiny-gpt2");
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["n_layer"] = 6.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut deep = std::collections::HashMap::new();
    for (name, tensor) in tensors {
        match name.strip_prefix("transformer.h.") {
            None => {
                deep.insert(name, tensor);
            }
            Some(rest) => {
                let (layer, site) = rest.split_once('.').unwrap();
                let layer: usize = layer.parse().unwrap();
                for l in (0..6).filter(|l| l % 2 == layer) {
                    deep.insert(format!("transformer.h.{l}.{site}"), tensor.clone());
                }
            }
        }
    }
    let partial = dir.join("model.safetensors.tmp");
    candle_core::safetensors::save(&deep, &partial).unwrap();
    std::fs::rename(partial, dir.join("model.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> HookedTransformer {
    HookedTransformer::from_dir(dir).unwrap()
}

/// "The capital of France is" → " Paris", BOS at 0; the subject is positions `subject`.
fn noised(
    model: &HookedTransformer,
    subject: std::ops::Range<usize>,
    spec: GaussianSpec,
) -> NoisedPrompt {
    let tokens = model.to_tokens("The capital of France is", true).unwrap();
    let answer = model.to_single_token(" Paris").unwrap();
    NoisedPrompt::new(model, &tokens, subject, answer, &GaussianSpec::KINDS, spec).unwrap()
}

fn spec(samples: usize, seed: u64, window: usize) -> GaussianSpec {
    GaussianSpec {
        samples,
        seed,
        window,
        ..GaussianSpec::default()
    }
}

fn trace(
    model: &HookedTransformer,
    prompt: &NoisedPrompt,
    (direction, execution): (Direction, Execution),
    cells: &[TraceIndex],
) -> Vec<TraceCell> {
    prompt
        .trace(model, (direction, execution), cells, 7, &mut |_| {})
        .unwrap()
}

/// Every cell of every kind the trace supports, at every position.
fn every_cell(model: &HookedTransformer, n_pos: usize) -> Vec<TraceIndex> {
    let mut cells = Vec::new();
    for kind in GaussianSpec::KINDS {
        for layer in 0..model.dims().n_layers {
            cells.extend((0..n_pos).map(|position| TraceIndex {
                kind,
                layer,
                position,
            }));
        }
    }
    cells
}

#[test]
fn noise_scale_is_three_embedding_stds() {
    for fixture in ["tiny-gpt2", "tiny-llama"] {
        let model = load(&fixtures().join(fixture));
        let std = embedding_std(&model).unwrap();
        assert!(
            (std - reference_std(fixture)).abs() < 1e-6,
            "{fixture}: {std}"
        );
        assert!((std - std_by_loop(&model)).abs() < 1e-9, "{fixture}: {std}");
        let prompt = noised(&model, 3..5, spec(2, 0, 1));
        assert!((prompt.scale - 3.0 * std_by_loop(&model)).abs() < 1e-9);
        let given = noised(
            &model,
            3..5,
            GaussianSpec {
                noise: NoiseLevel::Absolute(0.25),
                ..spec(2, 0, 1)
            },
        );
        assert_eq!(given.scale, 0.25);
    }
}

/// The draws: zero outside the subject, N(0, ν²) inside it (the sample standard
/// deviation of 50 × 2 × 32 = 3,200 entries within 5 % of ν), reproducible for a seed.
#[test]
fn draws_are_seeded_and_only_on_the_subject() {
    let model = load(&fixtures().join("tiny-gpt2"));
    let prompt = noised(&model, 3..5, spec(50, 3, 1));
    let (_, cache) = model
        .run_with_cache(
            std::slice::from_ref(&prompt.tokens),
            CacheFilter::only([HookPoint::Embed]),
        )
        .unwrap();
    let clean = cache.get(HookPoint::Embed).unwrap(); // [1, pos, d_model]
    let noise = prompt.noised_embeddings().broadcast_sub(clean).unwrap(); // [50, pos, d_model]
    let noise: Vec<Vec<Vec<f32>>> = noise.to_vec3().unwrap();
    let mut inside = Vec::new();
    for draw in &noise {
        for (p, row) in draw.iter().enumerate() {
            match (3..5).contains(&p) {
                true => inside.extend(row.iter().map(|v| *v as f64)),
                false => assert!(row.iter().all(|v| *v == 0.0), "noise at position {p}"),
            }
        }
    }
    let n = inside.len() as f64;
    let mean = inside.iter().sum::<f64>() / n;
    let sd = (inside.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!(
        (sd / prompt.scale - 1.0).abs() < 0.05,
        "sd {sd} vs ν {}",
        prompt.scale
    );
    assert!(mean.abs() < 0.1 * prompt.scale, "mean {mean}");

    let again = noised(&model, 3..5, spec(50, 3, 1));
    assert_eq!(prompt.corrupted, again.corrupted);
    let other = noised(&model, 3..5, spec(50, 4, 1));
    assert_ne!(prompt.corrupted, other.corrupted);
    assert_ne!(prompt.clean.value, prompt.corrupted.value);
}

/// p(answer) of one row's next-token logits `[1, d_vocab]`.
fn prob(logits: &Tensor, answer: u32) -> f64 {
    let logits = logits.to_dtype(DType::F64).unwrap().squeeze(0).unwrap();
    let probs = candle_nn_softmax(&logits);
    probs[answer as usize]
}

fn candle_nn_softmax(logits: &Tensor) -> Vec<f64> {
    let max = logits.max_keepdim(D::Minus1).unwrap();
    let exp = logits.broadcast_sub(&max).unwrap().exp().unwrap();
    let sum = exp.sum_all().unwrap().to_scalar::<f64>().unwrap();
    exp.to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|e| e / sum)
        .collect()
}

/// A cell's value written out: for each draw, one full pass with that draw's noised
/// embeddings and the clean activation restored at `position` in every layer of ROME's
/// window; the mean of p(answer) over the draws.
fn by_hand(model: &HookedTransformer, prompt: &NoisedPrompt, cell: TraceIndex, w: usize) -> f64 {
    let n_layers = model.dims().n_layers as i64;
    let l = cell.layer as i64;
    let w = w as i64;
    // ROME: range(max(0, l - w // 2), min(L, l - (-w // 2))); Python's // floors.
    let layers = (l - w.div_euclid(2)).max(0)..(l - (-w).div_euclid(2)).min(n_layers);
    let points: Vec<HookPoint> = (layers.clone())
        .map(|layer| HookPoint::block(layer as usize, cell.kind.site()))
        .collect();
    let (_, clean) = model
        .run_with_cache(
            std::slice::from_ref(&prompt.tokens),
            CacheFilter::only(points.clone()),
        )
        .unwrap();
    let samples = prompt.samples();
    let mut sum = 0.0;
    for draw in 0..samples {
        let embed = prompt.noised_embeddings().narrow(0, draw, 1).unwrap();
        let mut patches = vec![Patch::replace(HookPoint::Embed, embed)];
        for point in &points {
            let at = Cell {
                row: 0,
                position: Some(cell.position),
                head: None,
                key: None,
            };
            let source = clean.get(*point).unwrap().clone();
            patches.push(Patch::at_cells(
                *point,
                PatchValue::Replace(source),
                vec![at],
            ));
        }
        let logits = model
            .run_with_patches(
                std::slice::from_ref(&prompt.tokens),
                &patches,
                Readout::LastPosition,
            )
            .unwrap();
        sum += prob(&logits, prompt.answer);
    }
    sum / samples as f64
}

/// Each cell is the mean over the draws of its restored runs, restoring ROME's window
/// for `attn_out` and `mlp_out` (and one layer for the residual stream), computed by
/// the naive and the fast trace alike.
#[test]
fn cells_are_the_mean_of_restored_runs_over_rome_windows() {
    let model = load(&deep_gpt2());
    assert_eq!(model.dims().n_layers, 6);
    for w in [1, 3, 4] {
        let prompt = noised(&model, 3..5, spec(3, 7, w));
        let cells: Vec<TraceIndex> = [
            (PatchKind::MlpOut, 0, 4),
            (PatchKind::MlpOut, 2, 4),
            (PatchKind::AttnOut, 3, 5),
            (PatchKind::AttnOut, 5, 3),
            (PatchKind::ResidPre, 2, 4),
            (PatchKind::MlpOut, 4, 5),
        ]
        .into_iter()
        .map(|(kind, layer, position)| TraceIndex {
            kind,
            layer,
            position,
        })
        .collect();
        for execution in [Execution::Naive, Execution::Fast] {
            let traced = trace(&model, &prompt, (Direction::Denoising, execution), &cells);
            for cell in &traced {
                let kind_window = prompt.spec.window_of(cell.index.kind);
                let want = by_hand(&model, &prompt, cell.index, kind_window);
                assert!(
                    (cell.score.prob - want).abs() < 1e-5,
                    "W={w} {execution:?} {:?}: {} vs {want}",
                    cell.index,
                    cell.score.prob
                );
                let normalized =
                    (want - prompt.corrupted.prob) / (prompt.clean.prob - prompt.corrupted.prob);
                assert!((cell.normalized - normalized).abs() < 1e-4);
            }
        }
    }
    // The window itself: W = 10 at layer 12 of 30 is layers 7..17; clipped at the ends.
    assert_eq!(window(12, 10, 30), 7..17);
    assert_eq!(window(0, 10, 30), 0..5);
    assert_eq!(window(28, 10, 30), 23..30);
    assert_eq!(window(3, 3, 6), 2..5);
    assert_eq!(window(5, 1, 30), 5..6);
}

fn assert_close(fast: &[TraceCell], naive: &[TraceCell], what: &str) {
    assert_eq!(fast.len(), naive.len());
    for (f, n) in fast.iter().zip(naive) {
        assert_eq!(f.index, n.index);
        let err = (f.score.prob - n.score.prob).abs() + (f.score.kl - n.score.kl).abs();
        assert!(
            err < 1e-5,
            "{what} {:?}: fast {:?} naive {:?}",
            f.index,
            f.score,
            n.score
        );
    }
}

/// The fast trace gives the naive trace's numbers on every cell of every kind, in both
/// directions, with and without a window, on GPT-2 and Llama.
#[test]
fn fast_trace_equals_naive_trace() {
    for (dir, w) in [
        (fixtures().join("tiny-gpt2"), 1),
        (fixtures().join("tiny-llama"), 1),
        (deep_gpt2(), 3),
    ] {
        let model = load(&dir);
        let prompt = noised(&model, 2..4, spec(3, 5, w));
        let cells = every_cell(&model, prompt.tokens.len());
        for direction in Direction::BOTH {
            let fast = trace(&model, &prompt, (direction, Execution::Fast), &cells);
            let naive = trace(&model, &prompt, (direction, Execution::Naive), &cells);
            assert_close(
                &fast,
                &naive,
                &format!("{} W={w} {direction}", dir.display()),
            );
        }
    }
}

/// Restoring the subject's clean residual stream entering layer 0 undoes all the noise
/// (normalized 1; noising it in gives the noised run, 0); a position before the subject
/// never sees the noise (0 denoising, 1 noising); the last layer's output at the final
/// position is all the logits read (1 denoising, 0 noising).
#[test]
fn restored_cells_obey_identities() {
    for fixture in ["tiny-gpt2", "tiny-llama"] {
        let model = load(&fixtures().join(fixture));
        let prompt = noised(&model, 4..5, spec(4, 1, 1));
        let last_layer = model.dims().n_layers - 1;
        let last = prompt.tokens.len() - 1;
        let cells: Vec<TraceIndex> = [
            (PatchKind::ResidPre, 0, 4),
            (PatchKind::ResidPre, 1, 2),
            (PatchKind::MlpOut, 0, 1),
            (PatchKind::ResidPost, last_layer, last),
        ]
        .into_iter()
        .map(|(kind, layer, position)| TraceIndex {
            kind,
            layer,
            position,
        })
        .collect();
        for (direction, want) in [
            (Direction::Denoising, [1.0, 0.0, 0.0, 1.0]),
            (Direction::Noising, [0.0, 1.0, 1.0, 0.0]),
        ] {
            for execution in [Execution::Naive, Execution::Fast] {
                let traced = trace(&model, &prompt, (direction, execution), &cells);
                for (cell, want) in traced.iter().zip(want) {
                    assert!(
                        (cell.normalized - want).abs() < 1e-4,
                        "{fixture} {direction} {execution:?} {cell:?}: want {want}"
                    );
                }
            }
        }
    }
}

/// With ν = 0 the "noised" runs are the clean run: every restored cell, in both
/// directions, reproduces the clean run's p(answer) and has no KL divergence from it.
#[test]
fn zero_noise_changes_nothing() {
    let model = load(&deep_gpt2());
    let zero = GaussianSpec {
        noise: NoiseLevel::Absolute(0.0),
        ..spec(2, 0, 3)
    };
    let prompt = noised(&model, 2..4, zero);
    assert!((prompt.corrupted.prob - prompt.clean.prob).abs() < 1e-6);
    let cells = every_cell(&model, prompt.tokens.len());
    for direction in Direction::BOTH {
        for execution in [Execution::Naive, Execution::Fast] {
            for cell in trace(&model, &prompt, (direction, execution), &cells) {
                assert!(
                    (cell.score.prob - prompt.clean.prob).abs() < 1e-5 && cell.score.kl < 1e-6,
                    "{direction} {execution:?} {cell:?}"
                );
            }
        }
    }
}
