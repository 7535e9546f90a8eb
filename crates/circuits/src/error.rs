//! What can go wrong in edge attribution.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CircuitError {
    #[error(transparent)]
    Model(#[from] actpatch_model::ModelError),

    #[error(transparent)]
    Hook(#[from] actpatch_hooks::HookError),

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("unknown circuit method `{given}`: use one of {allowed}")]
    UnknownMethod {
        given: String,
        allowed: &'static str,
    },

    #[error("unknown ablation `{given}`: use one of {allowed}")]
    UnknownAblation {
        given: String,
        allowed: &'static str,
    },

    #[error("`{method}` takes no ablation but `patching` (it interpolates between the clean and the corrupted run); `{ablation}` applies to {applies}")]
    AblationNotForMethod {
        method: String,
        ablation: &'static str,
        applies: &'static str,
    },

    #[error("steps = 0: an integrated-gradients method needs at least one step (the library's default is 5 here; 1 step is the gradient at one end)")]
    ZeroSteps,

    #[error("the clean prompt has {n_clean} tokens and the corrupted one {n_corrupted}: edge attribution compares the two position by position, so give a corruption of the same token length")]
    UnequalLengths { n_clean: usize, n_corrupted: usize },

    #[error("mean ablation averages each sender's output over the corrupted prompts of each token length, position by position, so every length needs two prompts at least (got {prompts} prompts of {lengths} lengths; alone at their length: {single} tokens). Use `patching` or `zero`, or add pairs of those lengths")]
    MeanNeedsPrompts {
        prompts: usize,
        lengths: usize,
        single: String,
    },

    #[error("no pairs to attribute")]
    NoPairs,
}

pub type Result<T> = std::result::Result<T, CircuitError>;
