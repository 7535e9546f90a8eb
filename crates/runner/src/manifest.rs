//! `manifest.json`: what produced a run (model, files and their hashes, tokenizer,
//! tool version, git commit, experiment file hash), when, how long, and whether it
//! finished. `status` is written `"running"` first and `"complete"` last.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

/// The git commit of the working directory, if it is a repository.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `manifest` to `<run_dir>/manifest.json` atomically.
pub fn write(run_dir: &Path, manifest: &Value) -> Result<(), actpatch_report::ReportError> {
    let text = serde_json::to_string_pretty(manifest).unwrap_or_else(|_| "{}".into());
    actpatch_report::atomic::write_bytes_atomic(&run_dir.join("manifest.json"), text.as_bytes())
}

/// The tool's own identity.
pub fn tool() -> Value {
    json!({ "name": "actpatch", "version": env!("CARGO_PKG_VERSION") })
}
