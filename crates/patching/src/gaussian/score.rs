//! What a causal trace reads from a run's next-token logits: the clean answer's
//! probability (or logit), and the KL divergence from the clean run.

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

use crate::Result;

/// What a trace measures on each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceMetric {
    /// p(answer), as ROME's figures.
    #[default]
    Prob,
    /// The answer's logit.
    Logit,
}

impl TraceMetric {
    /// The name in experiment files and tables.
    pub fn name(self) -> &'static str {
        match self {
            TraceMetric::Prob => "prob",
            TraceMetric::Logit => "logit",
        }
    }
}

/// A run's scores (or their mean over draws).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AnswerScore {
    /// The metric: p(answer) or its logit.
    pub value: f64,
    /// p(answer).
    pub prob: f64,
    /// KL(p_clean ‖ p) of the next-token distribution, in nats.
    pub kl: f64,
}

impl std::ops::Add for AnswerScore {
    type Output = AnswerScore;

    /// The element-wise sum.
    fn add(self, other: AnswerScore) -> AnswerScore {
        AnswerScore {
            value: self.value + other.value,
            prob: self.prob + other.prob,
            kl: self.kl + other.kl,
        }
    }
}

impl AnswerScore {
    /// Every score times `factor`.
    pub fn scaled(self, factor: f64) -> AnswerScore {
        AnswerScore {
            value: self.value * factor,
            prob: self.prob * factor,
            kl: self.kl * factor,
        }
    }

    /// The mean of `scores` (zero for none).
    pub fn mean(scores: &[AnswerScore]) -> AnswerScore {
        let sum = (scores.iter()).fold(AnswerScore::default(), |acc, s| acc + *s);
        sum.scaled(1.0 / scores.len().max(1) as f64)
    }
}

/// The scores of next-token logits `[rows, d_vocab]`, in f64: log p(t) = logit(t) −
/// lse, KL(p_clean ‖ p) = Σ p_clean log p_clean − (p_clean · logits − lse).
pub(crate) fn scores(
    logits: &Tensor,
    answer: u32,
    clean_log_probs: &Tensor,
    metric: TraceMetric,
) -> Result<Vec<AnswerScore>> {
    let logits = logits.to_dtype(DType::F64)?; // [rows, d_vocab]
    let max = logits.max_keepdim(D::Minus1)?; // [rows, 1]
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?; // [rows, 1]
    let clean_log_probs = clean_log_probs.to_dtype(DType::F64)?; // [d_vocab]
    let clean_probs = clean_log_probs.exp()?;
    let clean_neg_entropy = (&clean_probs * &clean_log_probs)?
        .sum_all()?
        .to_scalar::<f64>()?;
    let cross: Vec<f64> = logits
        .matmul(&clean_probs.unsqueeze(1)?)? // [rows, 1]
        .flatten_all()?
        .to_vec1()?;
    let lse: Vec<f64> = lse.flatten_all()?.to_vec1()?;
    let picked: Vec<f64> = logits
        .narrow(1, answer as usize, 1)?
        .flatten_all()?
        .to_vec1()?;
    Ok((0..picked.len())
        .map(|row| {
            let prob = (picked[row] - lse[row]).exp();
            AnswerScore {
                value: match metric {
                    TraceMetric::Prob => prob,
                    TraceMetric::Logit => picked[row],
                },
                prob,
                kl: (clean_neg_entropy - cross[row] + lse[row]).max(0.0),
            }
        })
        .collect())
}
