//! `manifest.json`: what produced a run (the experiment file and its hash, the model's
//! files and their hashes, the tool and its build commit, the experiment file's
//! repository commit), when, how long, and whether it finished. Written by runs
//! (`status` `"running"` first, `"complete"` last), read by `actpatch runs`,
//! `actpatch compare` and `actpatch run --resume`.
//!
//! Every field a reader may lack defaults, so manifests of older runs still read.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A run's `manifest.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    pub status: RunStatus,
    pub run_id: String,
    /// `[experiment] name`.
    pub experiment: String,
    /// The experiment file, absolute.
    pub experiment_file: PathBuf,
    pub experiment_sha256: String,
    /// The commit of the repository the experiment file is in, if any.
    pub experiment_repository: Option<RepositoryState>,
    pub options: RunChoices,
    pub tool: Tool,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: Option<String>,
    pub wall_seconds: Option<f64>,
    pub timings: Option<Timings>,
    pub pairs: Option<PairCounts>,
    /// Rows of `cells.parquet`.
    pub cells: Option<usize>,
    pub kinds: Vec<String>,
    pub directions: Vec<String>,
    pub model: Option<ModelRecord>,
    /// The tokenizer's files, as the loader found them.
    pub tokenizer: Option<String>,
    pub prepend_bos: Option<bool>,
    pub device: Option<String>,
    /// A sharded run's number of shards (its own manifest, merged or not).
    pub shards: Option<usize>,
    /// The shard a shard manifest (`shards/i-of-n.json`) describes.
    pub shard: Option<ShardRecord>,
    /// The concept table's bootstrap: its resamplings, seed and level.
    pub statistics: Option<StatisticsRecord>,
    /// What each method cost per pair and direction (unsharded runs; pairs resumed
    /// from a partial run have none): `actpatch compare` puts them next to the
    /// attribution statistics of an exact run and an approximate one.
    pub costs: Vec<CostRecord>,
    /// Gaussian-noise corruption, when any pair used it.
    pub corruption: Option<CorruptionRecord>,
    /// `[circuit]`: seconds the edge scores took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_seconds: Option<f64>,
    /// `[circuit]`: the circuit files (the EAP-IG library's graph JSON), relative to
    /// the run folder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub circuit_files: Vec<String>,
    /// `[circuit]`: each method's `top` strongest edges over every pair (the report
    /// page draws the first method's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub circuit_top_edges: Vec<TopEdge>,
    /// `[circuit]`: each method's faithfulness curve summarized, per ablation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub circuit_areas: Vec<CircuitArea>,
}

/// One of a method's strongest edges (mean over every pair).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopEdge {
    /// The method, with its steps: `eap-ig-inputs(5)`.
    pub method: String,
    pub sender: String,
    pub receiver: String,
    /// `q`, `k`, `v`, `mlp` or `logits`.
    pub receiver_input: String,
    pub score: f64,
    pub exact: Option<f64>,
}

/// CPR and CMD (MIB's areas under the faithfulness curve) of one method's circuits
/// under one ablation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CircuitArea {
    /// The method, with its steps: `eap-ig-inputs(5)`.
    pub method: String,
    pub ablation: String,
    /// Area under the faithfulness curve (higher is better).
    pub cpr: f64,
    /// Area under |1 − faithfulness| (lower is better).
    pub cmd: f64,
    /// Bootstrap intervals over pairs (`[statistics]`) of CPR and CMD, with two pairs
    /// or more: `[low, high]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpr_interval: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd_interval: Option<[f64; 2]>,
}

/// `[corruption]` as the run's Gaussian-noise pairs used it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorruptionRecord {
    /// `"gaussian"`.
    pub kind: String,
    /// Noise draws per prompt.
    pub samples: usize,
    /// The draws' seed (every prompt draws from it).
    pub seed: u64,
    /// ν, the noise's standard deviation.
    pub noise: f64,
    /// The standard deviation of the token embedding matrix's entries (times the
    /// model's embedding scale), and ν as its multiple (`null` when ν was given).
    pub embedding_std: f64,
    pub noise_multiplier: Option<f64>,
    /// Layers restored per `attn_out` / `mlp_out` cell.
    pub window: usize,
    /// `"prob"` or `"logit"`.
    pub metric: String,
}

/// Which shard of a sharded run a shard manifest describes, and the choices every
/// shard of the run must share for their cells to merge into one run's tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardRecord {
    pub index: usize,
    pub count: usize,
    /// Where the index came from: `--shard`, `SLURM_ARRAY_TASK_ID` or
    /// `JOB_COMPLETION_INDEX`.
    pub from: String,
    /// `--max-batch-memory`: it decides the batches the shards divide.
    pub max_batch_mib: usize,
    /// The sweep's batches this shard ran, of all of the run's.
    pub batches: usize,
    pub total_batches: usize,
    /// Their estimated cost, of the run's (block work, row × position units).
    pub cost: u64,
    pub total_cost: u64,
    /// The machine it ran on.
    pub host: Option<String>,
}

/// `[statistics]` as the run used it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatisticsRecord {
    pub bootstrap: usize,
    pub seed: u64,
    pub level: f64,
}

