//! The run's `report.md`: what was run, the baselines and their validation, every
//! figure, the strongest cells, and a summary derived from the data.

use std::fmt::Write;

use crate::tables::BaselineRow;

/// One figure of the report with the cells it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureSection {
    pub heading: String,
    /// Path relative to the report.
    pub image: String,
    /// Markdown lines shown under the figure (e.g. the ten strongest cells).
    pub details: Vec<String>,
}

/// Everything `report.md` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub experiment: String,
    pub description: String,
    pub model: String,
    pub run_id: String,
    pub started: String,
    pub wall_seconds: f64,
    pub sweep_kinds: Vec<String>,
    /// `"denoising"` and/or `"noising"`.
    pub directions: Vec<String>,
    pub baselines: Vec<BaselineRow>,
    /// Pairs kept for reference (validated, not swept), with why.
    pub references: Vec<ReferencePair>,
    /// Paragraphs about the whole run (alignment, warnings explained).
    pub notes: Vec<String>,
    /// Findings derived from the data, one bullet each.
    pub summary: Vec<String>,
    /// The concepts, each with its figures and findings: the report opens with them.
    pub concepts: Vec<ConceptSection>,
    /// Per-pair figures (collapsed under the concepts when there are concepts).
    pub figures: Vec<FigureSection>,
    /// How far each approximation is from the exact sweep (runs with both).
    pub accuracy: Vec<crate::AccuracyRow>,
    /// Its scatter plots, one per kind.
    pub accuracy_figures: Vec<FigureSection>,
    /// The "Circuits" section (edge scores, [`crate::edges::render_section`]), or empty.
    pub circuits: String,
    /// The "Across concepts" section ([`crate::across::render_section`]), or empty.
    pub across: String,
}

/// One concept: its pairs, where its effect sits, its heatmaps with intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptSection {
    pub concept: String,
    /// Pairs of the concept (reference pairs left out), and how many passed.
    pub pairs: usize,
    pub passed: usize,
    /// Why pairs failed, most frequent first: (reason, count).
    pub failures: Vec<(String, usize)>,
    /// Sentences derived from the concept table.
    pub findings: Vec<String>,
    pub figures: Vec<FigureSection>,
}

/// A pair kept for reference: its baselines next to the values it was expected to
/// reproduce, and why it is not swept.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferencePair {
    pub pair: String,
    pub concept: String,
    pub clean: String,
    pub corrupted: String,
    pub clean_logit_diff: Option<f64>,
    pub corrupted_logit_diff: Option<f64>,
    /// e.g. "clean 1.068, corrupted −2.766 (± 0.01): reproduced".
    pub expected: String,
    pub reason: String,
}

/// Escapes text for a markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

/// Pairs past which a report folds each pair's sentences under the concepts'.
pub const PAIRS_SHOWN: usize = 6;

impl RunReport {
    pub fn render(&self) -> String {
        let mut md = String::new();
        self.render_header(&mut md);
        md.push_str(&self.across);
        self.render_concepts(&mut md);
        self.render_baselines(&mut md);
        self.render_references(&mut md);
        for note in &self.notes {
            let _ = writeln!(md, "{note}\n");
        }
        self.render_summary(&mut md);
        let scatters: Vec<(String, String)> = (self.accuracy_figures.iter())
            .map(|f| (f.heading.clone(), f.image.clone()))
            .collect();
        md.push_str(&crate::accuracy::render_section(&self.accuracy, &scatters));
        md.push_str(&self.circuits);
        self.render_figures(&mut md);
        md
    }

