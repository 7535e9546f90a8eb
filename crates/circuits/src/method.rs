//! The edge-scoring methods and ablations an experiment can ask for.

use std::fmt;

use crate::{CircuitError, Result};

/// How edges are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Edge attribution patching: `(ablated − clean sender output) · ∂metric/∂(receiver
    /// input)`, the gradient on the clean run (Syed et al. 2023).
    Eap,
    /// EAP with the gradient averaged over runs whose input embeddings are
    /// `corrupted + k/steps · (clean − corrupted)`, `k = 0 … steps−1` (the library's range).
    EapIgInputs { steps: usize },
    /// For each sender group (the input, one layer's heads, one MLP) in turn, its output
    /// interpolated `ablated + k/steps · (clean − ablated)`, `k = 1 … steps`, and only that
    /// group's edges scored with the averaged gradient; one step equals `Eap`.
    EapIgActivations { steps: usize },
    /// The gradient averaged over the clean and the corrupted run.
    CleanCorrupted,
    /// The true effect of each edge: the clean run in which that one receiver input gets
    /// the ablated sender output in place of the clean one.
    Exact,
}

/// What an ablated sender writes in place of its clean output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ablation {
    /// The corrupted run's output (interchange intervention).
    #[default]
    Patching,
    /// Zero.
    Zero,
    /// Its mean over the run's corrupted prompts, per position.
    Mean,
}

pub const METHODS: &str =
    "\"eap\", \"eap-ig-inputs\", \"eap-ig-activations\", \"clean-corrupted\", \"exact\"";
pub const ABLATIONS: &str = "\"patching\", \"zero\", \"mean\"";
pub const DEFAULT_STEPS: usize = 5;

impl Method {
    /// A method by its experiment-file name, with `steps` for the IG methods.
    pub fn parse(name: &str, steps: usize) -> Result<Method> {
        let ig = |make: fn(usize) -> Method| match steps {
            0 => Err(CircuitError::ZeroSteps),
            steps => Ok(make(steps)),
        };
        match name {
            "eap" => Ok(Method::Eap),
            "eap-ig-inputs" => ig(|steps| Method::EapIgInputs { steps }),
            "eap-ig-activations" => ig(|steps| Method::EapIgActivations { steps }),
            "clean-corrupted" => Ok(Method::CleanCorrupted),
            "exact" => Ok(Method::Exact),
            other => Err(CircuitError::UnknownMethod {
                given: other.to_string(),
                allowed: METHODS,
            }),
        }
    }

    /// The experiment-file name (`eap-ig-inputs`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Eap => "eap",
            Method::EapIgInputs { .. } => "eap-ig-inputs",
            Method::EapIgActivations { .. } => "eap-ig-activations",
            Method::CleanCorrupted => "clean-corrupted",
            Method::Exact => "exact",
        }
    }

    /// Integration steps (0 for the methods without).
    pub fn steps(self) -> usize {
        match self {
            Method::EapIgInputs { steps } | Method::EapIgActivations { steps } => steps,
            _ => 0,
        }
    }

    /// Whether `ablation` applies (the input-interpolating methods are defined between
    /// the clean and the corrupted run only).
    pub fn check_ablation(self, ablation: Ablation) -> Result<()> {
        let fixed = matches!(self, Method::EapIgInputs { .. } | Method::CleanCorrupted);
        if fixed && ablation != Ablation::Patching {
            return Err(CircuitError::AblationNotForMethod {
                method: self.name().to_string(),
                ablation: ablation.name(),
                applies: "eap, eap-ig-activations and exact",
            });
        }
        Ok(())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.steps() {
            0 => write!(f, "{}", self.name()),
            steps => write!(f, "{}({steps})", self.name()),
        }
    }
}

impl Ablation {
    pub fn parse(name: &str) -> Result<Ablation> {
        match name {
            "patching" => Ok(Ablation::Patching),
            "zero" => Ok(Ablation::Zero),
            "mean" => Ok(Ablation::Mean),
            other => Err(CircuitError::UnknownAblation {
                given: other.to_string(),
                allowed: ABLATIONS,
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ablation::Patching => "patching",
            Ablation::Zero => "zero",
            Ablation::Mean => "mean",
        }
    }
}
