//! Per-pair results written as each pair finishes, so an interrupted or failed run
//! can be resumed: `<run dir>/partial/pair-NNNN.parquet`, removed once the run
//! completes.

use std::path::{Path, PathBuf};

use actpatch_patching::{
    Baseline, CellIndex, CellMetrics, CellResult, Direction, Method, PatchKind,
};
use actpatch_report::CellRow;

use crate::outputs::PathResults;
use crate::RunnerError;

pub(crate) fn partial_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("partial")
}

/// Where pair `index`'s finished cells are kept until the run completes.
pub(crate) fn partial_path(run_dir: &Path, index: usize) -> PathBuf {
    partial_dir(run_dir).join(format!("pair-{index:04}.parquet"))
}

/// Cell results from rows read back from a partial table of the pair whose baseline is
/// `baseline`: the plain kinds' cells, and the path-patching cells grouped by receiver
/// set (in the order first seen).
pub(crate) fn results_from_rows(
    rows: &[CellRow],
    path: &Path,
    baseline: Option<Baseline>,
) -> Result<(Vec<CellResult>, Vec<PathResults>), RunnerError> {
    let mut results = Vec::new();
    let mut paths: Vec<PathResults> = Vec::new();
    for (row, result) in rows.iter().zip(cell_results(rows, path, baseline)?) {
        match &row.receivers {
            None => results.push(result),
            Some(label) => match paths.iter_mut().find(|p| &p.label == label) {
                Some(entry) => entry.results.push(result),
                None => paths.push(PathResults {
                    label: label.clone(),
                    results: vec![result],
                }),
            },
        }
    }
    Ok((results, paths))
}

fn cell_results(
    rows: &[CellRow],
    path: &Path,
    baseline: Option<Baseline>,
) -> Result<Vec<CellResult>, RunnerError> {
    let damaged = |what: &str, value: &str| {
        RunnerError::Input(format!(
            "{} holds an unknown {what} `{value}`: the partial results are damaged; start a new run",
            path.display()
        ))
    };
    rows.iter()
        .map(|row| {
            let kind =
                PatchKind::from_name(&row.kind).ok_or_else(|| damaged("patch kind", &row.kind))?;
            let direction = Direction::from_name(&row.direction)
                .ok_or_else(|| damaged("direction", &row.direction))?;
            let method =
                Method::from_name(&row.method).ok_or_else(|| damaged("method", &row.method))?;
            // A Gaussian-noise pair's metric, which its row does not hold as such, from
            // its normalized value.
            let metric = || {
                baseline.map(|b| {
                    b.corrupted_logit_diff
                        + row.normalized_logit_diff * (b.clean_logit_diff - b.corrupted_logit_diff)
                })
            };
            let patched = (row.patched_logit_diff)
                .or_else(metric)
                .ok_or_else(|| damaged("value", "null patched_logit_diff"))?;
            Ok(CellResult {
                direction,
                kind,
                method,
                index: CellIndex {
                    layer: row.layer as usize,
                    head: row.head.map(|h| h as usize),
                    position: row.position.map(|p| p as usize),
                    src: row.src_position.map(|p| p as usize),
                },
                metrics: CellMetrics {
                    logit_diff: patched,
                    normalized_logit_diff: row.normalized_logit_diff,
                    logprob_diff: row.logprob_diff.unwrap_or(patched),
                    prob_correct: row.prob_correct,
                    kl_div: row.kl_div,
                },
            })
        })
        .collect()
}

/// The test hooks' variables that name a pair ([`test_point`]).
#[cfg(feature = "test-hooks")]
const PAUSE_AFTER: &str = "ACTPATCH_PAUSE_AFTER_PAIR";
#[cfg(feature = "test-hooks")]
const FAIL_AFTER: &str = "ACTPATCH_FAIL_AFTER_PAIR";

/// Whether a test hook names a pair to stop after (pairs are then swept one at a
/// time, so that "after the N-th pair" is one point of the run).
#[cfg(feature = "test-hooks")]
pub(crate) fn test_points_set() -> bool {
    [PAUSE_AFTER, FAIL_AFTER]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn test_points_set() -> bool {
    false
}

/// Test hooks, compiled only with the `test-hooks` feature (the runner's own tests
/// enable it through their dev-dependency on this crate with the feature):
///
/// - `ACTPATCH_PAUSE_AFTER_PAIR=N`: after the N-th swept pair is saved, the run waits
///   until the file named by `ACTPATCH_CONTINUE_FILE` exists (or 120 s pass), so a
///   test can kill it, or change its folder, at a known point;
/// - `ACTPATCH_FAIL_AFTER_PAIR=N`: after the N-th swept pair is saved, the run fails
///   as a computation failure would.
#[cfg(feature = "test-hooks")]
pub(crate) fn test_point(pairs_done: usize) -> Result<(), RunnerError> {
    let after = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            == Some(pairs_done)
    };
    if after(PAUSE_AFTER) {
        let resume = std::env::var_os("ACTPATCH_CONTINUE_FILE").map(PathBuf::from);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline && !resume.as_ref().is_some_and(|f| f.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if after(FAIL_AFTER) {
        return Err(RunnerError::Compute {
            during: format!("sweeping pair {}", pairs_done + 1),
            source: Box::new(actpatch_patching::PatchingError::Tensor(
                candle_core::Error::Msg("simulated failure (ACTPATCH_FAIL_AFTER_PAIR)".into()),
            )),
        });
    }
    Ok(())
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn test_point(_pairs_done: usize) -> Result<(), RunnerError> {
    Ok(())
}
