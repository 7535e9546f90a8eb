//! Qwen2.5-Coder-0.5B-Instruct from its GGUF file (`just fetch-qwen25`) against Hugging
//! Face transformers 5.24 on the same file (`gguf_file=`, dequantized to f32,
//! `<|endoftext|>` first): token ids, the clean and corrupted logit differences of four
//! pairs, and a resid_pre denoising grid (`tests/fixtures/qwen2.5/reference.json`, made
//! by `tests/fixtures/gen/qwen25_reference.py`). Also the real Llama 3 and Qwen2
//! tokenizers (llama.cpp's vocab-only GGUF files, `just fetch-vocabs`) against the ids
//! Hugging Face's own tokenizers give llama.cpp's test strings.
//!
//! Run with `cargo test -p actpatch-model --test real_qwen25 -- --ignored`. Paths:
//! `ACTPATCH_QWEN25_GGUF` (default `<repo>/models/Qwen2.5-Coder-0.5B-Instruct.gguf`),
//! `ACTPATCH_VOCAB_DIR` (default `<repo>/models/vocab`).

use crate::common;

use std::path::PathBuf;

use actpatch_hooks::{CacheFilter, HookPoint, Patch};
use actpatch_model::{HookedTransformer, Readout, Tokenizer, TokenizerFiles};
use common::{fixture, ids};
use serde_json::Value;

fn repo_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(default)
    })
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("qwen2.5").join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// f32 through 24 layers, with the same dequantized weights on both sides.
const TOL: f64 = 2e-3;

#[test]
#[ignore = "needs models/Qwen2.5-Coder-0.5B-Instruct.gguf (just fetch-qwen25) or ACTPATCH_QWEN25_GGUF"]
fn qwen25_gguf_matches_transformers() {
    let model = HookedTransformer::from_dir(repo_path(
        "ACTPATCH_QWEN25_GGUF",
        "models/Qwen2.5-Coder-0.5B-Instruct.gguf",
    ))
    .unwrap();
    let dims = model.dims();
    assert_eq!(
        (
            dims.n_layers,
            dims.d_model,
            dims.n_heads,
            dims.n_kv_heads,
            dims.d_head
        ),
        (24, 896, 14, 2, 64)
    );
    assert_eq!((dims.d_mlp, dims.d_vocab), (4864, 151936));
    let reference = reference();
    assert_eq!(
        model.tokenizer().bos_id(),
        reference["bos_id"].as_u64().map(|b| b as u32)
    );
    let mut worst = 0.0f64;
    for (name, pair) in reference["pairs"].as_object().unwrap() {
        let text = |k: &str| pair[k].as_str().unwrap();
        let clean = model.to_tokens(text("clean"), true).unwrap();
        let corrupted = model.to_tokens(text("corrupted"), true).unwrap();
        assert_eq!(clean, ids(&pair["clean_tokens"]), "{name}");
        assert_eq!(corrupted, ids(&pair["corrupted_tokens"]), "{name}");
        let correct = model.to_single_token(text("correct")).unwrap() as usize;
        let incorrect = model.to_single_token(text("incorrect")).unwrap() as usize;
        let ld = |rows: &[Vec<u32>], patches: &[Patch]| -> f64 {
            let logits: Vec<f32> = model
                .run_with_patches(rows, patches, Readout::LastPosition)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            (logits[correct] - logits[incorrect]) as f64
        };
        let (c, x) = (
            ld(std::slice::from_ref(&clean), &[]),
            ld(std::slice::from_ref(&corrupted), &[]),
        );
        let (want_c, want_x) = (
            pair["clean_logit_diff"].as_f64().unwrap(),
            pair["corrupted_logit_diff"].as_f64().unwrap(),
        );
        println!("{name}: {c:.4} / {x:.4} (transformers {want_c:.4} / {want_x:.4})");
        worst = worst.max((c - want_c).abs()).max((x - want_x).abs());
        let Some(grid) = pair["grids"].get("resid_pre") else {
            continue;
        };
        let (_, cache) = model
            .run_with_cache(std::slice::from_ref(&clean), CacheFilter::All)
            .unwrap();
        for (layer, row) in grid.as_array().unwrap().iter().enumerate() {
            let point = HookPoint::resid_pre(layer);
            let source = cache.get(point).unwrap().clone();
            for (pos, want) in row.as_array().unwrap().iter().enumerate() {
                let patch = Patch::replace(point, source.clone()).positions([pos]);
                let got =
                    (ld(std::slice::from_ref(&corrupted), &[patch]) - want_x) / (want_c - want_x);
                let dev = (got - want.as_f64().unwrap()).abs();
                assert!(
                    dev < TOL,
                    "{name} resid_pre L{layer} p{pos}: {got} vs {want}"
                );
                worst = worst.max(dev);
            }
        }
    }
    println!("largest deviation from transformers: {worst:.2e}");
    assert!(worst < TOL, "{worst}");
}

/// llama.cpp's `.inp` strings and the `.out` ids of the model's own Hugging Face tokenizer.
fn llama_cpp_cases(gguf: &std::path::Path) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", gguf.display())).unwrap();
    let inputs = read("inp");
    let inputs = inputs.trim_end_matches("\n__ggml_vocab_test__\n");
    let outputs = read("out");
    inputs
        .split("\n__ggml_vocab_test__\n")
        .zip(outputs.split('\n'))
        .map(|(text, out)| {
            let ids = out.split_whitespace().map(|i| i.parse().unwrap()).collect();
            (text.to_string(), ids)
        })
        .collect()
}

fn real_vocab_matches(name: &str) {
    let path =
        repo_path("ACTPATCH_VOCAB_DIR", "models/vocab").join(format!("ggml-vocab-{name}.gguf"));
    let tokenizer = Tokenizer::load(&TokenizerFiles::Gguf(path.clone()), None).unwrap();
    let cases = llama_cpp_cases(&path);
    assert!(cases.len() > 40, "{} cases", cases.len());
    let differ: Vec<String> = cases
        .iter()
        .filter_map(|(text, want)| {
            let got = tokenizer.encode(text, false).unwrap();
            (&got != want).then(|| format!("{text:?}: {got:?} vs {want:?}"))
        })
        .collect();
    assert!(differ.is_empty(), "{name}: {differ:#?}");
}

#[test]
#[ignore = "needs models/vocab (just fetch-vocabs) or ACTPATCH_VOCAB_DIR"]
fn llama3_tokenizer_from_gguf_gives_hugging_face_ids() {
    real_vocab_matches("llama-bpe");
}

#[test]
#[ignore = "needs models/vocab (just fetch-vocabs) or ACTPATCH_VOCAB_DIR"]
fn qwen2_tokenizer_from_gguf_gives_hugging_face_ids() {
    real_vocab_matches("qwen2");
}
