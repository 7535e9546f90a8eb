use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong loading or running a model. Messages say what failed,
/// on which file or input, and what to do about it.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("could not fetch `{file}` of model `{model}` from the Hugging Face hub: the hub was unreachable or refused the request ({reason}).\n  To use a model on disk, give a local folder instead of a hub id (`path = \"/path/to/{model}\"` under [model], or `--model-path`), holding config.json, model.safetensors and tokenizer.json.\n  Files downloaded earlier are used with HF_HUB_OFFLINE=1 (hub cache: {cache}).")]
    HubUnreachable {
        model: String,
        file: String,
        reason: String,
        cache: PathBuf,
    },

    #[error("HF_HUB_OFFLINE is set, and `{file}` of model `{model}` is not in the hub cache at {cache}.\n  Unset HF_HUB_OFFLINE to download it, or give a local folder (`path = \"...\"` under [model]).")]
    NotInHubCache {
        model: String,
        file: String,
        cache: PathBuf,
    },

    #[error("model folder {dir} has no {file}. {hint}")]
    MissingFile {
        dir: PathBuf,
        file: String,
        hint: String,
    },

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid model config: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("{path} describes a `{found}` model, which actpatch does not support. Supported architectures: {supported}")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },

    #[error("{path}: {key} = {value} is not supported (supported: {supported}). actpatch refuses the model rather than run it differently from how it was trained.")]
    UnsupportedOption {
        path: PathBuf,
        /// The config key, e.g. `rope_scaling.rope_type`.
        key: String,
        /// Its value as written in the config.
        value: String,
        supported: String,
    },

    #[error("{file} does not hold tensor `{tensor}`, which the {arch} architecture needs. Is the checkpoint complete and of the right architecture?")]
    MissingTensor {
        file: PathBuf,
        tensor: String,
        arch: &'static str,
    },

    #[error("tensor `{tensor}` in {file} has shape {found:?}, but the config asks for {expected:?}. The weights and config.json do not belong together.")]
    TensorShape {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("cannot read the weights in {file}: {reason}. The file may be truncated or not a safetensors file; download it again.")]
    Weights { file: PathBuf, reason: String },

    #[error("cannot read the GGUF file {file}: {reason}. The file may be truncated or not a GGUF file; download it again.")]
    Gguf { file: PathBuf, reason: String },

    #[error("cannot load the tokenizer from {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    #[error("tokenizing {text:?} failed: {reason}")]
    Encode { text: String, reason: String },

    #[error("answer {answer:?} is {n} tokens: {pieces}. An answer must be exactly one token; pick a word that is one token (often with a leading space, e.g. \" Rome\").")]
    MultiTokenAnswer {
        answer: String,
        n: usize,
        pieces: String,
    },

    #[error(
        "the answer is empty: give the one-token string the model should predict, e.g. \" Rome\""
    )]
    EmptyAnswer,

    #[error("the prompt is empty: give the text the model continues")]
    EmptyPrompt,

    #[error("the prompt is {n_tokens} tokens, longer than the model's context of {n_ctx} tokens{}. Shorten it.", prompt.as_ref().map(|p| format!(" ({p:?})")).unwrap_or_default())]
    PromptTooLong {
        prompt: Option<String>,
        n_tokens: usize,
        n_ctx: usize,
    },

    #[error("{arch} models have no edge graph in actpatch yet (circuits run on gpt2, gemma2, gpt_neox / Pythia and the llama family: Llama, Mistral, Qwen2/2.5, Qwen3). Use node-level patching (`[sweep] kinds`) for this model.")]
    NoEdgeGraph { arch: &'static str },

    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },

    #[error("unknown device `{spec}`: use \"cpu\" or \"cuda:N\" (e.g. \"cuda:0\")")]
    UnknownDevice { spec: String },

    #[error("device `{spec}` asked for, but this actpatch was built without CUDA support: build it with `just build-cuda` (or `cargo build --release -p actpatch-runner --features cuda` with the CUDA toolkit installed), or use device \"cpu\"")]
    CudaNotBuilt { spec: String },

    #[error("a truncated pass needs one depth per row, in non-increasing order, each at most {n_layers}: got {depths:?} for {rows} rows")]
    Depths {
        depths: Vec<usize>,
        rows: usize,
        n_layers: usize,
    },

    #[error("a partial forward pass over positions {start}..{} does not fit a prompt of {n_pos} tokens", start + len)]
    Span {
        start: usize,
        len: usize,
        n_pos: usize,
    },

    #[error("a partial forward pass got rows of shape {shape:?}, but its span needs [rows, {len}, {d_model}]")]
    SpanRows {
        shape: Vec<usize>,
        len: usize,
        d_model: usize,
    },

    #[error("could not open device `{spec}`: {source}. Check that the GPU is there and its driver loaded (`nvidia-smi` lists it, numbered from 0), or use device \"cpu\"")]
    CudaUnavailable {
        spec: String,
        // Boxed: candle's error is large, and every `Result` of this crate carries it.
        source: Box<candle_core::Error>,
    },

    #[error(transparent)]
    Hook(#[from] actpatch_hooks::HookError),

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
