//! `[circuit]`: edge attribution over the model's edge graph (the EAP-IG library's).

use actpatch_circuits::{Ablation, Method, DEFAULT_STEPS};
use serde::Deserialize;

/// `[circuit]`: which methods score the edges, under which ablation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitSpec {
    /// Any of "eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted",
    /// "exact"; default `["eap-ig-inputs"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Integration steps of the `eap-ig-*` methods (default 5).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// What an ablated sender writes: "patching" (the corrupted run's output, default),
    /// "zero" or "mean" (its mean over the run's corrupted prompts, per position).
    #[serde(default = "default_ablation")]
    pub ablation: String,
    /// Exact effects of the top `exact_top` edges (by |mean score|) of the first other
    /// method, with each method's error against them.
    pub exact_top: Option<usize>,
    /// Edges per method in the report (default 20).
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_methods() -> Vec<String> {
    vec!["eap-ig-inputs".into()]
}

fn default_steps() -> usize {
    DEFAULT_STEPS
}

fn default_ablation() -> String {
    "patching".into()
}

fn default_top() -> usize {
    20
}

impl CircuitSpec {
    /// The methods and the ablation, checked: a message naming the key otherwise.
    pub fn resolve(&self) -> Result<(Vec<Method>, Ablation), String> {
        let at = |key: &str, e: actpatch_circuits::CircuitError| format!("[circuit] {key}: {e}");
        let ablation = Ablation::parse(&self.ablation).map_err(|e| at("ablation", e))?;
        if self.methods.is_empty() {
            return Err(format!(
                "[circuit] methods is empty: list at least one of {}",
                actpatch_circuits::METHODS
            ));
        }
        let mut methods = Vec::new();
        for name in &self.methods {
            let method = Method::parse(name, self.steps).map_err(|e| match e {
                actpatch_circuits::CircuitError::ZeroSteps => at("steps", e),
                e => at("methods", e),
            })?;
            method
                .check_ablation(ablation)
                .map_err(|e| at("ablation", e))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if self.exact_top == Some(0) {
            return Err("[circuit] exact_top = 0: give the number of top edges (at least 1) whose exact effect to measure, or leave it out".into());
        }
        if self.exact_top.is_some() && methods.iter().all(|m| *m == Method::Exact) {
            return Err("[circuit] exact_top ranks the edges of another method: add one to `methods` (e.g. \"eap-ig-inputs\")".into());
        }
        if self.top == 0 {
            return Err("[circuit] top = 0: the report lists the `top` strongest edges of each method; give at least 1".into());
        }
        Ok((methods, ablation))
    }
}
