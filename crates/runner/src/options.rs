//! The command-line choices of `actpatch run` and `actpatch check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::ProgressBar;

use crate::control::RunControl;
use crate::shard::ShardChoice;
use crate::RunnerError;

/// Command-line choices that override or extend the experiment file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Sweep pairs that fail validation too (still recorded as failed).
    pub no_validate: bool,
    /// Folder for runs, instead of `[output] dir`.
    pub out_dir: Option<PathBuf>,
    /// Memory budget of one batched forward pass, in MiB.
    pub max_batch_mib: usize,
    /// One full forward pass per batch of cells, no reuse (to check the fast path).
    pub naive: bool,
    /// Print nothing but errors.
    pub quiet: bool,
    /// A local model folder or GGUF file to use instead of the file's `[model]`.
    pub model_path: Option<PathBuf>,
    /// A device to use instead of the file's `[model] device` (`cpu`, `cuda:0`).
    pub device: Option<String>,
    /// The run's id (its folder's name) instead of a fresh one; the id a sharded
    /// run's shards share.
    pub run_id: Option<String>,
    /// Run only this shard of the run's work ([`crate::shard`]).
    pub shard: Option<ShardChoice>,
    /// A shard that finds every shard complete merges them (off: `--no-merge`).
    pub merge: bool,
    /// Lets another thread watch the sweep's progress and stop the run (the Python
    /// package); `None` on the command line.
    pub control: Option<Arc<RunControl>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            no_validate: false,
            out_dir: None,
            max_batch_mib: 1024,
            naive: false,
            quiet: false,
            model_path: None,
            device: None,
            run_id: None,
            shard: None,
            merge: true,
            control: None,
        }
    }
}

impl RunOptions {
    /// Prints a progress line on stderr unless `quiet`.
    pub(crate) fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", text.as_ref());
        }
    }
}

impl RunOptions {
    /// Whether the caller asked the run to stop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.stop_requested())
    }

    /// [`RunnerError::Stopped`] when the caller asked the run in `run_dir` to stop.
    pub(crate) fn stop_point(&self, run_dir: &Path) -> Result<(), RunnerError> {
        match self.stop_requested() {
            true => Err(RunnerError::Stopped {
                run_dir: run_dir.to_path_buf(),
            }),
            false => Ok(()),
        }
    }

    /// Lets the caller read `bar`'s count.
    pub(crate) fn watch(&self, bar: &ProgressBar) {
        if let Some(control) = &self.control {
            control.watch(bar);
        }
    }
}
