//! The `actpatch` runner: declarative experiments (TOML) → validated baselines →
//! patching sweeps → parquet tables, figures and a markdown report.
//!
//! The binary (`src/main.rs`) is a thin command line over [`run::run`] and
//! [`run::check`].

pub mod compare;
pub mod experiment;
mod fast_chunk;
pub mod figures;
pub mod manifest;
pub mod outputs;
pub mod partial;
pub mod progress;
pub mod render;
pub mod run;
mod run_folder;
pub mod runs;
pub mod summary;
pub mod sweep;
pub mod sweep_fast;
pub mod sweep_pair;
pub mod validate;

use thiserror::Error;

/// Everything that stops a run. [`RunnerError::exit_code`] maps it to the process's
/// exit status: 2 for bad input (nothing was swept), 1 for a run that found no
/// usable pair or failed while computing.
#[derive(Debug, Error)]
pub enum RunnerError {
    #[error("{0}")]
    Input(String),

    #[error(transparent)]
    Model(#[from] actpatch_model::ModelError),

    #[error(transparent)]
    Hook(#[from] actpatch_hooks::HookError),

    #[error(transparent)]
    Report(#[from] actpatch_report::ReportError),

    #[error("metric: {0}")]
    Metric(#[from] actpatch_metrics::MetricError),

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("no pair passed validation, so nothing was swept ({0}). See the reasons above, fix the pairs, or run with --no-validate to sweep them anyway.")]
    NoPairPassed(String),
}

impl RunnerError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunnerError::Input(_)
            | RunnerError::Model(_)
            | RunnerError::Hook(_)
            | RunnerError::Report(_) => 2,
            RunnerError::NoPairPassed(_) | RunnerError::Metric(_) | RunnerError::Tensor(_) => 1,
        }
    }
}
