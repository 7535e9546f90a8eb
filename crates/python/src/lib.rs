//! `actpatch._actpatch`: the Python extension module of the `actpatch` package.
//!
//! No logic of its own: it calls the model, patching and runner crates and hands
//! their results to Python (arrays as numpy, run folders as paths that the package's
//! Python layer reads with polars).
//!
//! - [`model`]: `load_model` and `Model` (`to_tokens`, `run_with_cache`, `patch`);
//! - [`patch`]: one pair's grid, as the command line sweeps it;
//! - [`runs`]: `run`, `resume`, `compare_runs` over experiment files and run folders;
//! - [`worker`]: work off the interpreter's thread (GIL released, Ctrl-C, progress,
//!   panics as exceptions);
//! - [`arrays`]: tensors into numpy;
//! - [`errors`]: the exception classes.

mod arrays;
mod errors;
mod model;
mod patch;
mod runs;
mod worker;

use pyo3::prelude::*;

#[pymodule]
fn _actpatch(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // The command line's allocator setting: large activations stay on the heap.
    actpatch_model::keep_large_buffers_in_heap();
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(module)?;
    module.add_class::<model::Model>()?;
    module.add_function(wrap_pyfunction!(model::load_model, module)?)?;
    module.add_function(wrap_pyfunction!(runs::run, module)?)?;
    module.add_function(wrap_pyfunction!(runs::resume, module)?)?;
    module.add_function(wrap_pyfunction!(runs::compare_runs, module)?)?;
    module.add_function(wrap_pyfunction!(panic_for_tests, module)?)?;
    Ok(())
}

/// Panics on a worker thread, as a bug in the engine would: the test suite checks that
/// it arrives as `actpatch.InternalError`. Not part of the API.
#[pyfunction]
#[pyo3(name = "_panic_for_tests")]
fn panic_for_tests(py: Python<'_>) -> PyResult<()> {
    worker::run_released(py, || -> PyResult<()> { panic!("a test panic") })
}
