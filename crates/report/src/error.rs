use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}. Is the output folder writable? Choose another with `[output] dir` or `--out`.")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },

    #[error("{path} was written with table schema version {found}, but this actpatch reads versions 1 to {expected}. Re-run the experiment with this version, or read it with the actpatch that wrote it.")]
    SchemaVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("{path}: column `{column}` of {table} holds {found}, but actpatch expects {expected}. Fix the column (e.g. in pandas: df[\"{column}\"] = df[\"{column}\"].astype(...)) or re-export it from the run's own table.")]
    Column {
        path: PathBuf,
        table: &'static str,
        column: String,
        expected: String,
        found: String,
    },

    #[error("table error in {path}: {reason}")]
    Table { path: PathBuf, reason: String },

    #[error("cannot draw {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ReportError>;
