//! The experiment file: a declarative TOML description of a patching run.
//!
//! Unknown keys, missing keys and wrong types are rejected with the file, line and
//! column. Relative model paths are relative to the experiment file's folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sweep::PatchKind;
use crate::RunnerError;

/// A whole experiment file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub experiment: ExperimentInfo,
    pub model: ModelSpec,
    #[serde(default)]
    pub sweep: SweepSpec,
    #[serde(default)]
    pub validate: ValidateSpec,
    #[serde(default)]
    pub output: OutputSpec,
    pub pairs: Vec<PairSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A Hugging Face hub id, e.g. `"gpt2"`.
    pub id: Option<String>,
    /// A local model folder (relative to the experiment file).
    pub path: Option<PathBuf>,
    pub revision: Option<String>,
    #[serde(default = "yes")]
    pub prepend_bos: bool,
    /// `"cpu"` or `"cuda:N"`.
    #[serde(default = "cpu")]
    pub device: String,
}

fn yes() -> bool {
    true
}

fn cpu() -> String {
    "cpu".into()
}

/// Which positions a position-indexed sweep patches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "positions = \"all\" or a list of position numbers such as [0, 3, 5]"
)]
pub enum Positions {
    Keyword(AllKeyword),
    List(Vec<usize>),
}

impl Default for Positions {
    fn default() -> Self {
        Positions::Keyword(AllKeyword::All)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum AllKeyword {
    All,
}

impl Positions {
    /// The positions to patch among `n` (`None`: all).
    pub fn list(&self) -> Option<&[usize]> {
        match self {
            Positions::List(list) => Some(list),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default = "default_kinds")]
    pub kinds: Vec<PatchKind>,
    #[serde(default)]
    pub positions: Positions,
    /// `"all"` (default) or `"logit_diff"`: skip the full-vocabulary unembedding that
    /// `prob_correct` and `kl_div` need (they are then null in the tables).
    #[serde(default)]
    pub metrics: MetricSet,
}

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

fn default_kinds() -> Vec<PatchKind> {
    vec![PatchKind::ResidPre]
}

impl Default for SweepSpec {
    fn default() -> Self {
        SweepSpec {
            kinds: default_kinds(),
            positions: Positions::default(),
            metrics: MetricSet::All,
        }
    }
}

/// How clean positions map onto corrupted positions.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// Token lengths must be equal (default).
    #[default]
    Strict,
    /// Position i into position i, over the shorter length (what the seed notebook did).
    Start,
    /// The last tokens aligned: clean position `i` into corrupted `i + (n_corrupted - n_clean)`.
    End,
}

impl Align {
    pub fn name(self) -> &'static str {
        match self {
            Align::Strict => "strict",
            Align::Start => "start",
            Align::End => "end",
        }
    }
}

/// The smallest clean − corrupted logit difference a pair needs, by default.
pub const DEFAULT_MIN_GAP: f64 = 1.0;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_min_gap")]
    pub min_gap: f64,
    #[serde(default = "yes")]
    pub require_clean_positive: bool,
    #[serde(default)]
    pub align: Align,
}

fn default_min_gap() -> f64 {
    DEFAULT_MIN_GAP
}

impl Default for ValidateSpec {
    fn default() -> Self {
        ValidateSpec {
            enabled: true,
            min_gap: DEFAULT_MIN_GAP,
            require_clean_positive: true,
            align: Align::Strict,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FigureFormat {
    Png,
    Svg,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Runs go in `<dir>/<run id>/`; default `results/<experiment name>`.
    pub dir: Option<PathBuf>,
    #[serde(default = "default_formats")]
    pub formats: Vec<FigureFormat>,
}

fn default_formats() -> Vec<FigureFormat> {
    vec![FigureFormat::Png, FigureFormat::Svg]
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            dir: None,
            formats: default_formats(),
        }
    }
}

/// Baseline values a pair is expected to reproduce.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub clean_logit_diff: Option<f64>,
    pub corrupted_logit_diff: Option<f64>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    0.01
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    pub name: Option<String>,
    pub concept: String,
    pub clean: String,
    pub corrupted: String,
    pub correct: String,
    pub incorrect: String,
    pub align: Option<Align>,
    pub expect: Option<Expect>,
}

