//! The `actpatch` runner: declarative experiments (TOML) → validated baselines →
//! patching sweeps (through [`actpatch_patching`]) → parquet tables, figures and a
//! markdown report.
//!
//! - [`experiment`]: the experiment file and its checks;
//! - [`validate`]: each pair's tokens, answers, alignment and baselines;
//! - [`gaussian`]: pairs corrupted by Gaussian noise on their subject (ROME's causal
//!   tracing): the run's noise level and their validation;
//! - [`run`]: orchestration — [`run::run`], [`run::resume`], [`run::check`],
//!   [`run::merge`] (sharded runs);
//! - [`shard`]: which shard a process is, where shards write, who runs what;
//! - [`outputs`]: tables, figures and `report.md`;
//! - [`manifest`]: the typed `manifest.json`;
//! - [`inspect`]: `compare`, `runs` and `report`, over finished runs;
//! - [`control`]: watching and stopping a run from another thread (the Python package);
//! - [`RunnerError`] and its exit codes.
//!
//! The binary (`src/main.rs`) is a thin command line over these.

pub mod control;
mod error;
pub mod experiment;
pub mod gaussian;
pub mod inspect;
pub mod manifest;
mod options;
pub mod outputs;
pub mod roles;
pub mod run;
pub mod shard;
pub mod validate;
pub mod validate_gaussian;

pub use control::RunControl;
pub use error::RunnerError;
pub use inspect::{compare, runs};
pub use options::RunOptions;
pub use run::{check, merge, resume, run, RunOutcome};
