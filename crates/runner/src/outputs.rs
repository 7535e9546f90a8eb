//! Writing a run's outputs: `cells.parquet`, `baselines.parquet`, figures and
//! `report.md`.

use std::collections::BTreeMap;
use std::path::Path;

use actpatch_model::HookedTransformer;
use actpatch_report::{BaselineRow, CellRow, FigureSection, Heatmap, ImageFormat, RunReport};

use crate::experiment::{Experiment, FigureFormat};
use crate::figures::{heatmap, mean_cells, normalized_cells, position_labels};
use crate::summary::{kind_sentence, shared_labels, top_cells};
use crate::sweep::{CellResult, PatchKind};
use crate::validate::PairPlan;
use crate::RunnerError;

/// A pair's sweep results.
pub struct SweptPair<'a> {
    pub plan: &'a PairPlan,
    pub results: Vec<CellResult>,
    /// Kinds not swept for this pair, with why.
    pub skipped: Vec<String>,
}

impl SweptPair<'_> {
    fn labels(&self) -> Vec<String> {
        let clean_of = self
            .plan
            .map
            .as_ref()
            .map(|m| m.clean_of.clone())
            .unwrap_or_default();
        position_labels(&self.plan.clean_str, &clean_of)
    }
}

fn model_name(model: &HookedTransformer) -> String {
    model.source().to_string()
}

pub fn cell_rows(
    experiment: &Experiment,
    model: &HookedTransformer,
    run_id: &str,
    swept: &[SweptPair],
) -> Vec<CellRow> {
    let mut rows = Vec::new();
    for pair in swept {
        let plan = pair.plan;
        let clean_of = plan
            .map
            .as_ref()
            .map(|m| m.clean_of.clone())
            .unwrap_or_default();
        for r in &pair.results {
            let token = r
                .index
                .position
                .and_then(|p| clean_of.get(p).copied().flatten())
                .and_then(|c| plan.clean_str.get(c).cloned());
            rows.push(CellRow {
                run_id: run_id.to_string(),
                experiment: experiment.experiment.name.clone(),
                concept: plan.spec.concept.clone(),
                pair: plan.name.clone(),
                model: model_name(model),
                kind: r.kind.name().to_string(),
                layer: r.index.layer as u32,
                head: r.index.head.map(|h| h as u32),
                position: r.index.position.map(|p| p as u32),
                token,
                patched_logit_diff: r.metrics.logit_diff,
                normalized_logit_diff: r.metrics.normalized_logit_diff,
                logprob_diff: r.metrics.logprob_diff,
                prob_correct: r.metrics.prob_correct,
                kl_div: r.metrics.kl_div,
                pair_valid: plan.passed(),
            });
        }
    }
    rows
}

fn baseline_rows(
    experiment: &Experiment,
    model: &HookedTransformer,
    run_id: &str,
    plans: &[PairPlan],
    swept: &[SweptPair],
) -> Vec<BaselineRow> {
    plans
        .iter()
        .map(|plan| {
            let skipped = swept
                .iter()
                .find(|s| s.plan.index == plan.index)
                .map(|s| s.skipped.clone())
                .unwrap_or_default();
            BaselineRow {
                run_id: run_id.to_string(),
                experiment: experiment.experiment.name.clone(),
                concept: plan.spec.concept.clone(),
                pair: plan.name.clone(),
                model: model_name(model),
                clean: plan.spec.clean.clone(),
                corrupted: plan.spec.corrupted.clone(),
                correct: plan.spec.correct.clone(),
                incorrect: plan.spec.incorrect.clone(),
                clean_tokens: plan.clean_str.clone(),
                corrupted_tokens: plan.corrupted_str.clone(),
                align: plan.align.name().to_string(),
                clean_logit_diff: plan.clean_logit_diff,
                corrupted_logit_diff: plan.corrupted_logit_diff,
                passed: plan.passed(),
                swept: swept.iter().any(|s| s.plan.index == plan.index),
                reasons: plan.reasons.clone(),
                warnings: plan.warnings.iter().chain(&skipped).cloned().collect(),
            }
        })
        .collect()
}

/// Saves `heatmap` as `<stem>.<ext>` in every format; returns the first file's name.
fn save_figure(
    run_dir: &Path,
    stem: &str,
    heatmap: &Heatmap,
    formats: &[FigureFormat],
) -> Result<Option<String>, RunnerError> {
    let mut first = None;
    for format in formats {
        let format = match format {
            FigureFormat::Png => ImageFormat::Png,
            FigureFormat::Svg => ImageFormat::Svg,
        };
        let name = format!("figures/{stem}.{}", format.extension());
        heatmap.save(&run_dir.join(&name), format)?;
        first.get_or_insert(name);
    }
    Ok(first)
}

