//! Which architecture a checkpoint is, and loading it: a Hugging Face folder
//! (`config.json` decides) or a GGUF file (its metadata decides).

use std::path::Path;

use candle_core::Device;

use crate::arch::ArchModel;
use crate::{
    gemma2, gguf, gpt2, llama, neox, Architecture, ModelError, ModelFiles, Result, Tokenizer,
};

/// A Hugging Face checkpoint: `config.json` decides the architecture.
pub(crate) fn load_hf(
    files: &ModelFiles,
    device: &Device,
) -> Result<(Box<dyn ArchModel>, Tokenizer)> {
    let text = std::fs::read_to_string(&files.config).map_err(|source| ModelError::Io {
        path: files.config.clone(),
        source,
    })?;
    let (arch, bos_id) = match detect_architecture(&text, &files.config)? {
        Architecture::Gpt2 => {
            let cfg = gpt2::Gpt2::parse_config(&text, &files.config)?;
            let model = gpt2::Gpt2::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::Llama => {
            let cfg = llama::Llama::parse_config(&text, &files.config)?;
            let model = llama::Llama::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::Gemma2 => {
            let cfg = gemma2::Gemma2::parse_config(&text, &files.config)?;
            let model = gemma2::Gemma2::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
        Architecture::GptNeox => {
            let cfg = neox::Neox::parse_config(&text, &files.config)?;
            let model = neox::Neox::load(&cfg, &files.weights, device)?;
            (Box::new(model) as Box<dyn ArchModel>, cfg.bos_token_id)
        }
    };
    let mut tokenizer = Tokenizer::load(&files.tokenizer, bos_id)?;
    if tokenizer.bos_id().is_none() {
        let bos = tokenizer.token_to_id("<|endoftext|>");
        tokenizer = Tokenizer::load(&files.tokenizer, bos)?;
    }
    Ok((arch, tokenizer))
}

/// A GGUF file: its metadata decides the architecture (the Llama family).
pub(crate) fn load_gguf(path: &Path, device: &Device) -> Result<(Box<dyn ArchModel>, Tokenizer)> {
    let file = gguf::GgufFile::open(path)?;
    let cfg = file.llama_config()?;
    let model = llama::Llama::from_store(&cfg, &file.llama_weights(&cfg, device)?)?;
    Ok((Box::new(model), file.tokenizer()?))
}

fn detect_architecture(config_text: &str, path: &Path) -> Result<Architecture> {
    let value: serde_json::Value =
        serde_json::from_str(config_text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    let class = value
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|v| v.as_str());
    match (model_type, class) {
        (Some("gpt2"), _) | (None, Some("GPT2LMHeadModel")) => Ok(Architecture::Gpt2),
        (Some("llama" | "mistral" | "qwen2" | "qwen3"), _)
        | (
            None,
            Some(
                "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM",
            ),
        ) => Ok(Architecture::Llama),
        (Some("gemma2"), _) | (None, Some("Gemma2ForCausalLM")) => Ok(Architecture::Gemma2),
        (Some("gpt_neox"), _) | (None, Some("GPTNeoXForCausalLM")) => Ok(Architecture::GptNeox),
        (found, class) => Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: found
                .or(class)
                .unwrap_or("(no model_type in config)")
                .to_string(),
            supported: Architecture::SUPPORTED.to_string(),
        }),
    }
}
