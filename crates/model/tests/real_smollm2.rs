//! SmolLM2-135M-Instruct from its Q4_1 GGUF file against Hugging Face transformers 4.49
//! (the same file loaded with `gguf_file=`, dequantized to f32, `<|im_start|>` first).
//!
//! Needs the file (see README); run with
//! `cargo test -p actpatch-model --test real_smollm2 -- --ignored`. The path is
//! `ACTPATCH_SMOLLM2_GGUF`, by default `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.

mod common;

use actpatch_model::HookedTransformer;

/// (clean, corrupted, correct, incorrect, clean logit diff, corrupted logit diff)
const BASELINES: [(&str, &str, &str, &str, f64, f64); 5] = [
    (
        "The Colosseum is in",
        "The Eiffel Tower is in",
        " Rome",
        " Paris",
        3.648,
        -2.418,
    ),
    (
        "The capital of France is",
        "The capital of Italy is",
        " Paris",
        " Rome",
        6.213,
        -6.601,
    ),
    (
        "The nurse said that",
        "The mechanic said that",
        " she",
        " he",
        1.505,
        0.648,
    ),
    (
        "The keys to the cabinet",
        "The key to the cabinet",
        " are",
        " is",
        1.190,
        -3.736,
    ),
    (
        "Yesterday, I",
        "Tomorrow, I",
        " walked",
        " will",
        -0.319,
        -3.924,
    ),
];

/// The reference values are rounded to 3 decimals.
const TOL: f64 = 0.01;

fn logit_diff(model: &HookedTransformer, prompt: &str, correct: u32, incorrect: u32) -> f64 {
    let tokens = model.to_tokens(prompt, true).unwrap();
    assert_eq!(tokens[0], 1, "BOS is <|im_start|>");
    let logits = common::next_token_logits(model, &tokens);
    (logits[correct as usize] - logits[incorrect as usize]) as f64
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (or ACTPATCH_SMOLLM2_GGUF)"]
fn smollm2_gguf_baselines_match_transformers() {
    let model = HookedTransformer::from_dir(common::gguf_path()).unwrap();
    let dims = model.dims();
    assert_eq!(dims.arch.name(), "llama");
    assert_eq!(
        (dims.n_layers, dims.d_model, dims.n_heads, dims.n_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (dims.d_head, dims.d_mlp, dims.n_ctx, dims.d_vocab),
        (64, 1536, 8192, 49152)
    );
    let mut failures = Vec::new();
    for (clean, corrupted, correct, incorrect, want_clean, want_corrupted) in BASELINES {
        let correct_id = model.to_single_token(correct).unwrap();
        let incorrect_id = model.to_single_token(incorrect).unwrap();
        let got_clean = logit_diff(&model, clean, correct_id, incorrect_id);
        let got_corrupted = logit_diff(&model, corrupted, correct_id, incorrect_id);
        println!("{clean:?} / {corrupted:?}: {got_clean:.4} / {got_corrupted:.4} (want {want_clean} / {want_corrupted})");
        if (got_clean - want_clean).abs() > TOL || (got_corrupted - want_corrupted).abs() > TOL {
            failures.push(format!("{clean:?}: {got_clean:.4} / {got_corrupted:.4}, want {want_clean} / {want_corrupted}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