/// Whether a run finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not (yet) finished: still running, interrupted, or failed.
    #[default]
    Running,
    Complete,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Unknown => "unknown",
        }
    }
}

/// The command-line choices a resumed run must repeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunChoices {
    pub no_validate: bool,
    pub naive: bool,
    pub model_path: Option<PathBuf>,
    /// `--device`, replacing the file's `[model] device`.
    pub device: Option<String>,
}

/// The tool that wrote the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tool {
    pub name: String,
    pub version: String,
    /// The git commit actpatch was built from; `None` when built outside a repository.
    pub commit: Option<String>,
}

impl Tool {
    /// This build of actpatch.
    pub fn this() -> Tool {
        Tool {
            name: "actpatch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("ACTPATCH_BUILD_COMMIT").map(str::to_string),
        }
    }
}

/// The state of the repository an experiment file is in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepositoryState {
    pub commit: String,
    /// Whether the experiment file differs from that commit (or is not committed).
    pub file_modified: bool,
}

impl RepositoryState {
    /// The commit of the git repository holding `file`, `None` outside one (or without
    /// git).
    pub fn of(file: &Path) -> Option<RepositoryState> {
        let dir = file.parent()?;
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let commit = git(&["rev-parse", "HEAD"])?;
        let name = file.file_name()?.to_string_lossy().into_owned();
        let status = git(&["status", "--porcelain", "--", &name]);
        Some(RepositoryState {
            commit,
            file_modified: status.is_none_or(|s| !s.is_empty()),
        })
    }
}

/// The time and forward-pass equivalents one method took for one direction of a pair:
/// per kind for exact sweeps (one pass per patched run), every kind at once for an
/// approximation (`kind` absent; forward passes plus 2 per backward pass).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CostRecord {
    pub concept: String,
    pub pair: String,
    pub direction: String,
    pub method: String,
    pub kind: Option<String>,
    pub seconds: f64,
    pub passes: f64,
}

/// Seconds spent in each phase of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    pub load_seconds: f64,
    pub validate_seconds: f64,
    pub sweep_seconds: f64,
    /// Everything after the sweep, of which:
    pub write_seconds: f64,
    /// `cells.parquet`, `baselines.parquet` (and `attribution.parquet`);
    pub tables_seconds: Option<f64>,
    /// the concept statistics (bootstrap) and `concepts.parquet`;
    pub statistics_seconds: Option<f64>,
    /// every figure, per pair and per concept;
    pub figures_seconds: Option<f64>,
    /// `report.md` and `report.html`.
    pub report_seconds: Option<f64>,
}

/// How the pairs fared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairCounts {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub swept: usize,
    /// Pairs marked `reference = true` (validated, not swept).
    pub reference: usize,
}

/// The model a run used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelRecord {
    /// Hub id or local path.
    pub source: String,
    pub revision: Option<String>,
    pub architecture: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub config_sha256: Option<String>,
    pub weights: Vec<FileHash>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileHash {
    pub file: PathBuf,
    pub sha256: Option<String>,
}

impl Manifest {
    /// The manifest of the run in `run_dir`: `Ok(None)` when there is none, `Err` with
    /// the reason when it cannot be read or parsed.
    pub fn read(run_dir: &Path) -> Result<Option<Manifest>, String> {
        Manifest::read_from(&run_dir.join("manifest.json"))
    }

    /// The manifest at `path` (e.g. a shard's): `Ok(None)` when there is none.
    pub fn read_from(path: &Path) -> Result<Option<Manifest>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not a valid manifest: {e}", path.display()))
    }

    /// Writes the manifest to `<run_dir>/manifest.json` atomically.
    pub fn write(&self, run_dir: &Path) -> Result<(), actpatch_report::ReportError> {
        self.write_to(&run_dir.join("manifest.json"))
    }

    /// Writes the manifest to `path` atomically.
    pub fn write_to(&self, path: &Path) -> Result<(), actpatch_report::ReportError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        actpatch_report::atomic::write_bytes_atomic(path, text.as_bytes())
    }

    /// The SHA-256 of every weight file, in order: what tells two models apart.
    pub fn weights_sha256(&self) -> Vec<Option<String>> {
        (self.model.iter())
            .flat_map(|m| m.weights.iter().map(|w| w.sha256.clone()))
            .collect()
    }

    pub fn complete(&self) -> bool {
        self.status == RunStatus::Complete
    }
}

/// SHA-256 of a file, hex; `None` when it cannot be read.
pub fn sha256_file(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(format!("{:x}", hasher.finalize()))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_old_ones_read() {
        let manifest = Manifest {
            run_id: "r".into(),
            status: RunStatus::Complete,
            tool: Tool::this(),
            kinds: vec!["resid_pre".into()],
            ..Manifest::default()
        };
        let text = serde_json::to_string(&manifest).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        // A version-1 manifest: `git_commit`, no directions, an unknown status.
        let old: Manifest = serde_json::from_str(
            r#"{"status": "paused", "run_id": "x", "git_commit": "abc", "cells": 3}"#,
        )
        .unwrap();
        assert_eq!(
            (old.status, old.cells, old.directions.len()),
            (RunStatus::Unknown, Some(3), 0)
        );
    }
}
