//! Long work off the interpreter's thread: the GIL is released while a model loads or
//! a sweep runs, Ctrl-C still stops it, a progress callback still sees it, and a Rust
//! panic comes back as `actpatch.InternalError` instead of crossing into Python.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors;

/// How often the interpreter's thread checks for Ctrl-C and reports progress.
const POLL: Duration = Duration::from_millis(50);
/// How often the progress callback is called at most.
const PROGRESS_EVERY: u32 = 4;

/// How the interpreter's thread watches the work.
pub struct Watch<'a, 'py> {
    /// Asks the work to stop at its next stopping point (on Ctrl-C).
    pub stop: &'a dyn Fn(),
    /// The work's (done, total), when it has a count.
    pub progress: &'a dyn Fn() -> Option<(u64, u64)>,
    /// A Python callable taking (done, total); `None`: no progress shown.
    pub callback: Option<&'a Bound<'py, PyAny>>,
}

/// Runs `work` on a thread of its own and waits for it with the GIL released, checking
/// for signals every [`POLL`]. On KeyboardInterrupt (or an error from the callback)
/// the work is asked to stop, waited for, and the exception raised; `work` must stop
/// soon after `stop` (a run: after the batch under way).
pub fn run_watched<T: Send>(
    py: Python<'_>,
    watch: Watch<'_, '_>,
    work: impl FnOnce() -> PyResult<T> + Send,
) -> PyResult<T> {
    thread::scope(|scope| {
        let handle = scope.spawn(move || catch_unwind(AssertUnwindSafe(work)));
        let mut raised: Option<PyErr> = None;
        let mut ticks = 0u32;
        while !handle.is_finished() {
            py.detach(|| thread::sleep(POLL));
            if raised.is_some() {
                continue;
            }
            let mut outcome = py.check_signals();
            ticks += 1;
            if let (Ok(()), Some(callback)) = (&outcome, watch.callback) {
                if ticks.is_multiple_of(PROGRESS_EVERY) {
                    if let Some(counts) = (watch.progress)() {
                        outcome = callback.call1(counts).map(|_| ());
                    }
                }
            }
            if let Err(err) = outcome {
                (watch.stop)();
                raised = Some(err);
            }
        }
        let finished = handle.join();
        if let Some(err) = raised {
            return Err(err);
        }
        if let (Some(callback), Some(counts)) = (watch.callback, (watch.progress)()) {
            callback.call1(counts)?;
        }
        match finished {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) | Err(payload) => Err(errors::panic(payload)),
        }
    })
}

/// Runs `work` with the GIL released, turning a panic into `actpatch.InternalError`:
/// for work that cannot be stopped midway and ends quickly (a forward pass).
pub fn run_released<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> PyResult<T> + Send,
) -> PyResult<T> {
    let no_stop = || {};
    let no_count = || None;
    let watch = Watch {
        stop: &no_stop,
        progress: &no_count,
        callback: None,
    };
    run_watched(py, watch, work)
}
