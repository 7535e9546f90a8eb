//! A clean/corrupted prompt pair: its tokens, answers and position alignment, and its
//! two unpatched runs (the baselines every patched run is normalized by).

use actpatch_metrics::{Answers, Baseline};
use actpatch_model::HookedTransformer;
use candle_core::Tensor;

use crate::{Align, Direction, PairRuns, PatchingError, PositionMap, Result};

/// A clean/corrupted prompt pair, tokenized, with its two answers and how its
/// positions align.
#[derive(Debug, Clone)]
pub struct Pair {
    pub clean_tokens: Vec<u32>,
    pub corrupted_tokens: Vec<u32>,
    pub answers: Answers,
    /// Corrupted position ← clean position (the denoising direction's map).
    pub alignment: PositionMap,
}

impl Pair {
    /// Tokenizes both prompts with BOS prepended (as TransformerLens's `to_tokens`),
    /// checks that each answer is one token, and aligns the positions: equal token
    /// lengths under [`Align::Strict`], else as `align` says (BOS onto BOS).
    pub fn from_prompts(
        model: &HookedTransformer,
        clean: &str,
        corrupted: &str,
        [correct, incorrect]: [&str; 2],
        align: Align,
    ) -> Result<Pair> {
        let clean_tokens = model.to_tokens(clean, true)?;
        let corrupted_tokens = model.to_tokens(corrupted, true)?;
        let answers = Answers {
            correct: model.to_single_token(correct)?,
            incorrect: model.to_single_token(incorrect)?,
        };
        let (n_clean, n_corrupted) = (clean_tokens.len(), corrupted_tokens.len());
        let alignment = PositionMap::aligned(align, n_clean, n_corrupted, true).ok_or(
            PatchingError::UnequalLengths {
                n_clean,
                n_corrupted,
            },
        )?;
        Ok(Pair {
            clean_tokens,
            corrupted_tokens,
            answers,
            alignment,
        })
    }

    /// The tokens of the run `direction` patches.
    pub fn target_tokens(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Denoising => &self.corrupted_tokens,
            Direction::Noising => &self.clean_tokens,
        }
    }

    /// The tokens of the run whose activations `direction` patches in.
    pub fn source_tokens(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Denoising => &self.clean_tokens,
            Direction::Noising => &self.corrupted_tokens,
        }
    }

    /// Target position ← source position, for `direction`.
    pub fn map(&self, direction: Direction) -> PositionMap {
        match direction {
            Direction::Denoising => self.alignment.clone(),
            Direction::Noising => self.alignment.inverse(),
        }
    }

    /// The clean-prompt position that target position `position` stands for: the
    /// clean position patched into it (denoising), or itself (noising).
    pub fn clean_position(&self, direction: Direction, position: usize) -> Option<usize> {
        match direction {
            Direction::Denoising => self.alignment.source_of.get(position).copied().flatten(),
            Direction::Noising => (position < self.clean_tokens.len()).then_some(position),
        }
    }

    /// Runs both prompts unpatched.
    pub fn baselines(&self, model: &HookedTransformer) -> Result<Baselines> {
        Baselines::compute(
            model,
            &self.clean_tokens,
            &self.corrupted_tokens,
            self.answers,
        )
    }
}

/// What the two unpatched runs of a pair give: their logit differences and the clean
/// next-token distribution.
#[derive(Debug, Clone)]
pub struct Baselines {
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
    /// Clean next-token log-probabilities `[d_vocab]` (f64), for the KL divergence.
    pub clean_log_probs: Tensor,
}

impl Baselines {
    /// Runs the clean and the corrupted prompt unpatched (as one batch of two rows when
    /// they have one length): the passes of [`PairRuns`], whose runs the sweeps
    /// continue from, so a sweep's no-op cells reproduce these baselines bit for bit.
    pub fn compute(
        model: &HookedTransformer,
        clean_tokens: &[u32],
        corrupted_tokens: &[u32],
        answers: Answers,
    ) -> Result<Baselines> {
        PairRuns::new(model, clean_tokens, corrupted_tokens, &[])?.baselines(answers)
    }

    /// The normalization of patched logit differences; an error when the two runs'
    /// logit differences are equal or not finite.
    pub fn baseline(&self) -> Result<Baseline> {
        Ok(Baseline::new(
            self.clean_logit_diff,
            self.corrupted_logit_diff,
        )?)
    }
}
