//! The run folder: checked writable before anything loads, created under a unique
//! id, and described in the manifest.

use std::path::{Path, PathBuf};

use actpatch_model::HookedTransformer;
use serde_json::{json, Value};

use crate::experiment::Experiment;
use crate::manifest;
use crate::RunnerError;

pub(crate) fn unwritable(path: &Path, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Input(format!(
        "the output folder {} is not writable: {e}. Choose another with [output] dir or --out.",
        path.display()
    ))
}

/// Fails early, before the model loads, when runs cannot be written under `dir`.
pub(crate) fn ensure_writable(dir: &Path) -> Result<(), RunnerError> {
    std::fs::create_dir_all(dir).map_err(|e| unwritable(dir, e))?;
    let probe = dir.join(format!(".actpatch-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| unwritable(dir, e))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A unique folder `<dir>/<UTC timestamp>-<random>` for this run; concurrent runs in
/// the same folder cannot collide (`create_dir` fails on an existing name).
pub(crate) fn create_run_dir(dir: &Path) -> Result<(String, PathBuf), RunnerError> {
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

pub(crate) fn describe_model(
    manifest: &mut Value,
    model: &HookedTransformer,
    experiment: &Experiment,
) {
    let dims = model.dims();
    let files = model.files();
    let weights: Vec<Value> = files
        .weights
        .iter()
        .map(|w| json!({ "file": w.display().to_string(), "sha256": manifest::sha256_file(w) }))
        .collect();
    // A GGUF file is config and weights at once: hash it once.
    let config_sha256 = match files.weights.iter().position(|w| *w == files.config) {
        Some(i) => weights[i]["sha256"].clone(),
        None => json!(manifest::sha256_file(&files.config)),
    };
    manifest["model"] = json!({
        "source": model.source().to_string(),
        "revision": experiment.model.revision,
        "architecture": dims.arch.name(),
        "n_layers": dims.n_layers,
        "d_model": dims.d_model,
        "n_heads": dims.n_heads,
        "config_sha256": config_sha256,
        "weights": weights,
    });
    manifest["tokenizer"] = json!(format!("{:?}", files.tokenizer));
    manifest["prepend_bos"] = json!(experiment.model.prepend_bos);
    manifest["device"] = json!(experiment.model.device);
}
