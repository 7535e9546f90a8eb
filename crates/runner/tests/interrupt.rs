//! A run killed part-way (SIGKILL) leaves a run marked incomplete; `--resume`
//! finishes it with the same tables as an uninterrupted run, cell by cell.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actpatch_report::tables::{read_cells, read_parquet};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn actpatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actpatch"))
}

fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

/// Runs `experiment` until its first pair is saved (test hook), kills it, checks it is
/// marked incomplete, resumes it; then runs it again uninterrupted. Returns (the
/// resumed run, the uninterrupted run).
fn kill_resume_and_rerun(experiment: &Path, scratch: &Path) -> (PathBuf, PathBuf) {
    // The run pauses after its first pair is saved (test hook); kill it there.
    let killed_out = scratch.join("killed");
    let mut child = actpatch()
        .arg("run")
        .arg(experiment)
        .arg("--out")
        .arg(&killed_out)
        .env("ACTPATCH_PAUSE_AFTER_PAIR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_dir = loop {
        let saved = std::fs::read_dir(&killed_out)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path())
            .filter(|dir| dir.join("partial/pair-0000.parquet").is_file());
        if let Some(dir) = saved {
            break dir;
        }
        assert!(
            Instant::now() < deadline,
            "the run never saved its first pair"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["status"], "running",
        "a killed run must not look complete"
    );
    assert!(!run_dir.join("cells.parquet").exists());

    let resumed = actpatch()
        .arg("run")
        .arg("--resume")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("read back"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "complete");
    assert!(!run_dir.join("partial").exists());

    let clean_out = scratch.join("uninterrupted");
    let status = actpatch()
        .arg("run")
        .arg(experiment)
        .arg("--out")
        .arg(&clean_out)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (run_dir, only_entry(&clean_out))
}

/// The table `name` of two runs, equal but for `run_id`.
fn same_table(a: &Path, b: &Path, name: &str) {
    let a = read_parquet(&a.join(name)).unwrap().drop("run_id").unwrap();
    let b = read_parquet(&b.join(name)).unwrap().drop("run_id").unwrap();
    assert!(a.equals_missing(&b), "{name} differs");
}

#[test]
fn killed_run_is_marked_incomplete_and_resumes_to_the_same_tables() {
    let scratch = std::env::temp_dir().join(format!("actpatch-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let experiment = repo().join("tests/fixtures/experiments/tiny.toml");
    let (run_dir, reference) = kill_resume_and_rerun(&experiment, &scratch);
    let mut a = read_cells(&run_dir.join("cells.parquet")).unwrap();
    let mut b = read_cells(&reference.join("cells.parquet")).unwrap();
    assert_eq!(a.len(), b.len());
    for row in a.iter_mut().chain(b.iter_mut()) {
        row.run_id.clear();
    }
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    same_table(&run_dir, &reference, "baselines.parquet");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A `[circuit]` run killed during its sweep resumes to the same edge and curve tables
/// as an uninterrupted run.
#[test]
fn killed_circuit_run_resumes_to_the_same_edges_and_curves() {
    let scratch =
        std::env::temp_dir().join(format!("actpatch-kill-circuit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let experiment = repo().join("tests/fixtures/experiments/tiny_circuit.toml");
    let (run_dir, reference) = kill_resume_and_rerun(&experiment, &scratch);
    for table in ["cells.parquet", "edges.parquet", "circuits.parquet"] {
        same_table(&run_dir, &reference, table);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn resuming_a_complete_run_is_refused() {
    let out = std::env::temp_dir().join(format!("actpatch-complete-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = actpatch()
        .arg("run")
        .arg(repo().join("tests/fixtures/experiments/tiny.toml"))
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let run_dir = only_entry(&out);
    let again = actpatch()
        .arg("run")
        .arg("--resume")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already complete"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn runs_started_together_in_one_folder_do_not_collide() {
    let out = std::env::temp_dir().join(format!("actpatch-together-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let experiment = repo().join("tests/fixtures/experiments/tiny.toml");
    let children: Vec<_> = (0..4)
        .map(|_| {
            actpatch()
                .arg("run")
                .arg(&experiment)
                .arg("--out")
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let runs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for run in &runs {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["status"], "complete");
        assert_eq!(
            manifest["run_id"].as_str(),
            run.file_name().and_then(|n| n.to_str())
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
