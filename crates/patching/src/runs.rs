//! Both unpatched runs of a pair, once: what validation reads (the baselines) and what
//! every method continues from in either direction (the source run's activations at
//! the swept sites, the target run's block inputs, keys and values).

use actpatch_metrics::{log_softmax, logit_diff, Answers};
use actpatch_model::{BaseRun, HookedTransformer};

use crate::{cells::hook_points, Baselines, Direction, PatchKind, Result};

/// The clean and the corrupted prompt, each run once unpatched, caching every layer's
/// block input, keys and values and the sites of the swept kinds: one pass per prompt
/// serves the baselines and both directions of every kind.
#[derive(Clone)]
pub struct PairRuns {
    pub clean: BaseRun,
    pub corrupted: BaseRun,
}

impl PairRuns {
    /// Runs both prompts, caching the sites of `kinds` too; prompts of one length as
    /// one batch of two rows.
    pub fn new(
        model: &HookedTransformer,
        clean_tokens: &[u32],
        corrupted_tokens: &[u32],
        kinds: &[PatchKind],
    ) -> Result<PairRuns> {
        let points = hook_points(kinds, model.dims().n_layers);
        if clean_tokens.len() != corrupted_tokens.len() {
            return Ok(PairRuns {
                clean: model.base_run(clean_tokens, points.iter().copied())?,
                corrupted: model.base_run(corrupted_tokens, points)?,
            });
        }
        let runs = model.base_runs(&[clean_tokens, corrupted_tokens], points)?;
        let [clean, corrupted]: [BaseRun; 2] = runs.try_into().map_err(|_| {
            candle_core::Error::Msg("a batch of two prompts gave another number of runs".into())
        })?;
        Ok(PairRuns { clean, corrupted })
    }

    /// The baselines of `answers`: both runs' logit differences and the clean
    /// next-token distribution.
    pub fn baselines(&self, answers: Answers) -> Result<Baselines> {
        let (clean, corrupted) = (self.clean.logits(), self.corrupted.logits()); // [1, d_vocab]
        Ok(Baselines {
            clean_logit_diff: logit_diff(clean, answers)?[0],
            corrupted_logit_diff: logit_diff(corrupted, answers)?[0],
            clean_log_probs: log_softmax(clean)?.squeeze(0)?,
        })
    }

    /// The run `direction` patches.
    pub fn target(&self, direction: Direction) -> &BaseRun {
        match direction {
            Direction::Denoising => &self.corrupted,
            Direction::Noising => &self.clean,
        }
    }

    /// The run whose activations `direction` patches in.
    pub fn source(&self, direction: Direction) -> &BaseRun {
        match direction {
            Direction::Denoising => &self.clean,
            Direction::Noising => &self.corrupted,
        }
    }

    /// Bytes the two runs hold (their caches and logits).
    pub fn bytes(&self) -> usize {
        [&self.clean, &self.corrupted]
            .iter()
            .map(|run| {
                let cached: usize = run.cache().iter().map(|(_, t)| t.elem_count()).sum();
                4 * (cached + run.logits().elem_count())
            })
            .sum()
    }

    /// Whether both runs cached every site of `kinds`.
    pub fn has(&self, kinds: &[PatchKind], n_layers: usize) -> bool {
        hook_points(kinds, n_layers)
            .into_iter()
            .all(|p| self.clean.cache().contains(p) && self.corrupted.cache().contains(p))
    }
}
