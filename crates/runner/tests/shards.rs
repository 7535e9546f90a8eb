//! Sharded runs: n shards (from `--shard`, `JOB_COMPLETION_INDEX` or a Slurm array's
//! variables) merge into tables byte-identical to a single-process run's; and the
//! faults: a shard killed mid-way and re-run, a merge with a shard missing, shards of
//! another experiment or model, two processes given the same shard.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn experiment() -> PathBuf {
    repo().join("tests/fixtures/experiments/tiny.toml")
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `actpatch run` of `file` into `out`, run id `R`, with no scheduler variables
/// unless `env` sets them; small batches, so each pair has many.
pub(crate) fn run_cmd(file: &Path, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_actpatch"));
    cmd.arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(["--run-id", "R", "--max-batch-memory", "1"])
        .args(args);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_STEP",
        "SLURM_ARRAY_JOB_ID",
        "JOB_COMPLETION_INDEX",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

pub(crate) fn output(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

pub(crate) fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

pub(crate) fn failed(out: Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

pub(crate) fn merge(run_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("merge")
        .arg(run_dir)
        .output()
        .unwrap()
}

/// The single-process run of the experiment, under the same run id.
fn single(dir: &Path) -> PathBuf {
    ok(output(run_cmd(
        &experiment(),
        &dir.join("single"),
        &[],
        &[],
    )));
    dir.join("single/R")
}

/// The merged run's tables and figures are byte for byte the single run's.
fn assert_same_as_single(merged: &Path, single: &Path) {
    for table in ["cells.parquet", "baselines.parquet"] {
        let (a, b) = (merged.join(table), single.join(table));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{} differs from {}",
            a.display(),
            b.display()
        );
    }
    let figures = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("figures"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(figures(merged), figures(single));
    for name in figures(single) {
        let (a, b) = (
            merged.join("figures").join(&name),
            single.join("figures").join(&name),
        );
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "{name:?}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        (manifest["status"].as_str(), manifest["shards"].as_u64()),
        (Some("complete"), Some(4))
    );
}

/// A copy of the fixture experiment `file` at `copy`, with `edit` applied to its text
/// and its model path (`../tiny-gpt2`, relative to the fixture's folder) made absolute.
pub(crate) fn edited_copy(
    file: &Path,
    copy: &Path,
    edit: impl FnOnce(String) -> String,
) -> PathBuf {
    let model = repo().join("tests/fixtures/tiny-gpt2");
    let text = edit(std::fs::read_to_string(file).unwrap()).replace(
        "\"../tiny-gpt2\"",
        &format!("{:?}", model.to_string_lossy()),
    );
    std::fs::write(copy, text).unwrap();
    copy.to_path_buf()
}

pub(crate) fn no_temporary_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".partial."), "{}", entry.path().display());
        if entry.file_type().unwrap().is_dir() {
            no_temporary_files(&entry.path());
        }
    }
}

