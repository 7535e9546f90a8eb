//! Per-pair results written as each pair finishes, so an interrupted run can be
//! resumed: `<run dir>/partial/pair-NNNN.parquet`, removed once the run completes.

use std::path::{Path, PathBuf};

use actpatch_metrics::CellMetrics;
use actpatch_report::CellRow;

use crate::sweep::{CellIndex, CellResult, PatchKind};
use crate::RunnerError;

pub fn partial_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("partial")
}

/// Where pair `index`'s finished cells are kept until the run completes.
pub fn partial_path(run_dir: &Path, index: usize) -> PathBuf {
    partial_dir(run_dir).join(format!("pair-{index:04}.parquet"))
}

/// Cell results from rows read back from a partial table.
pub fn results_from_rows(rows: &[CellRow], path: &Path) -> Result<Vec<CellResult>, RunnerError> {
    rows.iter()
        .map(|row| {
            let kind = PatchKind::from_name(&row.kind).ok_or_else(|| {
                RunnerError::Input(format!(
                    "{} holds an unknown patch kind `{}`: the partial results are damaged; start a new run",
                    path.display(),
                    row.kind
                ))
            })?;
            Ok(CellResult {
                kind,
                index: CellIndex {
                    layer: row.layer as usize,
                    head: row.head.map(|h| h as usize),
                    position: row.position.map(|p| p as usize),
                },
                metrics: CellMetrics {
                    logit_diff: row.patched_logit_diff,
                    normalized_logit_diff: row.normalized_logit_diff,
                    logprob_diff: row.logprob_diff,
                    prob_correct: row.prob_correct,
                    kl_div: row.kl_div,
                },
            })
        })
        .collect()
}

/// Test hook: `ACTPATCH_PAUSE_AFTER_PAIR=N` makes a run sleep after its N-th swept
/// pair is saved, so a test can kill it at a known point. Unset in normal use.
pub fn pause_point(pairs_done: usize) {
    let wanted = std::env::var("ACTPATCH_PAUSE_AFTER_PAIR")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if wanted == Some(pairs_done) {
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
}
