//! Every bad input a user can give the model crate gets a message naming it.

use crate::common;

use std::collections::HashMap;

use actpatch_hooks::{HookPoint, HookSpace};
use actpatch_model::{HookedTransformer, ModelError};
use candle_core::{Device, Tensor};
use common::fixture;

fn model() -> HookedTransformer {
    HookedTransformer::from_dir(fixture("tiny-gpt2")).unwrap()
}

/// A copy of the tiny GPT-2 folder whose weights went through `edit`.
fn edited_copy(tag: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-gpt2").join(file), dir.join(file)).unwrap();
    }
    let mut weights = candle_core::safetensors::load(
        fixture("tiny-gpt2").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    edit(&mut weights);
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn multi_token_answer_lists_its_pieces() {
    let err = model()
        .to_single_token(" Colosseum")
        .unwrap_err()
        .to_string();
    // GPT-2 splits it in four (the golden tokens of "The Colosseum is in" show it).
    assert!(
        err.contains(r#"" Colosseum" is 4 tokens: " Col" | "os" | "se" | "um""#),
        "{err}"
    );
}

#[test]
fn unknown_hook_and_layer_out_of_range() {
    let space = model().hook_space();
    let err = HookPoint::parse_in("blocks.0.hook_resid_middle", &space)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown hook point `blocks.0.hook_resid_middle`")
            && err.contains("blocks.L.hook_resid_mid"),
        "{err}"
    );
    let err = HookPoint::parse_in("blocks.2.hook_resid_pre", &space)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 layers") && err.contains("0..=1"), "{err}");
    assert_eq!(space, HookSpace::gpt2(2));
}

#[test]
fn prompt_longer_than_the_context() {
    let prompt = "word ".repeat(100);
    let err = model().to_tokens(&prompt, true).unwrap_err();
    assert!(
        matches!(err, ModelError::PromptTooLong { n_ctx: 64, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("context of 64 tokens"));
}

#[test]
fn empty_prompt_and_answer() {
    let model = model();
    assert!(model
        .to_tokens("  ", true)
        .unwrap_err()
        .to_string()
        .contains("prompt is empty"));
    assert!(model
        .to_single_token("")
        .unwrap_err()
        .to_string()
        .contains("answer is empty"));
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = edited_copy("missing", |w| {
        w.remove("transformer.h.1.mlp.c_fc.weight");
    });
    let err = HookedTransformer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("transformer.h.1.mlp.c_fc.weight") && err.contains("model.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn wrong_shape_tensor_names_both_shapes() {
    let dir = edited_copy("shape", |w| {
        let bad = Tensor::zeros((32, 95), candle_core::DType::F32, &Device::Cpu).unwrap();
        w.insert("transformer.h.0.attn.c_attn.weight".into(), bad);
    });
    let err = HookedTransformer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("transformer.h.0.attn.c_attn.weight")
            && err.contains("[32, 95]")
            && err.contains("[32, 96]"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn truncated_weights_file_is_an_error() {
    let dir = edited_copy("trunc", |_| {});
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = HookedTransformer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = edited_copy("arch", |_| {});
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}"#,
    )
    .unwrap();
    let err = HookedTransformer::from_dir(&dir).err().unwrap().to_string();
    assert!(err.contains("`mamba`") && err.contains("gpt2"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn vocab_and_merges_tokenize_like_tokenizer_json() {
    let dir = std::env::temp_dir().join(format!("actpatch-bpe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(fixture("tiny-gpt2").join(file), dir.join(file)).unwrap();
    }
    let fallback = HookedTransformer::from_dir(&dir).unwrap();
    let reference = model();
    for text in [
        "The Colosseum is in",
        "  leading spaces, digits 12345 and punctuation!?",
        "Unicode: café, naïve, 東京, emoji 🙂",
        "<|endoftext|> special token",
    ] {
        assert_eq!(
            fallback.to_tokens(text, true).unwrap(),
            reference.to_tokens(text, true).unwrap(),
            "{text}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