    /// Each pair's sentences; folded under a one-line title when the report opens
    /// with concepts and has more than [`PAIRS_SHOWN`] pairs.
    fn render_summary(&self, md: &mut String) {
        if self.summary.is_empty() {
            return;
        }
        let fold = !self.concepts.is_empty() && self.baselines.len() > PAIRS_SHOWN;
        md.push_str("## Summary\n\n");
        if fold {
            let _ = writeln!(
                md,
                "<details>\n<summary>Each pair's findings ({} pairs, {} sentences; the concepts' are above)</summary>\n",
                self.baselines.len(),
                self.summary.len()
            );
        }
        for line in &self.summary {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
        if fold {
            md.push_str("</details>\n\n");
        }
    }

    fn render_header(&self, md: &mut String) {
        let _ = writeln!(md, "# {}\n", self.experiment);
        if !self.description.is_empty() {
            let _ = writeln!(md, "{}\n", self.description);
        }
        let directions: Vec<&str> = self
            .directions
            .iter()
            .map(|d| match d.as_str() {
                "denoising" => "denoising (clean activations patched into the corrupted run)",
                "noising" => "noising (corrupted activations patched into the clean run)",
                other => other,
            })
            .collect();
        let _ = writeln!(
            md,
            "- model: `{}`\n- run: `{}` (started {}, {:.1} s)\n- patch kinds: {}\n- direction: {}; metric: normalized logit difference, 0 = corrupted, 1 = clean{}\n",
            self.model,
            self.run_id,
            self.started,
            self.wall_seconds,
            self.sweep_kinds.join(", "),
            directions.join(" and "),
            self.gaussian_note()
        );
    }

    /// What the header adds when pairs were corrupted by Gaussian noise.
    fn gaussian_note(&self) -> String {
        let Some(b) = self.baselines.iter().find(|b| b.is_gaussian()) else {
            return String::new();
        };
        let metric = match b.metric.as_deref() {
            Some("logit") => "the answer's logit",
            _ => "p(answer)",
        };
        format!(" (Gaussian-noise pairs: normalized {metric}, 0 = subject noised, 1 = clean; subject tokens starred in figures)")
    }

    fn render_baselines(&self, md: &mut String) {
        let swept: Vec<&BaselineRow> = self.baselines.iter().filter(|b| !b.reference).collect();
        let passed = swept.iter().filter(|b| b.passed).count();
        let _ = writeln!(
            md,
            "## Baselines\n\n{passed} of {} pairs passed validation.\n",
            swept.len()
        );
        md.push_str("| pair | concept | clean → corrupted | answers | tokens | clean LD | corrupted LD | outcome |\n");
        md.push_str("|---|---|---|---|---|---|---|---|\n");
        for b in swept {
            let outcome = match (b.passed, b.swept) {
                (true, _) => "passed".to_string(),
                (false, true) => format!("**failed, swept anyway**: {}", b.reasons.join("; ")),
                (false, false) => format!("**failed, skipped**: {}", b.reasons.join("; ")),
            };
            let [clean, corrupted] = b.baseline_labels();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} / {} | {clean} | {corrupted} | {} |",
                cell(&b.pair),
                cell(&b.concept),
                cell(&b.prompts_label()),
                cell(&b.answers_label()),
                b.clean_tokens.len(),
                b.corrupted_tokens.len(),
                cell(&outcome)
            );
        }
        md.push('\n');
        let warned: Vec<&BaselineRow> = (self.baselines.iter())
            .filter(|b| !b.warnings.is_empty() && !b.reference)
            .collect();
        if !warned.is_empty() {
            md.push_str("### Warnings\n\n");
            for b in warned {
                for w in &b.warnings {
                    let _ = writeln!(md, "- **{}**: {}", b.pair, w);
                }
            }
            md.push('\n');
        }
    }

    fn render_references(&self, md: &mut String) {
        if self.references.is_empty() {
            return;
        }
        md.push_str("## Reference pairs\n\nValidated and compared with the values they were kept for, but not swept and not part of any concept figure.\n\n");
        md.push_str("| pair | concept | clean → corrupted | clean LD | corrupted LD | expected | why not swept |\n");
        md.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.references {
            let _ = writeln!(
                md,
                "| {} | {} | {} → {} | {} | {} | {} | {} |",
                cell(&r.pair),
                cell(&r.concept),
                cell(&r.clean),
                cell(&r.corrupted),
                fmt_opt(r.clean_logit_diff),
                fmt_opt(r.corrupted_logit_diff),
                cell(&r.expected),
                cell(&r.reason)
            );
        }
        md.push('\n');
    }

    fn render_concepts(&self, md: &mut String) {
        if self.concepts.is_empty() {
            return;
        }
        md.push_str("## Concepts\n\nEach concept's pairs summarized by token role (what a position *is*: `subject.last`, `end`, …), so pairs of different lengths and templates line up. A cell is the mean normalized effect over the pairs that passed validation, with a 95% bootstrap interval (pairs resampled, grouped by template); cells whose interval contains 0 are faded and hatched. Every number is in `concepts.parquet`.\n\n");
        for concept in &self.concepts {
            let _ = writeln!(
                md,
                "### {}\n\n{} of {} pairs passed validation.\n",
                concept.concept, concept.passed, concept.pairs
            );
            for (reason, count) in &concept.failures {
                let _ = writeln!(md, "- {count} failed: {}", cell(reason));
            }
            if !concept.failures.is_empty() {
                md.push('\n');
            }
            for line in &concept.findings {
                let _ = writeln!(md, "- {line}");
            }
            md.push('\n');
            for fig in &concept.figures {
                let _ = writeln!(md, "![{}]({})\n", cell(&fig.heading), fig.image);
            }
        }
    }

    fn render_figures(&self, md: &mut String) {
        if self.figures.is_empty() {
            return;
        }
        md.push_str("## Figures\n\n");
        let collapsed = !self.concepts.is_empty();
        if collapsed {
            let _ = writeln!(
                md,
                "<details><summary>{} per-pair figures (click to open)</summary>\n",
                self.figures.len()
            );
        }
        for fig in &self.figures {
            let _ = writeln!(
                md,
                "### {}\n\n![{}]({})\n",
                fig.heading,
                cell(&fig.heading),
                fig.image
            );
            for line in &fig.details {
                let _ = writeln!(md, "{line}");
            }
            md.push('\n');
        }
        if collapsed {
            md.push_str("</details>\n");
        }
    }
}
