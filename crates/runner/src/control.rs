//! Watching and stopping a run from another thread: what the Python package's
//! progress bar reads and what its Ctrl-C sets ([`crate::RunOptions::control`]).
//!
//! The command line needs none of this: SIGINT ends the process, and the run folder it
//! leaves is resumable. A caller that runs a sweep on a thread of its own (a notebook
//! kernel must keep handling signals) asks it to stop instead: exact sweeps stop after
//! the batch under way, other work after the pair or stage under way, and the run folder
//! is left as an interrupted run's, for [`crate::resume`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use indicatif::ProgressBar;

/// Shared between a run and the thread that watches it.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    /// The bar of the sweep under way (counting even when nothing is drawn).
    bar: Mutex<Option<ProgressBar>>,
}

impl RunControl {
    /// Asks the run to stop at its next stopping point.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`RunControl::stop`] was called.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Cells done and cells in all of the sweep under way; `None` before the sweep
    /// starts.
    pub fn progress(&self) -> Option<(u64, u64)> {
        let bar = self.bar.lock().ok()?;
        let bar = bar.as_ref()?;
        Some((bar.position(), bar.length().unwrap_or(0)))
    }

    pub(crate) fn watch(&self, bar: &ProgressBar) {
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar.clone());
        }
    }
}
