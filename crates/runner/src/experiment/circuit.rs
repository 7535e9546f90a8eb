//! `[circuit]`: edge attribution over the model's edge graph (the EAP-IG library's).

use actpatch_circuits::{Ablation, Method, DEFAULT_STEPS};
use serde::Deserialize;

use crate::experiment::Experiment;

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
    /// Faithfulness curves of every method's circuits (default true).
    #[serde(default = "yes")]
    pub faithfulness: bool,
    /// Circuit sizes: fractions of the edges in (0, 1] (write 1.0 for all of them), or
    /// whole numbers of edges; MIB's ten fractions by default.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<SizeSpec>,
    /// How the top edges are chosen: "abs" (by |score|, default) or "signed".
    #[serde(default = "default_select")]
    pub select: String,
    /// The ablations the curves run under (default: `ablation`'s).
    pub curve_ablations: Option<Vec<String>>,
    /// Fractions at which to write each method's circuit as a graph JSON file with
    /// `in_graph` set (MIB's leaderboard takes one per fraction).
    #[serde(default)]
    pub export: Vec<f64>,
    /// Circuit files to score (the EAP-IG library's graph JSON, e.g. found by another
    /// tool or another run), relative to the experiment file: each one's faithfulness
    /// under every curve ablation.
    #[serde(default)]
    pub evaluate: Vec<std::path::PathBuf>,
}

/// A circuit size in the experiment file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a fraction of the edges such as 0.05, or a whole number of edges such as 100"
)]
pub enum SizeSpec {
    Edges(u64),
    Fraction(f64),
}

fn yes() -> bool {
    true
}

fn default_sizes() -> Vec<SizeSpec> {
    actpatch_circuits::MIB_FRACTIONS
        .iter()
        .map(|f| SizeSpec::Fraction(*f))
        .collect()
}

fn default_select() -> String {
    "abs".into()
}

/// `[circuit]`'s curves, checked: sizes, ranking, the ablations they run under.
pub struct CurveChoices {
    pub sizes: Vec<actpatch_circuits::Size>,
    pub select: actpatch_circuits::Select,
    pub ablations: Vec<Ablation>,
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
        self.curves()?;
        if self.top == 0 {
            return Err("[circuit] top = 0: the report lists the `top` strongest edges of each method; give at least 1".into());
        }
        Ok((methods, ablation))
    }
}

impl CircuitSpec {
    /// The curves' sizes, ranking and ablations, checked.
    pub fn curves(&self) -> Result<CurveChoices, String> {
        let select = actpatch_circuits::Select::parse(&self.select).ok_or_else(|| {
            format!(
                "[circuit] select = {:?}: use one of {}",
                self.select,
                actpatch_circuits::Select::NAMES
            )
        })?;
        if self.sizes.is_empty() {
            return Err("[circuit] sizes is empty: list circuit sizes (fractions such as 0.01, or edge counts), or leave it out for MIB's ten fractions".into());
        }
        let mut sizes = Vec::new();
        for size in &self.sizes {
            sizes.push(match *size {
                SizeSpec::Edges(0) => return Err("[circuit] sizes: 0 edges is the empty circuit, which every curve has already (m(∅)); give sizes of at least 1 edge".into()),
                SizeSpec::Edges(n) => actpatch_circuits::Size::Edges(n as usize),
                SizeSpec::Fraction(f) if f > 0.0 && f <= 1.0 => actpatch_circuits::Size::Fraction(f),
                SizeSpec::Fraction(f) => return Err(format!("[circuit] sizes: {f} is not a fraction in (0, 1]; write fractions such as 0.05 (1.0 for every edge) or whole numbers of edges")),
            });
        }
        for f in &self.export {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(format!("[circuit] export: {f} is not a fraction in (0, 1]"));
            }
        }
        let names = self
            .curve_ablations
            .clone()
            .unwrap_or_else(|| vec![self.ablation.clone()]);
        let ablations = names
            .iter()
            .map(|name| {
                Ablation::parse(name).map_err(|e| format!("[circuit] curve_ablations: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CurveChoices {
            sizes,
            select,
            ablations,
        })
    }
}

impl Experiment {
    /// `[circuit] evaluate`'s files relative to the experiment file's folder `base`.
    pub(crate) fn resolve_circuit_files(&mut self, base: &std::path::Path) {
        if let Some(circuit) = &mut self.circuit {
            for file in &mut circuit.evaluate {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
    }
}
