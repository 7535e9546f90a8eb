//! The tokenizer read from SmolLM2's GGUF metadata against the `tokenizer.json` that
//! Hugging Face transformers 4.49 converted from the same file
//! (`tests/fixtures/tiny-llama/tokenizer.json`).
//!
//! Needs the GGUF file; run with `-- --ignored` (path as in `real_smollm2.rs`).

mod common;

use actpatch_model::{Tokenizer, TokenizerFiles};
use common::fixture;

/// A few hundred strings: words and punctuation behind every kind of leading
/// whitespace, digits, Unicode, contractions, code, special tokens.
fn samples() -> Vec<String> {
    let bodies = [
        "The Colosseum is in",
        "Paris",
        "hello, world!",
        "don't stop; we'll see. I'M HERE",
        "2024",
        "3.14159 and 1,000,000",
        "a1b2c3 42nd",
        "café naïve résumé",
        "日本語のテキスト",
        "Привет, мир",
        "Ελληνικά",
        "emoji 😀👍🏽 done",
        "e\u{301} vs é",
        "fn main() { println!(\"hi\"); }",
        "x = [1, 2, 3]  # comment",
        "https://example.com/a?b=c&d=e",
        "...!?--—–“quotes”",
        "tab\tseparated\tvalues",
        "<|im_start|>user\nHi<|im_end|>",
        "The key to the cabinet",
        "    indented line",
        "trailing spaces   ",
        "UPPER lower MiXeD",
        "ﬁ ligature ½ ² ℃",
        "\u{a0}non-breaking\u{a0}space",
    ];
    let leads = [
        "", " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "   ", "\u{3000}", "1 ", "  7",
    ];
    let mut out = Vec::new();
    for body in bodies {
        for lead in leads {
            out.push(format!("{lead}{body}"));
        }
        out.push(format!("{body}\n"));
        out.push(format!("{body} {body}"));
    }
    out
}

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
