//! The experiment file: a declarative TOML description of a patching run.
//!
//! Unknown keys, missing keys and wrong types are rejected with the file, line and
//! column ([`Experiment::load`]). Relative model paths are relative to the experiment
//! file's folder.

mod check;
pub mod circuit;
pub mod corruption;
pub mod datasets;
mod paths;
mod suggest;
pub mod templates;

use std::path::PathBuf;

use actpatch_concepts::roles::Span;
use actpatch_concepts::BootstrapSpec;
use actpatch_patching::{Align, Direction, Method, MetricSet, PatchKind};
use serde::Deserialize;

pub use circuit::CircuitSpec;
pub use corruption::{CorruptionKind, CorruptionSpec};
pub use datasets::DatasetSpec;
pub use paths::{HeadRef, PathSpec, ReceiverKind, ReceiverPositions};
pub use templates::TemplateSpec;

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
    #[serde(default)]
    pub statistics: StatisticsSpec,
    /// `[corruption]`: prompts (default) or Gaussian noise on the subject.
    #[serde(default, deserialize_with = "corruption::string_or_table")]
    pub corruption: CorruptionSpec,
    /// Pairs written out one by one. After loading, also every pair of `datasets` and
    /// `templates`, in that order.
    #[serde(default)]
    pub pairs: Vec<PairSpec>,
    #[serde(default)]
    pub datasets: Vec<DatasetSpec>,
    #[serde(default)]
    pub templates: Vec<TemplateSpec>,
    /// `[circuit]`: edge attribution over the edge graph, after the sweep.
    #[serde(default)]
    pub circuit: Option<CircuitSpec>,
}

/// `[statistics]`: the concept table's bootstrap.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatisticsSpec {
    /// Bootstrap resamplings per concept (default 2000).
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// The bootstrap's seed (recorded in the manifest).
    #[serde(default)]
    pub seed: u64,
    /// The intervals' coverage (default 0.95).
    #[serde(default = "default_level")]
    pub level: f64,
}

fn default_bootstrap() -> usize {
    2000
}

fn default_level() -> f64 {
    0.95
}

impl Default for StatisticsSpec {
    fn default() -> Self {
        StatisticsSpec {
            bootstrap: default_bootstrap(),
            seed: 0,
            level: default_level(),
        }
    }
}

impl StatisticsSpec {
    pub fn bootstrap_spec(&self) -> BootstrapSpec {
        BootstrapSpec {
            draws: self.bootstrap,
            seed: self.seed,
            level: self.level,
        }
    }
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
    /// Positions of the run being patched (corrupted for denoising, clean for
    /// noising); the same positions for pairs of equal token length.
    #[serde(default)]
    pub positions: Positions,
    /// `"all"` (default) or `"logit_diff"`: skip the full-vocabulary unembedding that
    /// `prob_correct` and `kl_div` need (they are then null in the tables).
    #[serde(default)]
    pub metrics: MetricSet,
    /// `"denoising"` (default), `"noising"` or `"both"`.
    #[serde(default)]
    pub direction: DirectionSpec,
    /// The receiver sets of the `path` and `path_by_pos` kinds (`[[sweep.paths]]`).
    #[serde(default)]
    pub paths: Vec<PathSpec>,
    /// Any of `"exact"` (patched runs), `"atp"`, `"atp*"`, `"ig"` (estimates from
    /// gradients); default `["exact"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Steps of the `"ig"` path integral.
    #[serde(default = "default_ig_steps")]
    pub ig_steps: usize,
}

fn default_methods() -> Vec<Method> {
    vec![Method::Exact]
}

/// Integration steps of `ig` by default.
pub const DEFAULT_IG_STEPS: usize = 10;

fn default_ig_steps() -> usize {
    DEFAULT_IG_STEPS
}

/// Which directions a sweep runs.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DirectionSpec {
    /// Clean activations into the corrupted run.
    #[default]
    Denoising,
    /// Corrupted activations into the clean run.
    Noising,
    /// Both, denoising first.
    Both,
}

impl DirectionSpec {
    pub fn directions(self) -> Vec<Direction> {
        match self {
            DirectionSpec::Denoising => vec![Direction::Denoising],
            DirectionSpec::Noising => vec![Direction::Noising],
            DirectionSpec::Both => Direction::BOTH.to_vec(),
        }
    }
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
            direction: DirectionSpec::Denoising,
            paths: Vec::new(),
            methods: default_methods(),
            ig_steps: DEFAULT_IG_STEPS,
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
    /// Which pairs get heatmap files of their own (the tables and report.html hold
    /// every pair either way).
    #[serde(default)]
    pub pair_figures: PairFigures,
}

/// `[output] pair_figures`: which pairs' heatmaps are written as files.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PairFigures {
    /// Every pair's.
    All,
    /// Every pair's in a run of at most [`PairFigures::ALL_UP_TO`] pairs; else, per
    /// concept, the [`PairFigures::TOP_EACH`] pairs with the largest and as many with
    /// the smallest clean − corrupted gap.
    #[default]
    Top,
    /// None: only the concept figures.
    None,
}

impl PairFigures {
    pub const ALL_UP_TO: usize = 6;
    pub const TOP_EACH: usize = 2;
}

fn default_formats() -> Vec<FigureFormat> {
    vec![FigureFormat::Png, FigureFormat::Svg]
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            dir: None,
            formats: default_formats(),
            pair_figures: PairFigures::default(),
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

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    pub name: Option<String>,
    pub concept: String,
    pub clean: String,
    /// The corrupted prompt; none under Gaussian corruption.
    #[serde(default)]
    pub corrupted: String,
    pub correct: String,
    /// The answer the corrupted prompt calls for; none under Gaussian corruption.
    #[serde(default)]
    pub incorrect: String,
    /// `"gaussian"`: the corrupted run is the clean prompt with noise on `subject`'s
    /// input embeddings; default `[corruption] kind`.
    pub corruption: Option<CorruptionKind>,
    pub align: Option<Align>,
    pub expect: Option<Expect>,
    /// A pair kept for reference (e.g. the course notebook's, verbatim): validated and
    /// its baselines compared with `expect`, but not swept and not in concept figures.
    #[serde(default)]
    pub reference: bool,
    /// Why the pair is as it is; shown with reference pairs in the report.
    pub note: Option<String>,
    /// The concept's span in the clean prompt (a part of `clean`): its tokens get the
    /// roles `subject.first`, `subject.mid`, `subject.last`. Without it the roles name
    /// the tokens where the two prompts differ (`diff.*`).
    pub subject: Option<String>,
    /// The span in the corrupted prompt; by default the positions of `subject`.
    pub subject_corrupted: Option<String>,
    /// Template slots, for pairs filled from `[[templates]]`.
    #[serde(skip)]
    pub slots: Option<SlotSpans>,
    /// Pairs of one group (a template) are resampled together by the bootstrap.
    #[serde(skip)]
    pub group: Option<String>,
    /// Where the pair came from (a data file's row, a template's fill), for messages.
    #[serde(skip)]
    pub source: Option<String>,
}

/// Where each slot of a template sits in both prompts of a pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpans {
    pub clean: Vec<Span>,
    pub corrupted: Vec<Span>,
}
