//! GGUF files of the new Llama-family fixtures, written as llama.cpp's converter writes
//! them (`tests/support/tiny_gguf.rs`): Llama 3 (`general.architecture` llama, rotary
//! scaling as `rope_freqs.weight`, the `llama-bpe` pre-tokenizer), Qwen2.5 (qwen2,
//! q/k/v biases, `qwen2` pre-tokenizer) and Qwen3 (qwen3, q/k norms). Each must give
//! the tokenizer of the fixture's tokenizer.json and the transformers golden values.

use crate::common;
use crate::tiny_gguf;

use actpatch_model::{HookedTransformer, ModelError, Tokenizer, TokenizerFiles};
use candle_core::quantized::gguf_file::Value;
use common::families::check_family;
use common::fixture;
use common::samples::samples;
use tiny_gguf::{cleanup, set, write_fixture_gguf, GgufSpec};

const LLAMA3: GgufSpec = GgufSpec {
    fixture: "tiny-llama3",
    arch: "llama",
    pre: "llama-bpe",
};
const QWEN2: GgufSpec = GgufSpec {
    fixture: "tiny-qwen2",
    arch: "qwen2",
    pre: "qwen2",
};
const QWEN3: GgufSpec = GgufSpec {
    fixture: "tiny-qwen3",
    arch: "qwen3",
    pre: "qwen2",
};

/// The GGUF tokenizer equals tokenizer.json on a few hundred strings (with BOS).
fn tokenizer_matches(spec: &GgufSpec) {
    let path = write_fixture_gguf(spec, "tok", |_| {});
    let gguf = Tokenizer::load(&TokenizerFiles::Gguf(path.clone()), None).unwrap();
    let json = Tokenizer::load(
        &TokenizerFiles::Json(fixture(spec.fixture).join("tokenizer.json")),
        gguf.bos_id(),
    )
    .unwrap();
    assert_eq!(gguf.vocab_size(), json.vocab_size());
    let differ: Vec<String> = samples()
        .iter()
        .filter_map(|text| {
            let (a, b) = (
                gguf.encode(text, true).unwrap(),
                json.encode(text, true).unwrap(),
            );
            (a != b).then(|| {
                format!(
                    "{text:?}: {:?} vs {:?}",
                    gguf.str_tokens(&a),
                    json.str_tokens(&b)
                )
            })
        })
        .collect();
    cleanup(&path);
    assert!(differ.is_empty(), "{} differ: {differ:#?}", differ.len());
}

fn golden_values_match(spec: &GgufSpec) {
    let path = write_fixture_gguf(spec, "golden", |_| {});
    let model = HookedTransformer::from_dir(&path).unwrap();
    assert_eq!(model.dims().arch.name(), "llama");
    let worst = check_family(&model, spec.fixture);
    println!("{} from GGUF: largest deviation {worst:.2e}", spec.fixture);
    cleanup(&path);
}

#[test]
fn llama3_gguf_tokenizer_is_llama_bpe() {
    tokenizer_matches(&LLAMA3);
}

#[test]
fn llama3_gguf_with_rope_freqs_matches_transformers() {
    golden_values_match(&LLAMA3);
}

#[test]
fn qwen_gguf_tokenizer_is_qwen2() {
    tokenizer_matches(&QWEN2);
}

#[test]
fn qwen2_gguf_matches_transformers() {
    golden_values_match(&QWEN2);
}

#[test]
fn qwen3_gguf_matches_transformers() {
    golden_values_match(&QWEN3);
}

#[test]
fn unknown_pre_tokenizer_is_refused_naming_key_value_and_supported() {
    let path = write_fixture_gguf(&QWEN2, "pre", |m| {
        set(
            m,
            "tokenizer.ggml.pre",
            Value::String("deepseek-llm".into()),
        )
    });
    let err = HookedTransformer::from_dir(&path).err().expect("must fail");
    cleanup(&path);
    let msg = err.to_string();
    assert!(matches!(err, ModelError::UnsupportedOption { .. }), "{msg}");
    assert!(
        msg.contains("tokenizer.ggml.pre")
            && msg.contains("deepseek-llm")
            && msg.contains("llama-bpe"),
        "{msg}"
    );
}

#[test]
fn rope_scaling_type_in_metadata_is_refused_naming_the_key() {
    let path = write_fixture_gguf(&LLAMA3, "yarn", |m| {
        m.push((
            "llama.rope.scaling.type".into(),
            Value::String("yarn".into()),
        ))
    });
    let err = HookedTransformer::from_dir(&path).err().expect("must fail");
    cleanup(&path);
    let msg = err.to_string();
    assert!(
        msg.contains("llama.rope.scaling.type") && msg.contains("yarn"),
        "{msg}"
    );
}
