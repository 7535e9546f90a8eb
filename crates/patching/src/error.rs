//! What can go wrong in a sweep.

use thiserror::Error;

use crate::PatchKind;

#[derive(Debug, Error)]
pub enum PatchingError {
    #[error(transparent)]
    Model(#[from] actpatch_model::ModelError),

    #[error(transparent)]
    Hook(#[from] actpatch_hooks::HookError),

    #[error("metric: {0}")]
    Metric(#[from] actpatch_metrics::MetricError),

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("the clean prompt has {n_clean} tokens and the corrupted one {n_corrupted}: choose an alignment (`Align::Start` or `Align::End`) or a corruption of the same token length")]
    UnequalLengths { n_clean: usize, n_corrupted: usize },

    #[error("`{kind}` cannot be patched between prompts of different token lengths: attention patterns have one column per key position. Use a corruption of the same length.")]
    NeedsEqualLengths { kind: PatchKind },

    #[error("`{kind}` patches blocks.L.{site}, which this {arch} model does not have. Patch kinds it has: {available}", site = kind.site().suffix())]
    KindNotInModel {
        kind: PatchKind,
        arch: &'static str,
        available: String,
    },

    #[error("position {position} is outside the patched run's {n_pos} tokens")]
    PositionOutOfRange { position: usize, n_pos: usize },

    #[error("path patching: {reason}")]
    Receivers { reason: String },

    #[error("`{kind}` needs receivers: sweep it with `path::naive::sweep` or `path::fast::sweep` (in an experiment file, a `[[sweep.paths]]` entry)")]
    NeedsReceivers { kind: PatchKind },

    #[error("attribution: {reason} (a bug in actpatch's pass plan; please report it)")]
    PassPlan { reason: String },

    #[error("internal: cell {cell} of {kind} was not computed")]
    NotComputed { kind: PatchKind, cell: String },
}

pub type Result<T> = std::result::Result<T, PatchingError>;
