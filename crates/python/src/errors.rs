//! The exceptions a Python user can meet, and how the crates' errors become them.
//!
//! `actpatch.Error` is the base of all of them; each carries the command line's
//! message (what, where, how to fix it):
//! - `BadInput`: an experiment file, prompt, answer, hook name or run folder that
//!   cannot be used (the command line's exit code 2);
//! - `ModelError`: a model that cannot be loaded or run;
//! - `RunError`: a run that could not finish (a computation or a write failed, no pair
//!   passed validation; exit code 1); what it finished is kept for `actpatch.resume`;
//! - `InternalError`: a bug in actpatch (a Rust panic), named so it can be reported.

use std::any::Any;

use actpatch_runner::RunnerError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(actpatch, Error, PyException, "Every error actpatch raises.");
create_exception!(
    actpatch,
    BadInput,
    Error,
    "An input that cannot be used: experiment file, prompt, answer, hook name, run folder."
);
create_exception!(
    actpatch,
    ModelError,
    Error,
    "A model that cannot be loaded or run."
);
create_exception!(
    actpatch,
    RunError,
    Error,
    "A run that could not finish; what it finished is kept for actpatch.resume."
);
create_exception!(
    actpatch,
    InternalError,
    Error,
    "A bug in actpatch (a Rust panic): please report it with the message."
);

/// A runner error as the exception of its kind, with the command line's message.
pub fn runner(error: RunnerError) -> PyErr {
    let message = error.to_string();
    match error {
        RunnerError::Input(_) | RunnerError::Read(_) => BadInput::new_err(message),
        RunnerError::Model(_) => ModelError::new_err(message),
        _ => RunError::new_err(message),
    }
}

/// A model error: `BadInput` where the caller's own argument does not fit (a prompt,
/// an answer, a hook name, a token id, a device name), else `ModelError`.
pub fn model(error: actpatch_model::ModelError) -> PyErr {
    use actpatch_model::ModelError as E;
    let message = error.to_string();
    match error {
        E::Encode { .. }
        | E::MultiTokenAnswer { .. }
        | E::EmptyAnswer
        | E::EmptyPrompt
        | E::PromptTooLong { .. }
        | E::TokenOutOfRange { .. }
        | E::UnknownDevice { .. }
        | E::Hook(_) => BadInput::new_err(message),
        _ => ModelError::new_err(message),
    }
}

/// A patching error: the model's kind of error for a model error, a computation that
/// failed as `RunError`, anything about the pair or kind asked for as `BadInput`.
pub fn patching(error: actpatch_patching::PatchingError) -> PyErr {
    use actpatch_patching::PatchingError as E;
    match error {
        E::Model(inner) => model(inner),
        E::Tensor(_) | E::PassPlan { .. } | E::NotComputed { .. } => {
            RunError::new_err(error.to_string())
        }
        E::UnequalLengths {
            n_clean,
            n_corrupted,
        } => BadInput::new_err(format!(
            "the clean prompt has {n_clean} tokens and the corrupted one {n_corrupted}: pass \
             align=\"start\" or align=\"end\", or use a corruption of the same token length"
        )),
        _ => BadInput::new_err(error.to_string()),
    }
}

/// A message for bad input found in the bindings themselves.
pub fn bad_input(message: impl Into<String>) -> PyErr {
    BadInput::new_err(message.into())
}

/// A caught panic as `actpatch.InternalError`, naming it.
pub fn panic(payload: Box<dyn Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    InternalError::new_err(format!(
        "actpatch panicked: {what}. This is a bug in actpatch; please report it with this message."
    ))
}

/// Registers the exception classes on the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    module.add("BadInput", py.get_type::<BadInput>())?;
    module.add("ModelError", py.get_type::<ModelError>())?;
    module.add("RunError", py.get_type::<RunError>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
