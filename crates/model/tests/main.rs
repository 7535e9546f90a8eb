//! The integration tests of `actpatch-model`: the forward pass, hooks and gradients against
//! TransformerLens and Hugging Face, on every family and file format.
//! One test binary per crate (each file below is a module): a binary links all of
//! candle and polars, so one per file would take gigabytes of disk and minutes of linking.

mod common;
#[path = "../../../tests/support/tiny_gguf.rs"]
mod tiny_gguf;

mod edges;
mod errors;
mod gguf_families;
mod gguf_llama;
mod gguf_tokenizer;
mod golden_families;
mod golden_gpt2;
mod golden_llama;
mod gradients;
mod hub;
mod identities;
mod llama_configs;
mod partial;
mod real_qwen25;
mod real_smollm2;
mod sharded;
mod spans;
