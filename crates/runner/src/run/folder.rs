//! The run folder: checked writable before anything loads (without creating
//! anything), created under a unique id once every input has been checked.

use std::path::{Path, PathBuf};

use actpatch_model::HookedTransformer;

use crate::experiment::Experiment;
use crate::manifest::{sha256_file, FileHash, ModelRecord};
use crate::RunnerError;

pub(crate) fn unwritable(path: &Path, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Input(format!(
        "the output folder {} is not writable: {e}. Choose another with [output] dir or --out.",
        path.display()
    ))
}

/// Fails early, before the model loads, when runs cannot be written under `dir`:
/// the nearest existing folder on its path must be a writable folder. Nothing is
/// created (a probe file is written and removed again).
pub(crate) fn ensure_writable(dir: &Path) -> Result<(), RunnerError> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(unwritable(
            dir,
            format!("{} is not a directory", existing.display()),
        ));
    }
    let probe = existing.join(format!(".actpatch-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| unwritable(dir, e))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A unique folder `<dir>/<UTC timestamp>-<random>` for this run (`<dir>/<id>` with
/// `--run-id`); concurrent runs in the same folder cannot collide (`create_dir`
/// fails on an existing name).
pub(crate) fn create_run_dir(
    dir: &Path,
    run_id: Option<&str>,
) -> Result<(String, PathBuf), RunnerError> {
    std::fs::create_dir_all(dir).map_err(|e| unwritable(dir, e))?;
    if let Some(id) = run_id {
        let run_dir = dir.join(id);
        return match std::fs::create_dir(&run_dir) {
            Ok(()) => Ok((id.to_string(), run_dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RunnerError::Input(format!(
                "--run-id {id}: {} already exists. Choose another id, or finish that run with `actpatch run --resume {}`.",
                run_dir.display(),
                run_dir.display()
            ))),
            Err(e) => Err(unwritable(dir, e)),
        };
    }
    for _ in 0..64 {
        let id = format!(
            "{}-{:04x}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            rand::random::<u16>()
        );
        let run_dir = dir.join(&id);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => return Ok((id, run_dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(unwritable(dir, e)),
        }
    }
    Err(unwritable(dir, "no free run id"))
}

/// The model as the manifest records it: source, sizes, files and their hashes.
pub(crate) fn model_record(model: &HookedTransformer, experiment: &Experiment) -> ModelRecord {
    let dims = model.dims();
    let files = model.files();
    let weights: Vec<FileHash> = files
        .weights
        .iter()
        .map(|w| FileHash {
            file: w.clone(),
            sha256: sha256_file(w),
        })
        .collect();
    // A GGUF file is config and weights at once: hash it once.
    let config_sha256 = match files.weights.iter().position(|w| *w == files.config) {
        Some(i) => weights[i].sha256.clone(),
        None => sha256_file(&files.config),
    };
    ModelRecord {
        source: model.source().to_string(),
        revision: experiment.model.revision.clone(),
        architecture: dims.arch.name().to_string(),
        n_layers: dims.n_layers,
        d_model: dims.d_model,
        n_heads: dims.n_heads,
        config_sha256,
        weights,
    }
}

/// The run folder's subfolder `name` (`figures`, `circuits`), created if missing.
pub(super) fn create_subfolder(
    run_dir: &Path,
    name: &str,
) -> Result<std::path::PathBuf, RunnerError> {
    let dir = run_dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|source| {
        RunnerError::write_run(run_dir)(actpatch_report::ReportError::Write {
            path: dir.clone(),
            source,
        })
    })?;
    Ok(dir)
}
