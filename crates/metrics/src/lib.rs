//! Patching metrics on next-token logits.
//!
//! All functions take the logits of the last position, `[batch, d_vocab]`, and return
//! one value per row (a row is one patched run).
//!
//! - logit difference: `logit[correct] - logit[incorrect]`
//! - normalized logit difference: `(ld - ld_corrupted) / (ld_clean - ld_corrupted)`,
//!   0 = the corrupted run, 1 = the clean run (TransformerLens's patching metric)
//! - log-prob difference: `log p(correct) - log p(incorrect)` (equal to the logit
//!   difference: the log-sum-exp cancels; recorded for readers who expect it)
//! - probability of the correct answer: `p(correct)`
//! - KL divergence from the clean distribution: `KL(p_clean || p_patched)`, in nats

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricError {
    #[error("the clean and corrupted logit differences are equal ({clean_logit_diff}): the normalized logit difference divides by zero. Choose a corruption that changes the answer.")]
    DegenerateBaseline { clean_logit_diff: f64 },

    #[error("the baseline logit differences are not finite (clean {clean}, corrupted {corrupted}): the model produced NaN or infinite logits")]
    NonFinite { clean: f64, corrupted: f64 },

    #[error("answer token id {id} is outside the vocabulary of {vocab} tokens")]
    AnswerOutOfRange { id: u32, vocab: usize },

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, MetricError>;

/// The two answers a pair contrasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answers {
    pub correct: u32,
    pub incorrect: u32,
}

/// The unpatched logit differences of a pair, which normalize the patched ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
}

impl Baseline {
    /// Checks the baseline can normalize: finite and with a non-zero gap.
    pub fn new(clean_logit_diff: f64, corrupted_logit_diff: f64) -> Result<Self> {
        if !clean_logit_diff.is_finite() || !corrupted_logit_diff.is_finite() {
            return Err(MetricError::NonFinite {
                clean: clean_logit_diff,
                corrupted: corrupted_logit_diff,
            });
        }
        if clean_logit_diff == corrupted_logit_diff {
            return Err(MetricError::DegenerateBaseline { clean_logit_diff });
        }
        Ok(Baseline {
            clean_logit_diff,
            corrupted_logit_diff,
        })
    }

    /// `clean - corrupted`
    pub fn gap(&self) -> f64 {
        self.clean_logit_diff - self.corrupted_logit_diff
    }

    /// `(ld - ld_corrupted) / (ld_clean - ld_corrupted)`
    pub fn normalize(&self, logit_diff: f64) -> f64 {
        (logit_diff - self.corrupted_logit_diff) / self.gap()
    }
}

/// Every metric of one patched run. The distribution metrics are `None` when only the
/// answer logits were computed ([`logit_diff_metrics`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellMetrics {
    pub logit_diff: f64,
    pub normalized_logit_diff: f64,
    pub logprob_diff: f64,
    pub prob_correct: Option<f64>,
    pub kl_div: Option<f64>,
}

fn check_answers(logits: &Tensor, answers: Answers) -> Result<()> {
    let vocab = logits.dim(D::Minus1)?;
    for id in [answers.correct, answers.incorrect] {
        if id as usize >= vocab {
            return Err(MetricError::AnswerOutOfRange { id, vocab });
        }
    }
    Ok(())
}

/// `[batch, d_vocab]` → per row `logit[correct] - logit[incorrect]`.
pub fn logit_diff(logits: &Tensor, answers: Answers) -> Result<Vec<f64>> {
    check_answers(logits, answers)?;
    let column =
        |id: u32| -> Result<Tensor> { Ok(logits.narrow(1, id as usize, 1)?.to_dtype(DType::F64)?) };
    let diff = (column(answers.correct)? - column(answers.incorrect)?)?; // [batch, 1], f64
    Ok(diff.flatten_all()?.to_vec1()?)
}

/// `[batch, d_vocab]` → log-probabilities `[batch, d_vocab]`, in f64.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F64)?;
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// What the next-token distribution of one row says about one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenStats {
    pub logit: f64,
    pub log_prob: f64,
    /// KL(p_clean ‖ p) of the whole distribution, nats.
    pub kl_div: f64,
}

