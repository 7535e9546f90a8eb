//! A GGUF file's tokenizer (`tokenizer.ggml.*`), built as Hugging Face transformers
//! converts it.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use super::{integer, GgufFile};
use crate::{ModelError, Result, Tokenizer};

impl GgufFile {
    /// The byte-level BPE tokenizer in `tokenizer.ggml.*`, as Hugging Face transformers
    /// converts it: GPT-2's pre-tokenizer without a prefix space, control tokens special.
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
        if !matches!(pre, "gpt2" | "default" | "smollm") {
            return Err(bad(format!(
                "tokenizer.ggml.pre `{pre}` is not supported (supported: gpt2, default, smollm)"
            )));
        }
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
        let mut bpe = BPE::builder().vocab_and_merges(vocab, merges);
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
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)))
            .with_decoder(Some(ByteLevel::default()));
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
