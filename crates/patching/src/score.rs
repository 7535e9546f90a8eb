//! Scoring patched runs: the metrics of their next-token logits against the pair's
//! baseline.

use actpatch_hooks::{Hooks, Patch};
use actpatch_metrics::{cell_metrics, logit_diff_metrics, Answers, Baseline, CellMetrics};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::Tensor;
use serde::Deserialize;

use crate::Result;

/// Rows unembedded at once: the full-vocabulary logits of 192 rows of a 50k-token
/// vocabulary are 39 MB, and the product is already near the machine's peak.
pub const UNEMBED_ROWS: usize = 192;

/// Which metrics a sweep computes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricSet {
    /// Logit difference, normalized, log-prob difference, p(correct), KL from clean.
    #[default]
    All,
    /// The logit-difference metrics only: two columns of the unembedding per cell.
    LogitDiff,
}

/// How a sweep scores a patched run: the pair's answers, baseline and clean
/// distribution, and which metrics to compute.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    pub answers: Answers,
    pub baseline: Baseline,
    /// Clean next-token log-probabilities `[d_vocab]`.
    pub clean_log_probs: &'a Tensor,
    pub metrics: MetricSet,
}

impl Scorer<'_> {
    /// The metrics from the logits `logits_for(readout)` produces: the whole
    /// vocabulary, or only the two answer columns when the metric set allows.
    fn score_with(
        &self,
        logits_for: impl FnOnce(Readout<'_>) -> Result<Tensor>,
    ) -> Result<Vec<CellMetrics>> {
        let answers = [self.answers.correct, self.answers.incorrect];
        match self.metrics {
            MetricSet::All => {
                let logits = logits_for(Readout::LastPosition)?; // [rows, d_vocab]
                self.score_logits(&logits)
            }
            MetricSet::LogitDiff => {
                let logits = logits_for(Readout::LastPositionColumns(&answers))?; // [rows, 2]
                Ok(logit_diff_metrics(&logits, &self.baseline)?)
            }
        }
    }

    /// The metrics of next-token logits `[rows, d_vocab]`, with the distribution
    /// metrics left out under [`MetricSet::LogitDiff`].
    pub fn score_logits(&self, logits: &Tensor) -> Result<Vec<CellMetrics>> {
        let mut metrics = cell_metrics(logits, self.answers, &self.baseline, self.clean_log_probs)?;
        if self.metrics == MetricSet::LogitDiff {
            for m in &mut metrics {
                (m.prob_correct, m.kl_div, m.logprob_diff) = (None, None, m.logit_diff);
            }
        }
        Ok(metrics)
    }

    /// The metrics of final residual streams `resid` `[rows, len, d_model]` (the last
    /// position is read), unembedded [`UNEMBED_ROWS`] rows at a time.
    pub fn score_residual(
        &self,
        model: &HookedTransformer,
        resid: &Tensor,
    ) -> Result<Vec<CellMetrics>> {
        let rows = resid.dim(0)?;
        let mut metrics = Vec::with_capacity(rows);
        for first in (0..rows).step_by(UNEMBED_ROWS) {
            let chunk = resid.narrow(0, first, UNEMBED_ROWS.min(rows - first))?;
            metrics.extend(
                self.score_with(|readout| {
                    Ok(model.readout(&chunk, &mut Hooks::none(), readout)?)
                })?,
            );
        }
        Ok(metrics)
    }

    /// The metrics of full patched forward passes of `rows`.
    pub fn score_run(
        &self,
        model: &HookedTransformer,
        rows: &[Vec<u32>],
        patches: &[Patch],
    ) -> Result<Vec<CellMetrics>> {
        self.score_with(|readout| Ok(model.run_with_patches(rows, patches, readout)?))
    }
}
