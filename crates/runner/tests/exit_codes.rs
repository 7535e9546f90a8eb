//! The exit codes, one test each: 0 done; 1 the run could not finish or found nothing
//! (no pair passed, a computation failed, an output could not be written — what was
//! finished is kept and `--resume` completes it); 2 bad input, nothing written.
//! Failures mid-run are made with the runner's test hooks (feature `test-hooks`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_experiment() -> PathBuf {
    repo().join("tests/fixtures/experiments/tiny.toml")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-exit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn actpatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actpatch"))
}

fn run_into(out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = actpatch();
    cmd.arg("run")
        .arg(fixture_experiment())
        .arg("--out")
        .arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The one run folder under `out`.
fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn status(run_dir: &Path) -> String {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["status"].as_str().unwrap_or_default().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Finishes the run in `run_dir` with `--resume`: exit 0 and a complete run.
fn assert_resumes(run_dir: &Path) {
    let resumed = actpatch()
        .arg("run")
        .arg("--resume")
        .arg(run_dir)
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("read back"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(status(run_dir), "complete");
    assert!(run_dir.join("cells.parquet").is_file());
}

#[test]
fn zero_when_the_run_completes() {
    let out = scratch("zero");
    let done = run_into(&out, &[]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(status(&run_dir(&out)), "complete");
}

#[test]
fn two_for_bad_input_with_nothing_written() {
    let out = scratch("two").join("runs");
    let mut cmd = actpatch();
    let missing = repo().join("tests/fixtures/experiments/no-such-file.toml");
    let done = cmd
        .arg("run")
        .arg(missing)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(done.status.code(), Some(2), "{}", stderr(&done));
    assert!(stderr(&done).contains("no-such-file.toml"));
    assert!(!out.exists());
}

#[test]
fn one_when_no_pair_passes() {
    // Random weights: both fixture pairs fail validation.
    let done = actpatch()
        .arg("check")
        .arg(fixture_experiment())
        .output()
        .unwrap();
    assert_eq!(done.status.code(), Some(1), "{}", stderr(&done));
    assert!(stderr(&done).contains("no pair passed validation"));
}

#[test]
fn one_when_a_computation_fails_and_the_finished_pairs_resume() {
    let out = scratch("compute");
    let failed = run_into(&out, &[("ACTPATCH_FAIL_AFTER_PAIR", "1")]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("computation failed"),
        "{}",
        stderr(&failed)
    );
    let dir = run_dir(&out);
    assert_eq!(status(&dir), "running");
    assert!(dir.join("partial/pair-0000.parquet").is_file());
    assert_resumes(&dir);
}

#[test]
fn one_when_an_output_cannot_be_written_and_the_run_resumes() {
    let out = scratch("write");
    let go = out.join("continue");
    // The run pauses after its first pair; a folder then takes the place of
    // cells.parquet (root can write anywhere, so permissions would not stop it).
    let child = actpatch()
        .arg("run")
        .arg(fixture_experiment())
        .arg("--out")
        .arg(out.join("runs"))
        .env("ACTPATCH_PAUSE_AFTER_PAIR", "1")
        .env("ACTPATCH_CONTINUE_FILE", &go)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let dir = loop {
        let saved = std::fs::read_dir(out.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path())
            .filter(|d| d.join("partial/pair-0000.parquet").is_file());
        if let Some(dir) = saved {
            break dir;
        }
        assert!(
            Instant::now() < deadline,
            "the run never saved its first pair"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::create_dir_all(dir.join("cells.parquet/blocked")).unwrap();
    std::fs::write(&go, "").unwrap();
    let failed = child.wait_with_output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let message = stderr(&failed);
    assert!(
        message.contains("cells.parquet") && message.contains("--resume"),
        "{message}"
    );
    assert_eq!(status(&dir), "running");
    assert!(dir.join("partial/pair-0001.parquet").is_file());
    std::fs::remove_dir_all(dir.join("cells.parquet")).unwrap();
    assert_resumes(&dir);
}
