//! Pairs swept at once (one per core on the CPU) give the tables that pairs swept one
//! after another give: the same rows in the same order, the same numbers.

use std::path::{Path, PathBuf};
use std::process::Command;

use actpatch_report::tables::read_cells;
use actpatch_report::CellRow;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cells of one run of the fixture experiment into `out`, and what it said of how
/// it swept its pairs; `one_at_a_time` sets a test hook that is never reached (the run
/// has 2 pairs), which sweeps pairs in order.
fn cells_of_run(out: &Path, one_at_a_time: bool) -> (Vec<CellRow>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_actpatch"));
    command
        .arg("run")
        .arg(repo().join("tests/fixtures/experiments/tiny.toml"))
        .arg("--out")
        .arg(out);
    if one_at_a_time {
        command.env("ACTPATCH_FAIL_AFTER_PAIR", "1000");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let run_dir = PathBuf::from(stdout.lines().last().unwrap().trim());
    let said = String::from_utf8_lossy(&output.stderr);
    let how = said
        .lines()
        .find(|line| line.starts_with("sweeping 2 pairs ("))
        .unwrap_or_else(|| panic!("no `sweeping` line in:\n{said}"))
        .to_string();
    (read_cells(&run_dir.join("cells.parquet")).unwrap(), how)
}

#[test]
fn pairs_at_once_equal_pairs_in_order() {
    let scratch = std::env::temp_dir().join(format!("actpatch-at-once-{}", std::process::id()));
    let (at_once, said_at_once) = cells_of_run(&scratch.join("at-once"), false);
    let (in_order, said_in_order) = cells_of_run(&scratch.join("in-order"), true);
    // The two runs took the two paths (one core sweeps one pair at a time either way).
    assert!(said_in_order.contains("(one at a time)"), "{said_in_order}");
    if rayon::current_num_threads() > 1 {
        assert!(said_at_once.contains("(2 at once)"), "{said_at_once}");
    }
    assert_eq!(at_once.len(), in_order.len());
    assert!(at_once.len() > 100, "{} cells", at_once.len());
    let pairs: Vec<&str> = at_once.iter().map(|c| c.pair.as_str()).collect();
    assert!(pairs.contains(&"landmarks") && pairs.contains(&"capital"));
    for (a, b) in at_once.iter().zip(&in_order) {
        let key = |c: &CellRow| {
            (
                c.pair.clone(),
                c.kind.clone(),
                c.direction.clone(),
                c.layer,
                c.head,
                c.position,
            )
        };
        assert_eq!(key(a), key(b));
        let diff = (a.normalized_logit_diff - b.normalized_logit_diff).abs();
        assert!(
            diff < 1e-6,
            "{:?}: {} vs {}",
            key(a),
            a.normalized_logit_diff,
            b.normalized_logit_diff
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
