//! The tokenizer read from SmolLM2's GGUF metadata against the `tokenizer.json` that
//! Hugging Face transformers 4.49 converted from the same file
//! (`tests/fixtures/tiny-llama/tokenizer.json`).
//!
//! Needs the GGUF file; run with `-- --ignored` (path as in `real_smollm2.rs`).

use crate::common;

use actpatch_model::{Tokenizer, TokenizerFiles};
use common::fixture;
use common::samples::samples;

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (or ACTPATCH_SMOLLM2_GGUF)"]
fn gguf_tokenizer_equals_the_transformers_conversion() {
    let gguf = Tokenizer::load(&TokenizerFiles::Gguf(common::gguf_path()), None).unwrap();
    let json = Tokenizer::load(
        &TokenizerFiles::Json(fixture("tiny-llama").join("tokenizer.json")),
        Some(1),
    )
    .unwrap();
    assert_eq!(gguf.bos_id(), Some(1));
    assert_eq!(gguf.vocab_size(), json.vocab_size());
    let samples = samples();
    assert!(samples.len() >= 300, "{} samples", samples.len());
    let mut differ = Vec::new();
    for text in &samples {
        let (a, b) = (
            gguf.encode(text, true).unwrap(),
            json.encode(text, true).unwrap(),
        );
        if a != b {
            differ.push(format!(
                "{text:?}: gguf {:?} vs json {:?}",
                gguf.str_tokens(&a),
                json.str_tokens(&b)
            ));
        } else {
            assert_eq!(gguf.str_tokens(&a), json.str_tokens(&b), "{text:?}");
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        samples.len(),
        differ.join("\n")
    );
}
