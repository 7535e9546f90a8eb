//! Tokenization as TransformerLens does it: BOS prepended by default, answers as
//! single tokens.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::source::TokenizerFiles;
use crate::{ModelError, Result};

/// A Hugging Face tokenizer plus the model's BOS token.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
}

impl Tokenizer {
    /// Loads `tokenizer.json`, builds GPT-2's byte-level BPE from `vocab.json` +
    /// `merges.txt`, or reads a GGUF file's tokenizer (whose own BOS is the default).
    pub fn load(files: &TokenizerFiles, bos_id: Option<u32>) -> Result<Self> {
        let inner = match files {
            TokenizerFiles::Gguf(path) => {
                let tokenizer = crate::gguf::GgufFile::open(path)?.tokenizer()?;
                let bos = bos_id.or(tokenizer.bos_id);
                return Ok(Tokenizer {
                    bos_id: bos,
                    ..tokenizer
                });
            }
            TokenizerFiles::Json(path) => tokenizers::Tokenizer::from_file(path)
                .map_err(|e| tokenizer_err(path, e.to_string()))?,
            TokenizerFiles::VocabMerges { vocab, merges } => {
                let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                    .build()
                    .map_err(|e| tokenizer_err(vocab, e.to_string()))?;
                let mut tokenizer = tokenizers::Tokenizer::new(bpe);
                tokenizer
                    .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
                    .with_decoder(Some(ByteLevel::default()));
                // Returns how many tokens were added; <|endoftext|> is in the vocabulary.
                let _ = tokenizer.add_special_tokens([AddedToken::from("<|endoftext|>", true)]);
                tokenizer
            }
        };
        Ok(Tokenizer { inner, bos_id })
    }

    pub fn from_hf(inner: tokenizers::Tokenizer, bos_id: Option<u32>) -> Self {
        Tokenizer { inner, bos_id }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`, with the BOS token first when `prepend_bos` (as
    /// TransformerLens's `to_tokens`). The tokenizer's own post-processing is not
    /// applied, so BOS is never doubled.
    pub fn encode(&self, text: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        let encoding = self.encoding(text)?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if prepend_bos {
            if let Some(bos) = self.bos_id {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// `text` encoded without the tokenizer's post-processing (no special tokens).
    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.inner
            .encode(text, false)
            .map_err(|e| ModelError::Encode {
                text: text.to_string(),
                reason: e.to_string(),
            })
    }

    /// The byte range of `text` each token of [`Tokenizer::encode`] covers (BOS, when
    /// prepended, covers `0..0`).
    pub fn byte_spans(&self, text: &str, prepend_bos: bool) -> Result<Vec<(usize, usize)>> {
        let encoding = self.encoding(text)?;
        let mut spans = Vec::with_capacity(encoding.len() + 1);
        if prepend_bos && self.bos_id.is_some() {
            spans.push((0, 0));
        }
        spans.extend_from_slice(encoding.get_offsets());
        Ok(spans)
    }

    /// The text of one token, as TransformerLens's `to_str_tokens` shows it.
    pub fn decode_one(&self, id: u32) -> String {
        self.inner
            .decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    }

    /// Each token's text.
    pub fn str_tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|id| self.decode_one(*id)).collect()
    }

    /// The single token id of an answer such as `" Rome"`; an error listing the
    /// pieces when it is several tokens.
    pub fn single_token(&self, answer: &str) -> Result<u32> {
        if answer.is_empty() {
            return Err(ModelError::EmptyAnswer);
        }
        let ids = self.encode(answer, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(ModelError::MultiTokenAnswer {
                answer: answer.to_string(),
                n: ids.len(),
                pieces: self
                    .str_tokens(&ids)
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(" | "),
            }),
        }
    }
}

fn tokenizer_err(path: &Path, reason: String) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    }
}
