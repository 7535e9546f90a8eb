//! Gaussian-noise pairs (`corruption = "gaussian"`): the run's noise level (computed
//! once from the model's embedding matrix), and what validation finds out about a
//! pair ([`GaussianPlan`]; the validation itself is in `validate_gaussian.rs`).

use std::ops::Range;

use actpatch_model::HookedTransformer;
use actpatch_patching::gaussian::{
    embedding_std, AnswerScore, GaussianSpec, NoiseLevel, TraceMetric,
};

use crate::experiment::Experiment;
use crate::RunnerError;

/// The run's noise: the spec every Gaussian pair is traced with (ν resolved), and
/// where ν came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseSetup {
    /// `[corruption]` with ν given outright ([`NoiseLevel::Absolute`]).
    pub spec: GaussianSpec,
    /// The standard deviation of the token embedding matrix's entries.
    pub embedding_std: f64,
    /// ν.
    pub scale: f64,
}

impl NoiseSetup {
    /// The noise of `experiment` on `model`; `None` when no pair is Gaussian.
    pub fn of(
        model: &HookedTransformer,
        experiment: &Experiment,
    ) -> Result<Option<NoiseSetup>, RunnerError> {
        if !experiment.has_gaussian() {
            return Ok(None);
        }
        let mut spec = experiment.corruption.gaussian();
        let std = embedding_std(model).map_err(RunnerError::compute(
            "measuring the embedding matrix's standard deviation".to_string(),
        ))?;
        let scale = match spec.noise {
            NoiseLevel::EmbeddingStds(multiple) => multiple * std,
            NoiseLevel::Absolute(scale) => scale,
        };
        spec.noise = NoiseLevel::Absolute(scale);
        Ok(Some(NoiseSetup {
            spec,
            embedding_std: std,
            scale,
        }))
    }
}

/// What validation found out about a Gaussian-noise pair.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianPlan {
    pub answer: u32,
    /// The noised positions: the tokens that overlap `subject`.
    pub subject: Range<usize>,
    pub metric: TraceMetric,
    /// The noise it is traced with.
    pub noise: NoiseSetup,
    /// Scores of the clean run and the noised runs (mean over the draws); `None` when
    /// the answer is not one token.
    pub clean: AnswerScore,
    pub corrupted: AnswerScore,
    /// Whether the scores were computed (the answer is one token).
    pub scored: bool,
}

impl GaussianPlan {
    /// How figures name the metric: `p(answer)` or `logit(answer)`.
    pub fn metric_label(&self) -> &'static str {
        match self.metric {
            TraceMetric::Prob => "p(answer)",
            TraceMetric::Logit => "logit(answer)",
        }
    }

    /// What a figure title adds for cells of `kind`: the noise, and the window where
    /// one applies.
    pub fn title_note(&self, kind: actpatch_patching::PatchKind) -> String {
        let window = self.noise.spec.window_of(kind);
        let mut note = format!("subject noised, {}", self.metric_label());
        if window > 1 {
            note.push_str(&format!(", window {window}"));
        }
        note
    }

    /// The metric on the clean and on the noised runs, when computed.
    pub fn baselines(&self) -> Option<(f64, f64)> {
        self.scored
            .then_some((self.clean.value, self.corrupted.value))
    }
}

/// A number in 4 significant digits (probabilities can be tiny).
pub fn short(value: f64) -> String {
    match value.abs() {
        v if v == 0.0 || (1e-3..1e4).contains(&v) => format!("{value:.4}"),
        _ => format!("{value:.3e}"),
    }
}
