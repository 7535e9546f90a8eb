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
    pub baselines: Vec<BaselineRow>,
    /// Paragraphs about the whole run (alignment, warnings explained).
    pub notes: Vec<String>,
    /// Findings derived from the data, one bullet each.
    pub summary: Vec<String>,
    pub figures: Vec<FigureSection>,
}

/// Escapes text for a markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

impl RunReport {
    pub fn render(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.experiment);
        if !self.description.is_empty() {
            let _ = writeln!(md, "{}\n", self.description);
        }
        let _ = writeln!(
            md,
            "- model: `{}`\n- run: `{}` (started {}, {:.1} s)\n- patch kinds: {}\n- direction: denoising (clean activations patched into the corrupted run); metric: normalized logit difference, 0 = corrupted, 1 = clean\n",
            self.model,
            self.run_id,
            self.started,
            self.wall_seconds,
            self.sweep_kinds.join(", ")
        );

        let passed = self.baselines.iter().filter(|b| b.passed).count();
        let _ = writeln!(
            md,
            "## Baselines\n\n{passed} of {} pairs passed validation.\n",
            self.baselines.len()
        );
        md.push_str("| pair | concept | clean → corrupted | answers | tokens | clean LD | corrupted LD | outcome |\n");
        md.push_str("|---|---|---|---|---|---|---|---|\n");
        for b in &self.baselines {
            let outcome = match (b.passed, b.swept) {
                (true, _) => "passed".to_string(),
                (false, true) => format!("**failed, swept anyway**: {}", b.reasons.join("; ")),
                (false, false) => format!("**failed, skipped**: {}", b.reasons.join("; ")),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} → {} | `{}` vs `{}` | {} / {} | {} | {} | {} |",
                cell(&b.pair),
                cell(&b.concept),
                cell(&b.clean),
                cell(&b.corrupted),
                cell(&b.correct),
                cell(&b.incorrect),
                b.clean_tokens.len(),
                b.corrupted_tokens.len(),
                fmt_opt(b.clean_logit_diff),
                fmt_opt(b.corrupted_logit_diff),
                cell(&outcome)
            );
        }
        md.push('\n');
        let warned: Vec<&BaselineRow> = self
            .baselines
            .iter()
            .filter(|b| !b.warnings.is_empty())
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
        for note in &self.notes {
            let _ = writeln!(md, "{note}\n");
        }

        if !self.summary.is_empty() {
            md.push_str("## Summary\n\n");
            for line in &self.summary {
                let _ = writeln!(md, "- {line}");
            }
            md.push('\n');
        }

        if !self.figures.is_empty() {
            md.push_str("## Figures\n\n");
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
        }
        md
    }
}
