//! Runs from Python: the command line's `run`, `run --resume` and `compare`, on a
//! thread of their own so that Ctrl-C stops them resumably and a progress callback
//! sees the sweep. The Python layer (`actpatch.run`, `actpatch.Run`) reads the
//! folders these write.

use std::path::PathBuf;
use std::sync::Arc;

use actpatch_runner::compare::{self, CompareOptions};
use actpatch_runner::{RunControl, RunOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{errors, worker};

/// Runs an experiment file as `actpatch run` does (the same folder, tables, figures
/// and report) and returns the run folder. `progress(done, total)` is called with the
/// sweep's cell counts.
#[pyfunction]
#[pyo3(signature = (experiment, out = None, progress = None, no_validate = false,
                    model_path = None, device = None, max_batch_mib = 1024, run_id = None,
                    naive = false))]
#[allow(clippy::too_many_arguments)]
pub fn run(
    py: Python<'_>,
    experiment: PathBuf,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
    no_validate: bool,
    model_path: Option<PathBuf>,
    device: Option<String>,
    max_batch_mib: usize,
    run_id: Option<String>,
    naive: bool,
) -> PyResult<PathBuf> {
    let control = Arc::new(RunControl::default());
    let options = RunOptions {
        no_validate,
        out_dir: out,
        max_batch_mib: max_batch_mib.max(1),
        naive,
        quiet: true,
        model_path,
        device,
        run_id,
        control: Some(Arc::clone(&control)),
        ..RunOptions::default()
    };
    watched(py, &control, progress.as_ref(), move || {
        actpatch_runner::run(&experiment, &options)
    })
}

/// Finishes an interrupted run folder, as `actpatch run --resume`; returns it.
#[pyfunction]
#[pyo3(signature = (run_dir, progress = None))]
pub fn resume(
    py: Python<'_>,
    run_dir: PathBuf,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<PathBuf> {
    let control = Arc::new(RunControl::default());
    let options = RunOptions {
        quiet: true,
        control: Some(Arc::clone(&control)),
        ..RunOptions::default()
    };
    watched(py, &control, progress.as_ref(), move || {
        actpatch_runner::resume(&run_dir, &options)
    })
}

fn watched(
    py: Python<'_>,
    control: &RunControl,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce() -> Result<actpatch_runner::RunOutcome, actpatch_runner::RunnerError> + Send,
) -> PyResult<PathBuf> {
    let stop = || control.stop();
    let counts = || control.progress();
    let watch = worker::Watch {
        stop: &stop,
        progress: &counts,
        callback: progress,
    };
    let outcome = worker::run_watched(py, watch, || work().map_err(errors::runner))?;
    Ok(outcome.run_dir)
}

/// Compares two runs (folders or `cells.parquet` files) as `actpatch compare` and
/// returns `{"out_dir", "matched", "only_a", "only_b", "max_abs", "mean_abs",
/// "exceeding"}`.
#[pyfunction]
#[pyo3(signature = (a, b, out = None, by_depth = false, fail_above = None, figures = true))]
pub fn compare_runs<'py>(
    py: Python<'py>,
    a: PathBuf,
    b: PathBuf,
    out: Option<PathBuf>,
    by_depth: bool,
    fail_above: Option<f64>,
    figures: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let formats = compare::image_formats(&["png".to_string()], !figures).map_err(errors::runner)?;
    let options = CompareOptions {
        out_dir: out,
        by_depth,
        fail_above,
        formats,
        ..CompareOptions::default()
    };
    let comparison = worker::run_released(py, move || {
        compare::compare(&a, &b, &options).map_err(errors::runner)
    })?;
    let summary = &comparison.summary;
    let result = PyDict::new(py);
    result.set_item("out_dir", &comparison.out_dir)?;
    result.set_item("matched", summary.matched)?;
    result.set_item("only_a", summary.only_a)?;
    result.set_item("only_b", summary.only_b)?;
    result.set_item("max_abs", summary.max_abs)?;
    result.set_item("mean_abs", summary.mean_abs)?;
    result.set_item("exceeding", summary.exceeding)?;
    Ok(result)
}
