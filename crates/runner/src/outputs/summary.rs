//! Findings derived from the data: the strongest cells (here), and one sentence per
//! grid ([`actpatch_report::summary`], shared with `report.html`).

use actpatch_report::summary::{self, cell_label, Spot};

use actpatch_patching::{CellIndex, CellResult, PatchKind};

fn spot(cell: &CellIndex) -> Spot {
    Spot {
        layer: cell.layer,
        head: cell.head,
        position: cell.position,
    }
}

/// A readable name of a cell: `resid_pre L3 ` France_4``.
pub fn describe(kind: PatchKind, cell: &CellIndex, labels: &[String]) -> String {
    format!("{kind} {}", cell_label(&spot(cell), labels))
}

/// Markdown table of the `n` cells with the largest |normalized effect|; `traced`: the
/// metric's name for a Gaussian-noise pair (`p(answer)`), which has no logit difference.
pub fn top_cells(
    results: &[CellResult],
    labels: &[String],
    n: usize,
    traced: Option<&str>,
) -> Vec<String> {
    let mut sorted: Vec<&CellResult> = results.iter().collect();
    sorted.sort_by(|a, b| {
        b.metrics
            .normalized_logit_diff
            .abs()
            .total_cmp(&a.metrics.normalized_logit_diff.abs())
    });
    let header = match traced {
        Some(metric) => format!("| cell | normalized {metric} | p(answer) | KL from clean |"),
        None => "| cell | normalized LD | logit diff | p(correct) | KL from clean |".into(),
    };
    let rule = match traced {
        Some(_) => "|---|---|---|---|",
        None => "|---|---|---|---|---|",
    };
    let mut lines = vec![format!("Strongest {n} cells:\n"), header, rule.into()];
    for r in sorted.into_iter().take(n) {
        let cell = describe(r.kind, &r.index, labels).replace('|', "\\|");
        let (normalized, p, kl) = (
            r.metrics.normalized_logit_diff,
            optional(r.metrics.prob_correct),
            optional(r.metrics.kl_div),
        );
        lines.push(match traced {
            Some(_) => format!("| {cell} | {normalized:.3} | {p} | {kl} |"),
            None => format!(
                "| {cell} | {normalized:.3} | {:.3} | {p} | {kl} |",
                r.metrics.logit_diff
            ),
        });
    }
    lines
}

fn optional(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.3}"))
        .unwrap_or_else(|| "–".into())
}

/// One sentence about a kind's grid (see [`actpatch_report::summary::kind_sentence`]).
pub fn kind_sentence(
    pair: &str,
    kind: &str,
    cells: &[(CellIndex, f64)],
    labels: &[String],
    n_layers: usize,
) -> Option<String> {
    let spots: Vec<(Spot, f64)> = cells.iter().map(|(c, v)| (spot(c), *v)).collect();
    summary::kind_sentence(pair, kind, &spots, labels, n_layers)
}
