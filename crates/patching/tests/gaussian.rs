//! Gaussian-noise corruption (ROME's causal tracing) on the tiny fixtures: the noise
//! scale from the embedding matrix against numpy (`tests/fixtures/gen/embedding_std.py`),
//! reproducible draws for a seed, and identities every restored cell must satisfy.

use std::path::PathBuf;

use actpatch_model::HookedTransformer;
use actpatch_patching::gaussian::{embedding_std, GaussianSpec, NoisedPrompt};
use actpatch_patching::PatchKind;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference_std(fixture: &str) -> f64 {
    let text = std::fs::read_to_string(fixtures().join("embedding_std.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[fixture]["std"].as_f64().unwrap()
}

#[test]
fn noise_scale_is_three_embedding_stds() {
    for fixture in ["tiny-gpt2", "tiny-llama"] {
        let model = HookedTransformer::from_dir(fixtures().join(fixture)).unwrap();
        let std = embedding_std(&model).unwrap();
        assert!(
            (std - reference_std(fixture)).abs() < 1e-6,
            "{fixture}: {std}"
        );
    }
}

/// "The capital of France is": BOS The capital of France is → subject " France" at 4.
fn prompt(model: &HookedTransformer, spec: GaussianSpec) -> NoisedPrompt {
    let tokens = model.to_tokens("The capital of France is", true).unwrap();
    let answer = model.to_single_token(" Paris").unwrap();
    let kinds = [
        PatchKind::ResidPre,
        PatchKind::AttnOut,
        PatchKind::MlpOut,
        PatchKind::ResidPost,
    ];
    NoisedPrompt::new(model, &tokens, 4..5, answer, &kinds, spec).unwrap()
}

#[test]
fn draws_are_reproducible_for_a_seed() {
    let model = HookedTransformer::from_dir(fixtures().join("tiny-gpt2")).unwrap();
    let spec = GaussianSpec {
        samples: 5,
        seed: 3,
        ..GaussianSpec::default()
    };
    let (a, b) = (prompt(&model, spec), prompt(&model, spec));
    assert_eq!(a.p_corrupted, b.p_corrupted);
    assert!((a.scale - 3.0 * reference_std("tiny-gpt2")).abs() < 1e-5);
    let other = prompt(&model, GaussianSpec { seed: 4, ..spec });
    assert_ne!(a.p_corrupted, other.p_corrupted);
    assert_ne!(
        a.p_clean, a.p_corrupted,
        "the noise changes the answer's probability"
    );
}

/// Restoring the subject's clean residual stream entering layer 0 undoes all the noise
/// (normalized 1); restoring a position before the subject changes nothing (0: those
/// positions never see the noise); the last layer's output at the final position is
/// all the logits read (1).
#[test]
fn restored_cells_obey_identities() {
    for fixture in ["tiny-gpt2", "tiny-llama"] {
        let model = HookedTransformer::from_dir(fixtures().join(fixture)).unwrap();
        let spec = GaussianSpec {
            samples: 4,
            seed: 1,
            ..GaussianSpec::default()
        };
        let noised = prompt(&model, spec);
        let last_layer = model.dims().n_layers - 1;
        let last = noised.tokens.len() - 1;
        let cells = [
            (PatchKind::ResidPre, 0, 4),
            (PatchKind::ResidPre, 1, 2),
            (PatchKind::MlpOut, 0, 1),
            (PatchKind::ResidPost, last_layer, last),
        ];
        let traced = noised.trace(&model, &cells, 3).unwrap();
        let want = [1.0, 0.0, 0.0, 1.0];
        for (cell, want) in traced.iter().zip(want) {
            assert!(
                (cell.normalized - want).abs() < 1e-4,
                "{fixture} {cell:?}: want {want}"
            );
        }
    }
}

#[test]
fn window_is_centred_and_clipped() {
    let model = HookedTransformer::from_dir(fixtures().join("tiny-gpt2")).unwrap();
    let noised = prompt(
        &model,
        GaussianSpec {
            samples: 1,
            window: 10,
            ..GaussianSpec::default()
        },
    );
    assert_eq!(noised.window(0, 2), 0..2);
    assert_eq!(noised.window(12, 30), 7..17);
    let one = prompt(
        &model,
        GaussianSpec {
            samples: 1,
            ..GaussianSpec::default()
        },
    );
    assert_eq!(one.window(5, 30), 5..6);
}
