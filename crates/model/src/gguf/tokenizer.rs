//! A GGUF file's tokenizer (`tokenizer.ggml.*`): byte-level BPE with the pre-tokenizer
//! `tokenizer.ggml.pre` names, as the model's own `tokenizer.json` has it.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::{integer, GgufFile};
use crate::{ModelError, Result, Tokenizer};

/// The `tokenizer.ggml.pre` values this module builds.
pub const PRE_TOKENIZERS: &str =
    "gpt2, default, smollm, llama-bpe (Llama 3), qwen2 (Qwen2, Qwen2.5, Qwen3)";

/// Llama 3's split pattern (`tokenizer.json`; llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: digits one at a time (llama.cpp's `qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a pre-tokenizer family splits text before byte-level BPE.
enum PreTokenizer {
    /// GPT-2's regex inside `ByteLevel` (gpt2, default, smollm).
    Gpt2,
    /// A split pattern, then `ByteLevel` without its regex; NFC first for Qwen2.
    Split { pattern: &'static str, nfc: bool },
}

impl PreTokenizer {
    /// The pre-tokenizer `tokenizer.ggml.pre` names, if this module builds it.
    fn named(pre: &str) -> Option<Self> {
        Some(match pre {
            "gpt2" | "default" | "smollm" => PreTokenizer::Gpt2,
            "llama-bpe" => PreTokenizer::Split {
                pattern: LLAMA3_SPLIT,
                nfc: false,
            },
            "qwen2" => PreTokenizer::Split {
                pattern: QWEN2_SPLIT,
                nfc: true,
            },
            _ => return None,
        })
    }

    /// Sets `tokenizer`'s normalizer and pre-tokenizer.
    fn install(
        self,
        tokenizer: &mut tokenizers::Tokenizer,
        add_prefix_space: bool,
    ) -> tokenizers::Result<()> {
        match self {
            PreTokenizer::Gpt2 => {
                tokenizer.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
            }
            PreTokenizer::Split { pattern, nfc } => {
                let split = Split::new(
                    SplitPattern::Regex(pattern.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )?;
                tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                    PreTokenizerWrapper::Split(split),
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(add_prefix_space, true, false)),
                ])));
                if nfc {
                    tokenizer.with_normalizer(Some(NFC))?;
                }
            }
        }
        Ok(())
    }
}

impl GgufFile {
    /// The byte-level BPE tokenizer in `tokenizer.ggml.*`, control tokens special:
    /// GPT-2's pre-tokenizer without a prefix space for `gpt2`/`default`/`smollm` (as
    /// Hugging Face transformers converts these files), and the original
    /// `tokenizer.json`'s split pattern for `llama-bpe` (Llama 3, whose BPE also takes
    /// a whole word that is in the vocabulary as one token) and `qwen2` (NFC first).
    ///
    /// llama.cpp's `smollm` pre-tokenizer also splits off every digit, which only
    /// differs on runs of several whitespace characters before a digit (`"a  1"`);
    /// transformers, and so this tokenizer, keep GPT-2's split there.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let bad = |reason: String| ModelError::Tokenizer {
            path: self.path.clone(),
            reason,
        };
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model `{model}` is not supported (supported: gpt2, byte-level BPE)"
            )));
        }
        let pre = self
            .optional_string("tokenizer.ggml.pre")?
            .unwrap_or("gpt2");
        let pre_tokenizer =
            PreTokenizer::named(pre).ok_or_else(|| ModelError::UnsupportedOption {
                path: self.path.clone(),
                key: "tokenizer.ggml.pre".into(),
                value: format!("{pre:?}"),
                supported: PRE_TOKENIZERS.into(),
            })?;
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        bad(format!(
                            "merge `{m}` is not two tokens separated by a space"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let mut bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre == "llama-bpe");
        if let Some(unk) = self.optional_usize("tokenizer.ggml.unknown_token_id")? {
            if let Some(token) = tokens.get(unk) {
                bpe = bpe.unk_token(token.to_string());
            }
        }
        let bpe = bpe.build().map_err(|e| bad(e.to_string()))?;
        let add_prefix_space = match self.content.metadata.get("tokenizer.ggml.add_space_prefix") {
            Some(v) => v.to_bool().map_err(|e| bad(e.to_string()))?,
            None => false,
        };
        let mut inner = tokenizers::Tokenizer::new(bpe);
        pre_tokenizer
            .install(&mut inner, add_prefix_space)
            .map_err(|e| bad(e.to_string()))?;
        inner.with_decoder(Some(ByteLevel::default()));
        // llama.cpp token types: 3 control (special), 4 user-defined.
        let types = match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec().map_err(|e| bad(e.to_string()))?.clone(),
            None => Vec::new(),
        };
        let added = |kind: u64| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, t)| integer(t) == Some(kind))
                .map(|(token, _)| AddedToken::from(token.to_string(), kind == 3))
                .collect()
        };
        inner
            .add_special_tokens(added(3))
            .map_err(|e| bad(e.to_string()))?;
        inner.add_tokens(added(4)).map_err(|e| bad(e.to_string()))?;
        let bos = self
            .optional_usize("tokenizer.ggml.bos_token_id")?
            .map(|id| id as u32);
        Ok(Tokenizer::from_hf(inner, bos))
    }
}