/// For each row of `logits` `[batch, d_vocab]`: `token`'s logit and log-probability,
/// and the KL divergence from the clean run's log-probabilities `[d_vocab]` (from
/// [`log_softmax`]).
///
/// Computed in f64: on GPT-2-sized logits (|logit| ~ 100) the log-sum-exp and the
/// cross term are ~100 each, and a KL divergence of 1e-4 is their small difference,
/// which f32 (7 digits) cannot resolve. Each row takes one pass over its logits, rows
/// in parallel ([`actpatch_simd::log_sum_exp_and_dot`], within a few ulp of f64).
pub fn token_stats(
    logits: &Tensor,
    token: u32,
    clean_log_probs: &Tensor,
) -> Result<Vec<TokenStats>> {
    check_answers(
        logits,
        Answers {
            correct: token,
            incorrect: token,
        },
    )?;
    // log p(t) = logit(t) − lse, and
    // KL(p_clean ‖ p) = Σ p_clean log p_clean − (p_clean · logits − lse).
    let clean_log_probs: Vec<f64> = clean_log_probs.to_dtype(DType::F64)?.to_vec1()?; // [d_vocab]
    let clean_probs: Vec<f64> = clean_log_probs.iter().map(|l| l.exp()).collect();
    let clean_neg_entropy: f64 = (clean_probs.iter().zip(&clean_log_probs))
        .map(|(p, l)| p * l)
        .sum();
    let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?; // [batch][d_vocab]
    if rows.first().is_some_and(|r| r.len() != clean_probs.len()) {
        return Err(candle_core::Error::Msg(format!(
            "logits over {} tokens against a clean distribution over {}",
            rows[0].len(),
            clean_probs.len()
        ))
        .into());
    }
    let stats: Vec<(f64, f64)> = rows
        .par_iter()
        .map(|row| actpatch_simd::log_sum_exp_and_dot(row, &clean_probs))
        .collect();
    Ok((rows.iter().zip(stats))
        .map(|(row, (lse, cross))| {
            let logit = row[token as usize] as f64;
            TokenStats {
                logit,
                log_prob: logit - lse,
                kl_div: (clean_neg_entropy - cross + lse).max(0.0),
            }
        })
        .collect())
}

/// Every metric for each row of `logits` `[batch, d_vocab]`, against the pair's
/// baseline and the clean run's log-probabilities `[d_vocab]` (from [`log_softmax`]);
/// the distribution metrics in f64 ([`token_stats`]).
pub fn cell_metrics(
    logits: &Tensor,
    answers: Answers,
    baseline: &Baseline,
    clean_log_probs: &Tensor,
) -> Result<Vec<CellMetrics>> {
    check_answers(logits, answers)?;
    let correct = token_stats(logits, answers.correct, clean_log_probs)?;
    let logit_diffs = logit_diff(logits, answers)?;
    Ok((correct.iter().zip(logit_diffs))
        .map(|(stats, logit_diff)| CellMetrics {
            logit_diff,
            normalized_logit_diff: baseline.normalize(logit_diff),
            logprob_diff: logit_diff,
            prob_correct: Some(stats.log_prob.exp()),
            kl_div: Some(stats.kl_div),
        })
        .collect())
}

/// The logit-difference metrics from the answer logits alone: `answer_logits`
/// `[batch, 2]` holds each row's (correct, incorrect) logits. The log-prob difference
/// equals the logit difference (the log-sum-exp cancels); the distribution metrics
/// are `None`.
pub fn logit_diff_metrics(answer_logits: &Tensor, baseline: &Baseline) -> Result<Vec<CellMetrics>> {
    let diffs = logit_diff(
        answer_logits,
        Answers {
            correct: 0,
            incorrect: 1,
        },
    )?;
    Ok(diffs
        .into_iter()
        .map(|ld| CellMetrics {
            logit_diff: ld,
            normalized_logit_diff: baseline.normalize(ld),
            logprob_diff: ld,
            prob_correct: None,
            kl_div: None,
        })
        .collect())
}

