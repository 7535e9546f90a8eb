//! Everything that stops a command, and the exit status it maps to
//! ([`RunnerError::exit_code`]):
//!
//! - 2: bad input, found before anything is written — the experiment file, the model,
//!   the output folder, a run folder or table given to `compare`, `runs` or `--resume`;
//! - 1: the command could not finish or found nothing — a computation failed, an
//!   output could not be written (a run keeps what it finished for `--resume`), no
//!   pair passed validation, `merge` found shards missing, or `compare --fail-above`
//!   was exceeded;
//! - 130: the caller stopped the run ([`crate::RunControl::stop`], Ctrl-C in Python);
//!   it is resumable, like a run the command line's SIGINT ended.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunnerError {
    /// Bad input, with what, where and how to fix it.
    #[error("{0}")]
    Input(String),

    /// The model could not be loaded (missing or damaged files, unknown architecture,
    /// unreachable hub): bad input.
    #[error(transparent)]
    Model(Box<actpatch_model::ModelError>),

    /// A table given as input could not be read (missing, damaged, another schema
    /// version): bad input.
    #[error(transparent)]
    Read(Box<actpatch_report::ReportError>),

    /// A forward pass, patch or metric failed while the run was under way.
    #[error("the computation failed while {during}: {source}")]
    Compute {
        during: String,
        // Boxed: candle's error is large, and every `Result` of this crate carries it.
        source: Box<actpatch_patching::PatchingError>,
    },

    /// Edge attribution failed while the run was under way.
    #[error("the circuit computation failed while {during}: {source}")]
    Circuit {
        during: String,
        // Boxed: candle's error is large.
        source: Box<actpatch_circuits::CircuitError>,
    },

    /// An output could not be written. `resume`: the run folder whose finished part
    /// is kept for `actpatch run --resume`.
    #[error("{source}{}", resume.as_ref().map(|dir| format!("\n  What was finished is kept: fix the cause, then finish the run with `actpatch run --resume {}`.", dir.display())).unwrap_or_default())]
    Write {
        // Boxed: keeps every `Result` of this crate small.
        source: Box<actpatch_report::ReportError>,
        resume: Option<PathBuf>,
    },

    /// `actpatch merge` (or the last shard) found shards missing or unfinished: what
    /// they are and how to re-run them. Nothing was merged.
    #[error("{0}")]
    ShardsMissing(String),

    /// The caller asked the run to stop ([`crate::RunControl::stop`]; Ctrl-C in
    /// Python). What was finished is kept.
    #[error("the run was stopped before it finished; what was finished is kept: `actpatch run --resume {}` (or `actpatch.resume` in Python) finishes it", run_dir.display())]
    Stopped { run_dir: PathBuf },

    #[error("no pair passed validation, so nothing was swept ({0}). See the reasons above, fix the pairs, or run with --no-validate to sweep them anyway.")]
    NoPairPassed(String),

    /// `compare --fail-above X`: some matched cell moved more than X.
    #[error("{count} of {matched} matched cells differ by more than {threshold} (largest |B − A| = {largest:.3e}); see {}", report.display())]
    ThresholdExceeded {
        count: usize,
        matched: usize,
        threshold: f64,
        largest: f64,
        report: PathBuf,
    },
}

impl RunnerError {
    /// The process's exit status for this error: 2 for bad input, 130 for a stopped run,
    /// 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunnerError::Input(_) | RunnerError::Model(_) | RunnerError::Read(_) => 2,
            RunnerError::Compute { .. }
            | RunnerError::Circuit { .. }
            | RunnerError::Write { .. }
            | RunnerError::NoPairPassed(_)
            | RunnerError::ShardsMissing(_)
            | RunnerError::ThresholdExceeded { .. } => 1,
            RunnerError::Stopped { .. } => 130,
        }
    }

    /// A model that could not be loaded (bad input).
    pub fn model(source: actpatch_model::ModelError) -> Self {
        RunnerError::Model(Box::new(source))
    }

    /// A table given as input that could not be read (bad input).
    pub fn read(source: actpatch_report::ReportError) -> Self {
        RunnerError::Read(Box::new(source))
    }

    /// A computation failure `during` some step.
    pub fn compute(
        during: impl Into<String>,
    ) -> impl FnOnce(actpatch_patching::PatchingError) -> Self {
        let during = during.into();
        move |source| RunnerError::Compute {
            during,
            source: Box::new(source),
        }
    }

    /// A failed write of a run's outputs; what it finished stays for `--resume`.
    pub fn write_run(run_dir: &Path) -> impl FnOnce(actpatch_report::ReportError) -> Self + '_ {
        move |source| RunnerError::Write {
            source: Box::new(source),
            resume: Some(run_dir.to_path_buf()),
        }
    }

    /// A report error of a command over existing files (`report`, `compare`): a failed
    /// write is exit 1, anything else (the files read) bad input.
    pub fn from_files(source: actpatch_report::ReportError) -> Self {
        match source {
            actpatch_report::ReportError::Write { .. }
            | actpatch_report::ReportError::Plot { .. } => RunnerError::Write {
                source: Box::new(source),
                resume: None,
            },
            other => RunnerError::read(other),
        }
    }
}