#[test]
fn four_shards_from_flag_and_scheduler_variables_merge_into_the_single_run() {
    let dir = scratch("four");
    let out = dir.join("sharded");
    let run_dir = out.join("R");
    let file = experiment();
    // Shard 0 by flag; 1 as a Kubernetes pod; 2 as task 3 of a Slurm array 1-4 (its
    // run id from the flag, which wins over slurm-<job id>); 3 by flag, no merge.
    let k8s = [("JOB_COMPLETION_INDEX", "1")];
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "4"),
        ("SLURM_ARRAY_JOB_ID", "77"),
    ];
    let said = ok(output(run_cmd(&file, &out, &["--shard", "0/4"], &[])));
    assert!(said.contains("shard 0/4 (from --shard)"), "{said}");
    let said = ok(output(run_cmd(&file, &out, &["--shards", "4"], &k8s)));
    assert!(
        said.contains("shard 1/4 (from JOB_COMPLETION_INDEX)"),
        "{said}"
    );
    let said = ok(output(run_cmd(&file, &out, &[], &slurm)));
    assert!(
        said.contains("shard 2/4 (from SLURM_ARRAY_TASK_ID)"),
        "{said}"
    );
    let runs = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("runs")
        .arg(&out)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&runs.stdout).into_owned();
    assert!(
        listed.contains("incomplete (3 of 4 shards complete)"),
        "{listed}"
    );
    assert!(!run_dir.join("cells.parquet").exists());
    ok(output(run_cmd(
        &file,
        &out,
        &["--shard", "3/4", "--no-merge"],
        &[],
    )));
    assert!(!run_dir.join("cells.parquet").exists(), "--no-merge merged");
    ok(merge(&run_dir));

    // Every shard ran some of the work, and the parts add up to the run.
    let mut part_rows = 0;
    for index in 0..4 {
        let part = run_dir.join(format!("cells/shard={index}-of-4/part-0.parquet"));
        let rows = actpatch_report::tables::read_cells(&part).unwrap().len();
        assert!(rows > 0, "shard {index} ran nothing");
        part_rows += rows;
    }
    let merged = actpatch_report::tables::read_cells(&run_dir.join("cells.parquet")).unwrap();
    assert_eq!(part_rows, merged.len());
    assert_same_as_single(&run_dir, &single(&dir));
    let runs = Command::new(env!("CARGO_BIN_EXE_actpatch"))
        .arg("runs")
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&runs.stdout).contains("complete (4 shards merged)"));

    // A shard run again after the merge is a no-op; so is merging again... by the
    // shard (the run is merged).
    let again = ok(output(run_cmd(&file, &out, &["--shard", "2/4"], &[])));
    assert!(again.contains("already merged"), "{again}");
    no_temporary_files(&run_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_shard_is_named_by_merge_and_rerun_to_the_same_tables() {
    let dir = scratch("killed");
    let out = dir.join("sharded");
    let run_dir = out.join("R");
    let file = experiment();
    for shard in ["0/4", "2/4", "3/4"] {
        ok(output(run_cmd(&file, &out, &["--shard", shard], &[])));
    }
    // Shard 1 pauses after its first pair (test hook): kill it there.
    let mut child = run_cmd(
        &file,
        &out,
        &["--shard", "1/4"],
        &[("ACTPATCH_PAUSE_AFTER_PAIR", "1")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let manifest = run_dir.join("shards/1-of-4.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manifest.is_file() {
        assert!(Instant::now() < deadline, "shard 1/4 never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500)); // into its sweep, or paused after a pair
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = reader.join();
    assert!(!run_dir.join("cells/shard=1-of-4/part-0.parquet").exists());

    let said = failed(merge(&run_dir), 1);
    assert!(
        said.contains("1 of 4 shards are missing: 1/4 (started"),
        "{said}"
    );
    assert!(said.contains("not finished"), "{said}");
    assert!(said.contains("Nothing was merged"), "{said}");
    assert!(!run_dir.join("cells.parquet").exists());
    assert!(!run_dir.join("report.md").exists());

    // Re-run, it completes and (the last shard) merges.
    let said = ok(output(run_cmd(&file, &out, &["--shard", "1/4"], &[])));
    assert!(said.contains("every shard is complete: merging"), "{said}");
    assert_same_as_single(&run_dir, &single(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn merge_names_shards_never_started_and_writes_nothing() {
    let dir = scratch("missing");
    let out = dir.join("sharded");
    for shard in ["0/4", "2/4"] {
        ok(output(run_cmd(
            &experiment(),
            &out,
            &["--shard", shard],
            &[],
        )));
    }
    let said = failed(merge(&out.join("R")), 1);
    assert!(
        said.contains("2 of 4 shards are missing: 1/4 (never started); 3/4 (never started)"),
        "{said}"
    );
    assert!(said.contains("sbatch --array=1,3"), "{said}");
    assert!(!out.join("R/cells.parquet").exists());
    // Not a sharded run at all: bad input.
    let said = failed(merge(&dir), 2);
    assert!(said.contains("holds no shard manifests"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_of_another_experiment_or_model_refuse() {
    let dir = scratch("foreign");
    let out = dir.join("sharded");
    let run_dir = out.join("R");
    ok(output(run_cmd(
        &experiment(),
        &out,
        &["--shard", "0/2"],
        &[],
    )));
    // The same experiment, edited: another file hash.
    let edited = edited_copy(&experiment(), &dir.join("edited.toml"), |text| {
        text.replace("every patch kind.", "every patch kind (edited).")
    });
    let said = failed(output(run_cmd(&edited, &out, &["--shard", "1/2"], &[])), 2);
    assert!(said.contains("another experiment file"), "{said}");
    assert!(!run_dir.join("cells/shard=1-of-2").exists());
    assert!(!run_dir.join("shards/1-of-2.json").exists());
    // Another model for the same file: refused once the model is loaded.
    let llama = repo().join("tests/fixtures/tiny-llama");
    let llama = llama.to_str().unwrap();
    let said = failed(
        output(run_cmd(
            &experiment(),
            &out,
            &["--shard", "1/2", "--model-path", llama],
            &[],
        )),
        2,
    );
    assert!(said.contains("used another model"), "{said}");
    assert!(!run_dir.join("shards/1-of-2.json").exists());
    // Another shard count.
    let said = failed(
        output(run_cmd(&experiment(), &out, &["--shard", "1/3"], &[])),
        2,
    );
    assert!(said.contains("is one of 3 shards, not of 2"), "{said}");

    // A shard of the edited file, written elsewhere and moved in: merge refuses.
    let stray = dir.join("stray");
    ok(output(run_cmd(&edited, &stray, &["--shard", "1/2"], &[])));
    std::fs::rename(
        stray.join("R/shards/1-of-2.json"),
        run_dir.join("shards/1-of-2.json"),
    )
    .unwrap();
    std::fs::create_dir_all(run_dir.join("cells/shard=1-of-2")).unwrap();
    std::fs::rename(
        stray.join("R/cells/shard=1-of-2/part-0.parquet"),
        run_dir.join("cells/shard=1-of-2/part-0.parquet"),
    )
    .unwrap();
    let said = failed(merge(&run_dir), 2);
    assert!(said.contains("shard 1/2 ran"), "{said}");
    assert!(said.contains("another experiment file"), "{said}");
    assert!(!run_dir.join("cells.parquet").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_processes_given_the_same_shard_leave_whole_files() {
    let dir = scratch("twice");
    let out = dir.join("sharded");
    let run_dir = out.join("R");
    let file = experiment();
    ok(output(run_cmd(&file, &out, &["--shard", "0/4"], &[])));
    ok(output(run_cmd(&file, &out, &["--shard", "3/4"], &[])));
    // Shards 1 and 2 each twice, all four at once; the last to finish merges.
    let children: Vec<_> = ["1/4", "2/4", "1/4", "2/4"]
        .iter()
        .map(|shard| {
            run_cmd(&file, &out, &["--shard", shard], &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        ok(child.wait_with_output().unwrap());
    }
    no_temporary_files(&run_dir);
    if !run_dir.join("cells.parquet").exists() {
        // Every finisher saw another merging: merge by hand.
        ok(merge(&run_dir));
    }
    ok(merge(&run_dir)); // merging again rewrites the same tables
    assert_same_as_single(&run_dir, &single(&dir));
    // A complete shard run again does nothing.
    let part = run_dir.join("cells/shard=0-of-4/part-0.parquet");
    let before = std::fs::metadata(&part).unwrap().modified().unwrap();
    let _ = std::fs::remove_file(run_dir.join("manifest.json"));
    let said = ok(output(run_cmd(
        &file,
        &out,
        &["--shard", "0/4", "--no-merge"],
        &[],
    )));
    assert!(
        said.contains("shard 0/4 of") && said.contains("already complete"),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(&part).unwrap().modified().unwrap(),
        before
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn path_kinds_refuse_to_shard_before_anything_is_written() {
    let dir = scratch("paths");
    let out = dir.join("sharded");
    let paths = repo().join("tests/fixtures/experiments/tiny_paths.toml");
    let said = failed(output(run_cmd(&paths, &out, &["--shard", "1/2"], &[])), 2);
    assert!(
        said.contains("path patching cannot be sharded") && said.contains("without --shard"),
        "{said}"
    );
    // The same refusal when the shard comes from a Slurm array task.
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "0"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "1"),
        ("SLURM_ARRAY_JOB_ID", "7"),
    ];
    let said = failed(output(run_cmd(&paths, &out, &[], &slurm)), 2);
    assert!(said.contains("SLURM_ARRAY_TASK_ID"), "{said}");
    assert!(!out.join("R").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