impl Experiment {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> Result<Self, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RunnerError::Input(format!(
                "cannot read experiment file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` (the contents of `path`) and checks what the types cannot.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RunnerError> {
        let mut experiment: Experiment = toml::from_str(text).map_err(|e| {
            let message = e.to_string();
            let hint = suggestion(&message)
                .map(|s| format!("\n  hint: did you mean `{s}`?"))
                .unwrap_or_default();
            RunnerError::Input(format!("{}: {}{hint}", path.display(), message.trim_end()))
        })?;
        experiment.check(path)?;
        if let Some(model_path) = &experiment.model.path {
            if model_path.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                let joined = base.join(model_path);
                // Canonical, so the same model reads the same however the file was named.
                experiment.model.path = Some(std::fs::canonicalize(&joined).unwrap_or(joined));
            }
        }
        Ok(experiment)
    }

    fn check(&self, path: &Path) -> Result<(), RunnerError> {
        let bad = |msg: String| Err(RunnerError::Input(format!("{}: {msg}", path.display())));
        if self.experiment.name.trim().is_empty() {
            return bad("[experiment] name is empty: give the experiment a short name, e.g. name = \"landmarks\"".into());
        }
        match (&self.model.id, &self.model.path) {
            (None, None) => {
                return bad("[model] needs `id` (a hub id such as \"gpt2\") or `path` (a local model folder)".into())
            }
            (Some(_), Some(_)) => {
                return bad("[model] has both `id` and `path`: keep one (`id` downloads from the hub, `path` reads a folder)".into())
            }
            _ => {}
        }
        if self.pairs.is_empty() {
            return bad("no [[pairs]]: add at least one clean/corrupted pair".into());
        }
        if self.sweep.kinds.is_empty() {
            return bad(format!(
                "[sweep] kinds is empty: list at least one of {}",
                PatchKind::names()
            ));
        }
        if !(self.validate.min_gap.is_finite() && self.validate.min_gap >= 0.0) {
            return bad(format!(
                "[validate] min_gap = {} must be a number ≥ 0",
                self.validate.min_gap
            ));
        }
        let mut seen = HashSet::new();
        for (i, pair) in self.pairs.iter().enumerate() {
            let label = pair_label(pair, i);
            for (field, value) in [
                ("clean", &pair.clean),
                ("corrupted", &pair.corrupted),
                ("concept", &pair.concept),
            ] {
                if value.trim().is_empty() {
                    return bad(format!("pair {label}: `{field}` is empty"));
                }
            }
            for (field, value) in [("correct", &pair.correct), ("incorrect", &pair.incorrect)] {
                if value.is_empty() {
                    return bad(format!(
                        "pair {label}: `{field}` is empty: give the one-token answer, e.g. \" Rome\""
                    ));
                }
            }
            if let Some(expect) = pair.expect {
                if !(expect.tolerance.is_finite() && expect.tolerance >= 0.0) {
                    return bad(format!(
                        "pair {label}: expect.tolerance must be a number ≥ 0"
                    ));
                }
            }
            let name = self.pair_name(i);
            if !seen.insert(name.clone()) {
                return bad(format!(
                    "two pairs are named `{name}`: pair names must be unique (they key the result tables)"
                ));
            }
        }
        Ok(())
    }

    /// The pair's name: its `name`, or `<concept>-<n>` (1-based).
    pub fn pair_name(&self, index: usize) -> String {
        let pair = &self.pairs[index];
        pair.name.clone().unwrap_or_else(|| {
            let n = self.pairs[..=index]
                .iter()
                .filter(|p| p.name.is_none() && p.concept == pair.concept)
                .count();
            format!("{}-{n}", pair.concept)
        })
    }

    /// The alignment mode of pair `index`.
    pub fn align_of(&self, index: usize) -> Align {
        self.pairs[index].align.unwrap_or(self.validate.align)
    }
}

fn pair_label(pair: &PairSpec, index: usize) -> String {
    match &pair.name {
        Some(name) => format!("`{name}`"),
        None => format!("#{}", index + 1),
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"),
/// the expected name closest to `x`, when it is close.
fn suggestion(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (given, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    candidates
        .into_iter()
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_valid_key_is_suggested() {
        let msg = "unknown field `corupted`, expected one of `name`, `concept`, `clean`, `corrupted`, `correct`";
        assert_eq!(suggestion(msg).as_deref(), Some("corrupted"));
        let msg = "unknown variant `resid_pr`, expected one of `resid_pre`, `resid_mid`";
        assert_eq!(suggestion(msg).as_deref(), Some("resid_pre"));
        assert_eq!(
            suggestion("unknown field `zzzzzz`, expected one of `name`"),
            None
        );
    }

    #[test]
    fn edit_distance_by_hand() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
