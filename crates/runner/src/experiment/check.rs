//! Reading an experiment file: TOML errors with file, line and column (and the closest
//! valid key), then the checks the types cannot express.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::experiment::suggest::suggestion;
use crate::experiment::{CorruptionKind, Experiment, PairSpec};
use crate::RunnerError;
use actpatch_patching::gaussian::GaussianSpec;
use actpatch_patching::Align;
use actpatch_patching::{path, Method, PatchKind};

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
        experiment.expand(path)?;
        experiment.check(path)?;
        experiment.resolve_circuit_files(path.parent().unwrap_or(Path::new(".")));
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

    /// Appends the pairs of every `[[datasets]]` and `[[templates]]` entry.
    fn expand(&mut self, path: &Path) -> Result<(), RunnerError> {
        let bad = |msg: String| RunnerError::Input(format!("{}: {msg}", path.display()));
        let base = path.parent().unwrap_or(Path::new("."));
        for dataset in &self.datasets {
            let pairs = dataset.pairs(base, self.corruption.kind).map_err(bad)?;
            self.pairs.extend(pairs);
        }
        for (index, template) in self.templates.iter().enumerate() {
            self.pairs.extend(template.pairs(index).map_err(bad)?);
        }
        Ok(())
    }

    fn check(&self, path: &Path) -> Result<(), RunnerError> {
        let bad = |msg: String| RunnerError::Input(format!("{}: {msg}", path.display()));
        self.check_sections().map_err(bad)?;
        let mut seen = HashSet::new();
        for (i, pair) in self.pairs.iter().enumerate() {
            let label = pair_label(pair, i);
            match self.corruption_of(i) {
                CorruptionKind::Prompt => check_pair(pair, &label),
                CorruptionKind::Gaussian => check_gaussian_pair(pair, &label),
            }
            .map_err(bad)?;
            let name = self.pair_name(i);
            if !seen.insert(name.clone()) {
                return Err(bad(format!(
                    "two pairs are named `{name}`: pair names must be unique (they key the result tables)"
                )));
            }
        }
        Ok(())
    }

    /// What the types cannot say about `[experiment]`, `[model]`, `[sweep]` and
    /// `[validate]`.
    fn check_sections(&self) -> Result<(), String> {
        if self.experiment.name.trim().is_empty() {
            return Err("[experiment] name is empty: give the experiment a short name, e.g. name = \"landmarks\"".into());
        }
        match (&self.model.id, &self.model.path) {
            (None, None) => {
                return Err("[model] needs `id` (a hub id such as \"gpt2\") or `path` (a local model folder)".into())
            }
            (Some(_), Some(_)) => {
                return Err("[model] has both `id` and `path`: keep one (`id` downloads from the hub, `path` reads a folder)".into())
            }
            _ => {}
        }
        if self.pairs.is_empty() {
            return Err("no pairs: add [[pairs]], a [[datasets]] file or [[templates]]".into());
        }
        if self.sweep.kinds.is_empty() {
            return Err(format!(
                "[sweep] kinds is empty: list at least one of {}",
                PatchKind::names()
            ));
        }
        if self.sweep.positions.list().is_some() {
            let whole: Vec<&str> = (self.sweep.kinds.iter())
                .filter(|k| !k.by_position())
                .map(|k| k.name())
                .collect();
            if !whole.is_empty() {
                return Err(format!(
                    "[sweep] positions lists positions, but {} patch every position at once (one cell per layer and head), so a position list has no meaning for them. Use positions = \"all\", or sweep head_out_by_pos for heads at chosen positions",
                    whole.join(" and ")
                ));
            }
        }
        self.check_methods()?;
        if let Some(circuit) = &self.circuit {
            circuit.resolve()?;
        }
        let statistics = &self.statistics;
        if statistics.bootstrap == 0 || !(statistics.level > 0.0 && statistics.level < 1.0) {
            return Err(format!(
                "[statistics] bootstrap = {} and level = {}: bootstrap must be at least 1 (2000 is the default) and level between 0 and 1 (e.g. 0.95)",
                statistics.bootstrap, statistics.level
            ));
        }
        self.check_paths()?;
        self.check_corruption()?;
        if !(self.validate.min_gap.is_finite() && self.validate.min_gap >= 0.0) {
            return Err(format!(
                "[validate] min_gap = {} must be a number ≥ 0",
                self.validate.min_gap
            ));
        }
        Ok(())
    }

    /// `[[sweep.paths]]` against the path kinds: each needs the other, labels are unique.
    fn check_paths(&self) -> Result<(), String> {
        let path_kinds: Vec<&str> = (self.sweep.kinds.iter())
            .filter(|k| path::is_path(**k))
            .map(|k| k.name())
            .collect();
        match (path_kinds.is_empty(), self.sweep.paths.is_empty()) {
            (false, true) => return Err(format!(
                "[sweep] kinds has {} but there is no [[sweep.paths]] entry: add one per receiver set, e.g.\n  [[sweep.paths]]\n  receivers = \"logits\"",
                path_kinds.join(" and ")
            )),
            (true, false) => return Err(
                "[[sweep.paths]] is given but [sweep] kinds has neither \"path\" nor \"path_by_pos\": add \"path\" to kinds, or remove the [[sweep.paths]] entries".into()
            ),
            _ => {}
        }
        let mut labels = HashSet::new();
        for spec in &self.sweep.paths {
            spec.check()?;
            let label = spec.label();
            if !labels.insert(label.clone()) {
                return Err(format!("two [[sweep.paths]] entries are labelled `{label}`: labels key the tables and figures, give each a distinct `label`"));
            }
        }
        Ok(())
    }

    /// `[sweep] methods` lists each method once, and `ig_steps` is in range.
    fn check_methods(&self) -> Result<(), String> {
        if self.sweep.methods.is_empty() {
            return Err("[sweep] methods is empty: list at least one of \"exact\", \"atp\", \"atp*\", \"ig\"".into());
        }
        let mut methods = self.sweep.methods.clone();
        methods.sort();
        methods.dedup();
        if methods.len() != self.sweep.methods.len() {
            return Err("[sweep] methods lists a method twice: list each once".into());
        }
        let path_kinds = self.sweep.kinds.iter().any(|k| path::is_path(*k));
        if path_kinds && !self.sweep.methods.contains(&Method::Exact) {
            return Err("[sweep] kinds has a path kind, which only the \"exact\" method sweeps (attribution estimates node kinds, not paths): add \"exact\" to [sweep] methods, or drop the path kinds".into());
        }
        if self.sweep.ig_steps == 0 || self.sweep.ig_steps > 1000 {
            return Err(format!(
                "[sweep] ig_steps = {} must be between 1 and 1000 (the integral's steps; default 10)",
                self.sweep.ig_steps
            ));
        }
        Ok(())
    }

    /// `[corruption]` and what Gaussian-noise pairs need of the rest of the file.
    fn check_corruption(&self) -> Result<(), String> {
        self.corruption.check()?;
        let gaussian =
            (0..self.pairs.len()).any(|i| self.corruption_of(i) == CorruptionKind::Gaussian);
        if !gaussian {
            if self.corruption.has_gaussian_keys() {
                return Err("[corruption] sets samples, seed, noise, window or metric, which apply to Gaussian-noise corruption, but no pair uses it: set kind = \"gaussian\" in [corruption], or corruption = \"gaussian\" on a [[datasets]] or [[pairs]] entry".into());
            }
            return Ok(());
        }
        if self.corruption.kind == CorruptionKind::Gaussian && !self.templates.is_empty() {
            return Err("[[templates]] with [corruption] kind = \"gaussian\": template pairs are prompt pairs (a clean and a corrupted fill). Put the Gaussian-noise prompts in a [[datasets]] file (columns clean, correct, subject) or [[pairs]] entries, and set corruption = \"gaussian\" on those entries instead of in [corruption]".into());
        }
        let unsupported: Vec<&str> = (self.sweep.kinds.iter())
            .filter(|k| !GaussianSpec::KINDS.contains(k))
            .map(|k| k.name())
            .collect();
        if !unsupported.is_empty() {
            let supported: Vec<&str> = GaussianSpec::KINDS.iter().map(|k| k.name()).collect();
            return Err(format!(
                "[sweep] kinds has {}, which Gaussian-noise corruption cannot restore: a causal trace restores one layer's residual stream or attention or MLP output at one position. Use {} (ROME's hidden state, attention and MLP are resid_pre, attn_out and mlp_out), or move the Gaussian pairs to an experiment file of their own",
                unsupported.join(", "),
                supported.join(", ")
            ));
        }
        if self.sweep.methods != [Method::Exact] {
            return Err("[sweep] methods lists an approximation (atp, atp*, ig), which estimates prompt pairs only: Gaussian-noise pairs are traced exactly. Use methods = [\"exact\"], or move the Gaussian pairs to an experiment file of their own".into());
        }
        let mut kinds_of_concept: HashMap<&str, CorruptionKind> = HashMap::new();
        for (i, pair) in self.pairs.iter().enumerate() {
            let kind = self.corruption_of(i);
            match kinds_of_concept.insert(&pair.concept, kind) {
                Some(other) if other != kind => return Err(format!(
                    "concept `{}` has pairs corrupted by prompt and by Gaussian noise: their normalized effects measure different things (a logit difference and p(answer)) and cannot be summarized together. Give the Gaussian-noise pairs a concept of their own",
                    pair.concept
                )),
                _ => {}
            }
        }
        Ok(())
    }

    /// Where pair `index`'s corrupted run comes from: its own `corruption`, else
    /// `[corruption] kind`.
    pub fn corruption_of(&self, index: usize) -> CorruptionKind {
        self.pairs[index].corruption.unwrap_or(self.corruption.kind)
    }

    /// Whether any pair is corrupted by Gaussian noise.
    pub fn has_gaussian(&self) -> bool {
        (0..self.pairs.len()).any(|i| self.corruption_of(i) == CorruptionKind::Gaussian)
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

/// What the types cannot say about one pair.
fn check_pair(pair: &PairSpec, label: &str) -> Result<(), String> {
    for (field, value) in [("clean", &pair.clean), ("concept", &pair.concept)] {
        if value.trim().is_empty() {
            return Err(format!("pair {label}: `{field}` is empty"));
        }
    }
    let no_prompt = "(a prompt without a counterfactual can be corrupted by noise instead: corruption = \"gaussian\" with a `subject`)";
    if pair.corrupted.trim().is_empty() {
        return Err(format!(
            "pair {label}: `corrupted` is missing or empty: give the corrupted prompt {no_prompt}"
        ));
    }
    for (field, value) in [("correct", &pair.correct), ("incorrect", &pair.incorrect)] {
        if value.is_empty() {
            return Err(format!(
                "pair {label}: `{field}` is missing or empty: give the one-token answer, e.g. \" Rome\" {no_prompt}"
            ));
        }
    }
    if let Some(expect) = pair.expect {
        for (field, value) in [
            ("clean_logit_diff", expect.clean_logit_diff),
            ("corrupted_logit_diff", expect.corrupted_logit_diff),
        ] {
            if let Some(value) = value.filter(|v| !v.is_finite()) {
                return Err(format!(
                    "pair {label}: expect.{field} = {value} is not a finite number: give the logit difference the pair should reproduce (e.g. {field} = 1.068), or leave it out"
                ));
            }
        }
        if !(expect.tolerance.is_finite() && expect.tolerance >= 0.0) {
            return Err(format!(
                "pair {label}: expect.tolerance = {} must be a finite number ≥ 0, e.g. tolerance = 0.01",
                expect.tolerance
            ));
        }
    }
    Ok(())
}

/// What a Gaussian-noise pair needs: a clean prompt, one answer, a subject in the
/// prompt, and none of what only prompt pairs have.
fn check_gaussian_pair(pair: &PairSpec, label: &str) -> Result<(), String> {
    for (field, value) in [("clean", &pair.clean), ("concept", &pair.concept)] {
        if value.trim().is_empty() {
            return Err(format!("pair {label}: `{field}` is empty"));
        }
    }
    if pair.correct.is_empty() {
        return Err(format!(
            "pair {label}: `correct` is empty: give the one-token answer of the clean prompt, e.g. \" Paris\""
        ));
    }
    let Some(subject) = pair.subject.as_deref().filter(|s| !s.is_empty()) else {
        return Err(format!(
            "pair {label}: corruption = \"gaussian\" needs `subject`, the part of `clean` whose tokens are noised, e.g. subject = \"The Eiffel Tower\""
        ));
    };
    if !pair.clean.contains(subject) {
        return Err(format!(
            "pair {label}: `subject` = {subject:?} is not part of `clean` = {:?}",
            pair.clean
        ));
    }
    let prompt_only = [
        ("corrupted", !pair.corrupted.is_empty()),
        ("incorrect", !pair.incorrect.is_empty()),
        ("subject_corrupted", pair.subject_corrupted.is_some()),
        ("align", pair.align.is_some()),
        ("expect", pair.expect.is_some()),
    ];
    if let Some((field, _)) = prompt_only.iter().find(|(_, given)| *given) {
        return Err(format!(
            "pair {label}: `{field}` is given, but under corruption = \"gaussian\" the corrupted run is the clean prompt with noise on its subject (there is no corrupted prompt, second answer, alignment or expected logit difference). Remove `{field}`, or set corruption = \"prompt\" on the pair"
        ));
    }
    Ok(())
}

fn pair_label(pair: &PairSpec, index: usize) -> String {
    let label = match &pair.name {
        Some(name) => format!("`{name}`"),
        None => format!("#{}", index + 1),
    };
    match &pair.source {
        Some(source) => format!("{label} ({source})"),
        None => label,
    }
}