fn file_stem(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes every output of the run; returns the number of cells.
#[allow(clippy::too_many_arguments)]
pub fn write_outputs(
    experiment: &Experiment,
    model: &HookedTransformer,
    run_id: &str,
    run_dir: &Path,
    plans: &[PairPlan],
    swept: &[SweptPair],
    started: chrono::DateTime<chrono::Utc>,
    wall_seconds: f64,
) -> Result<usize, RunnerError> {
    let cells = cell_rows(experiment, model, run_id, swept);
    let baselines = baseline_rows(experiment, model, run_id, plans, swept);
    actpatch_report::tables::write_cells(&run_dir.join("cells.parquet"), &cells)?;
    actpatch_report::tables::write_baselines(&run_dir.join("baselines.parquet"), &baselines)?;
    std::fs::create_dir_all(run_dir.join("figures")).map_err(|e| {
        RunnerError::Input(format!(
            "cannot create {}: {e}",
            run_dir.join("figures").display()
        ))
    })?;

    let formats = &experiment.output.formats;
    let n_layers = model.dims().n_layers;
    let mut figures = Vec::new();
    let mut summary = Vec::new();
    for pair in swept {
        let labels = pair.labels();
        let kinds: Vec<PatchKind> = experiment
            .sweep
            .kinds
            .iter()
            .copied()
            .filter(|k| pair.results.iter().any(|r| r.kind == *k))
            .collect();
        for (i, kind) in kinds.iter().enumerate() {
            let cells = normalized_cells(&pair.results, *kind);
            let title = format!("{} · {} · {kind}", pair.plan.spec.concept, pair.plan.name);
            let map = heatmap(*kind, &cells, &labels, title.clone());
            if let Some(image) = save_figure(
                run_dir,
                &file_stem(&format!("{}_{kind}", pair.plan.name)),
                &map,
                formats,
            )? {
                let details = if i == 0 {
                    let pair_results: Vec<CellResult> = pair.results.clone();
                    top_cells(&pair_results, &labels, 10)
                } else {
                    Vec::new()
                };
                figures.push(FigureSection {
                    heading: title,
                    image,
                    details,
                });
            }
            if let Some(line) = kind_sentence(&pair.plan.name, *kind, &cells, &labels, n_layers) {
                summary.push(line);
            }
        }
    }

    // Concept means, where every pair of the concept has the same cells.
    let mut by_concept: BTreeMap<&str, Vec<&SweptPair>> = BTreeMap::new();
    for pair in swept {
        by_concept
            .entry(pair.plan.spec.concept.as_str())
            .or_default()
            .push(pair);
    }
    let mut notes = Vec::new();
    for (concept, pairs) in &by_concept {
        if pairs.len() < 2 {
            continue;
        }
        for kind in &experiment.sweep.kinds {
            let per_pair: Vec<_> = pairs
                .iter()
                .map(|p| normalized_cells(&p.results, *kind))
                .collect();
            match mean_cells(&per_pair) {
                Some(mean) => {
                    let labels = shared_labels(&pairs.iter().map(|p| p.labels()).collect::<Vec<_>>());
                    let title = format!("{concept} · mean of {} pairs · {kind}", pairs.len());
                    let map = heatmap(*kind, &mean, &labels, title.clone());
                    if let Some(image) = save_figure(run_dir, &file_stem(&format!("mean_{concept}_{kind}")), &map, formats)? {
                        figures.push(FigureSection { heading: title, image, details: Vec::new() });
                    }
                    if let Some(line) = kind_sentence(&format!("{concept} (mean)"), *kind, &mean, &labels, n_layers) {
                        summary.push(line);
                    }
                }
                None => notes.push(format!(
                    "No concept mean of `{kind}` for **{concept}**: its pairs have different token lengths, so positions do not line up."
                )),
            }
        }
    }
    if plans
        .iter()
        .any(|p| p.map.as_ref().is_some_and(|m| !m.is_identity()))
    {
        notes.push("**Misaligned positions.** Some pairs have clean and corrupted prompts of different token lengths and were patched with align = \"start\" or \"end\". Past the first differing token, a position of the clean run is patched into a position of the corrupted run that holds a different word, so those columns do not measure one token's role. Prefer corruptions of equal token length.".into());
    }
    if plans.iter().any(|p| {
        p.warnings
            .iter()
            .any(|w| w.contains("sentence end") || w.contains("already contains"))
    }) {
        notes.push("**Why prompts that end with punctuation or contain the answer do not test the concept.** The logit difference is read at the last position, i.e. on the model's prediction of the *next* token. If the prompt already ends with the answer and a full stop, that next token starts a new sentence: neither answer is a natural continuation, and the difference measures which word is likelier to open the next sentence, not whether the model knows the fact. Stop the prompt right before the answer (\"The capital of France is\" → \" Paris\").".into());
    }
    let failed: Vec<&PairPlan> = plans.iter().filter(|p| !p.passed()).collect();
    if !failed.is_empty() {
        let mut text = String::from("**Failed pairs.**\n");
        for plan in failed {
            text.push_str(&format!(
                "\n- `{}`: {}",
                plan.name,
                plan.reasons.join("; ").replace('\n', " ")
            ));
        }
        notes.push(text);
    }

    let report = RunReport {
        experiment: experiment.experiment.name.clone(),
        description: experiment.experiment.description.clone(),
        model: model_name(model),
        run_id: run_id.to_string(),
        started: started.to_rfc3339(),
        wall_seconds,
        sweep_kinds: experiment
            .sweep
            .kinds
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
        baselines,
        notes,
        summary,
        figures,
    };
    actpatch_report::atomic::write_bytes_atomic(
        &run_dir.join("report.md"),
        report.render().as_bytes(),
    )?;
    Ok(cells.len())
}
