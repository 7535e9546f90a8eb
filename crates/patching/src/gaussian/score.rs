//! What a causal trace reads from a run's next-token logits: the clean answer's
//! probability (or logit), and the KL divergence from the clean run.

use actpatch_metrics::token_stats;
use candle_core::Tensor;
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

/// The scores of next-token logits `[rows, d_vocab]` (in f64, [`token_stats`]).
pub(crate) fn scores(
    logits: &Tensor,
    answer: u32,
    clean_log_probs: &Tensor,
    metric: TraceMetric,
) -> Result<Vec<AnswerScore>> {
    Ok((token_stats(logits, answer, clean_log_probs)?.into_iter())
        .map(|stats| {
            let prob = stats.log_prob.exp();
            AnswerScore {
                value: match metric {
                    TraceMetric::Prob => prob,
                    TraceMetric::Logit => stats.logit,
                },
                prob,
                kl: stats.kl_div,
            }
        })
        .collect())
}