/// The mean of `values`, `None` when empty.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `KL(p_ref || p)` per row from log-probabilities `[batch, d_vocab]` and the
    /// reference's `[d_vocab]`, the direct way.
    fn kl_divergence(log_probs: &Tensor, reference_log_probs: &Tensor) -> Vec<f64> {
        let reference = reference_log_probs.unsqueeze(0).unwrap(); // [1, d_vocab]
        let kl = reference
            .exp()
            .unwrap()
            .broadcast_mul(&reference.broadcast_sub(log_probs).unwrap())
            .unwrap()
            .sum(D::Minus1)
            .unwrap();
        kl.to_vec1().unwrap()
    }

    fn logits() -> Tensor {
        // Two rows over a vocabulary of 4.
        Tensor::new(
            &[[1.0f32, 3.0, 0.0, -1.0], [2.0, 2.0, 1.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap()
    }

    const ANSWERS: Answers = Answers {
        correct: 1,
        incorrect: 0,
    };

    #[test]
    fn logit_diff_by_hand() {
        assert_eq!(logit_diff(&logits(), ANSWERS).unwrap(), vec![2.0, 0.0]);
    }

    #[test]
    fn normalization_maps_corrupted_to_0_and_clean_to_1() {
        let baseline = Baseline::new(2.0, -1.0).unwrap();
        assert_eq!(baseline.normalize(2.0), 1.0);
        assert_eq!(baseline.normalize(-1.0), 0.0);
        assert!((baseline.normalize(0.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn degenerate_and_non_finite_baselines_are_errors() {
        assert!(matches!(
            Baseline::new(1.0, 1.0),
            Err(MetricError::DegenerateBaseline { .. })
        ));
        assert!(matches!(
            Baseline::new(f64::NAN, 1.0),
            Err(MetricError::NonFinite { .. })
        ));
    }

    #[test]
    fn probabilities_and_kl_by_hand() {
        let logits = logits();
        let clean = log_softmax(&logits).unwrap().get(0).unwrap();
        let baseline = Baseline::new(2.0, 0.0).unwrap();
        let m = cell_metrics(&logits, ANSWERS, &baseline, &clean).unwrap();
        // Row 0 is the clean distribution itself: KL 0, normalized 1.
        assert!(m[0].kl_div.unwrap().abs() < 1e-6);
        assert!((m[0].normalized_logit_diff - 1.0).abs() < 1e-12);
        let z: f64 = [1.0f64, 3.0, 0.0, -1.0].iter().map(|v| v.exp()).sum();
        assert!((m[0].prob_correct.unwrap() - 3.0f64.exp() / z).abs() < 1e-6);
        assert!((m[0].logprob_diff - 2.0).abs() < 1e-5);
        // Row 1 by hand.
        let p: Vec<f64> = [1.0f64, 3.0, 0.0, -1.0]
            .iter()
            .map(|v| v.exp() / z)
            .collect();
        let z1: f64 = [2.0f64, 2.0, 1.0, 0.0].iter().map(|v| v.exp()).sum();
        let q: Vec<f64> = [2.0f64, 2.0, 1.0, 0.0]
            .iter()
            .map(|v| v.exp() / z1)
            .collect();
        let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!(
            (m[1].kl_div.unwrap() - kl).abs() < 1e-5,
            "{:?} vs {kl}",
            m[1].kl_div
        );
        assert_eq!(m[1].normalized_logit_diff, 0.0);
    }

    #[test]
    fn kl_from_log_probs_equals_the_one_pass_formula() {
        let logits = logits();
        let log_probs = log_softmax(&logits).unwrap();
        let clean = log_probs.get(0).unwrap();
        let direct = kl_divergence(&log_probs, &clean);
        let baseline = Baseline::new(2.0, -1.0).unwrap();
        let one_pass = cell_metrics(&logits, ANSWERS, &baseline, &clean).unwrap();
        for (d, m) in direct.iter().zip(&one_pass) {
            assert!(
                (d - m.kl_div.unwrap()).abs() < 1e-5,
                "{d} vs {:?}",
                m.kl_div
            );
        }
    }

    #[test]
    fn logit_diff_only_metrics_match_the_full_ones() {
        let logits = logits();
        let clean = log_softmax(&logits).unwrap().get(0).unwrap();
        let baseline = Baseline::new(2.0, -1.0).unwrap();
        let full = cell_metrics(&logits, ANSWERS, &baseline, &clean).unwrap();
        let columns = Tensor::cat(
            &[
                logits.narrow(1, 1, 1).unwrap(),
                logits.narrow(1, 0, 1).unwrap(),
            ],
            1,
        )
        .unwrap();
        let cheap = logit_diff_metrics(&columns, &baseline).unwrap();
        for (f, c) in full.iter().zip(&cheap) {
            assert_eq!(f.logit_diff, c.logit_diff);
            assert_eq!(f.normalized_logit_diff, c.normalized_logit_diff);
            assert!((f.logprob_diff - c.logprob_diff).abs() < 1e-5);
            assert_eq!((c.prob_correct, c.kl_div), (None, None));
        }
    }

    #[test]
    fn answer_out_of_vocabulary_is_an_error() {
        let bad = Answers {
            correct: 9,
            incorrect: 0,
        };
        assert!(matches!(
            logit_diff(&logits(), bad),
            Err(MetricError::AnswerOutOfRange { id: 9, .. })
        ));
    }

    #[test]
    fn mean_of_nothing_is_none() {
        assert_eq!(mean([]), None);
        assert_eq!(mean([1.0, 2.0, 6.0]), Some(3.0));
    }

    /// Deterministic pseudo-random numbers in [-1, 1) (a 64-bit LCG).
    fn uniform(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// KL(p ‖ q) from logits, in plain f64 loops: the reference.
    fn reference_kl(p_logits: &[f64], q_logits: &[f64]) -> f64 {
        let lse = |x: &[f64]| {
            let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
        };
        let (lp, lq) = (lse(p_logits), lse(q_logits));
        p_logits
            .iter()
            .zip(q_logits)
            .map(|(a, b)| (a - lp).exp() * ((a - lp) - (b - lq)))
            .sum()
    }

    #[test]
    fn kl_is_exact_on_gpt2_sized_logits() {
        // GPT-2's vocabulary, logits spread over ±100 with a peak near 100, and a
        // patched distribution a small perturbation away: KL ~ 1e-4.
        let vocab = 50257;
        let clean: Vec<f32> = uniform(1, vocab)
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if i % 997 == 0 {
                    (95.0 + 5.0 * u) as f32
                } else {
                    (60.0 * u) as f32
                }
            })
            .collect();
        let patched: Vec<f32> = clean
            .iter()
            .zip(uniform(2, vocab))
            .map(|(c, u)| c + (0.02 * u) as f32)
            .collect();
        let as_f64 = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
        let want = reference_kl(&as_f64(&clean), &as_f64(&patched));
        assert!((1e-5..1e-3).contains(&want), "reference KL {want}");

        let device = Device::Cpu;
        let clean_t = Tensor::from_vec(clean, (1, vocab), &device).unwrap();
        let patched_t = Tensor::from_vec(patched, (1, vocab), &device).unwrap();
        let clean_log_probs = log_softmax(&clean_t).unwrap().squeeze(0).unwrap();
        let answers = Answers {
            correct: 0,
            incorrect: 1,
        };
        let baseline = Baseline::new(1.0, 0.0).unwrap();
        let got = cell_metrics(&patched_t, answers, &baseline, &clean_log_probs).unwrap()[0]
            .kl_div
            .unwrap();
        assert!(
            (got - want).abs() <= 1e-6,
            "KL {got} vs f64 reference {want}"
        );
        let itself = cell_metrics(&clean_t, answers, &baseline, &clean_log_probs).unwrap()[0]
            .kl_div
            .unwrap();
        assert!(itself <= 1e-9, "KL of the clean run with itself: {itself}");
    }
}
