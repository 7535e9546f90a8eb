//! GGUF loading, offline: the tiny Llama fixture written as llama.cpp's converter writes
//! it (f32, tensors renamed, q/k rows permuted for interleaved rotary, tokenizer in the
//! metadata) must reproduce the TransformerLens golden values of the safetensors model.

use crate::common;
use crate::tiny_gguf;

use std::path::PathBuf;

use actpatch_model::{HookedTransformer, ModelError};
use common::golden_checks as checks;
use tiny_gguf::MetadataValue as Value;
use tiny_gguf::{cleanup, set, write_fixture_gguf, TINY_LLAMA};

/// The tiny Llama as a GGUF file; `edit` may change the metadata before writing.
fn write_tiny_gguf(tag: &str, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> PathBuf {
    write_fixture_gguf(&TINY_LLAMA, tag, edit)
}

#[test]
fn tiny_llama_from_gguf_matches_the_golden_values() {
    let path = write_tiny_gguf("golden", |_| {});
    let model = HookedTransformer::from_dir(&path).unwrap();
    assert_eq!(model.dims().n_kv_heads, 2);
    assert_eq!(model.files().gguf(), Some(path.as_path()));
    checks::tokens_with_bos_match_transformer_lens(&model, "tiny-llama");
    checks::last_position_logits_match(&model, "tiny-llama");
    checks::logit_differences_match(&model, "tiny-llama");
    checks::every_cached_activation_matches(&model, "tiny-llama", 1 + 2 * 20 + 2);
    cleanup(&path);
}

fn load_err(tag: &str, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> ModelError {
    let path = write_tiny_gguf(tag, edit);
    let err = HookedTransformer::from_dir(&path)
        .err()
        .expect("loading should fail");
    cleanup(&path);
    err
}

#[test]
fn unsupported_gguf_architecture_names_it_and_the_supported_ones() {
    let err = load_err("arch", |m| {
        set(m, "general.architecture", Value::String("falcon".into()))
    });
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{msg}"
    );
    assert!(msg.contains("falcon") && msg.contains("llama"), "{msg}");
}

#[test]
fn missing_metadata_names_the_key() {
    let err = load_err("key", |m| m.retain(|(k, _)| k != "llama.block_count")).to_string();
    assert!(err.contains("llama.block_count"), "{err}");
}

#[test]
fn sentencepiece_tokenizer_is_refused_by_name() {
    let err = load_err("spm", |m| {
        set(m, "tokenizer.ggml.model", Value::String("llama".into()))
    })
    .to_string();
    assert!(
        err.contains("tokenizer.ggml.model `llama`") && err.contains("gpt2"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("actpatch-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.gguf");
    std::fs::write(&path, b"not a gguf file at all").unwrap();
    let err = HookedTransformer::from_dir(&path)
        .err()
        .expect("loading should fail");
    assert!(matches!(err, ModelError::Gguf { .. }), "{err}");
    assert!(err.to_string().contains("broken.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
