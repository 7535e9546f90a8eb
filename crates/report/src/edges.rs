//! `edges.parquet`: one row per (scope, method, edge) of a circuit run — each pair's
//! scores, and their means per concept and over every pair — and the report's
//! "Circuits" section.
//!
//! Scores are in the metric's units (logit difference) and the EAP-IG library's
//! direction: the (estimated) change of the clean run's logit difference when that
//! edge alone carries the ablated sender output. `normalized` divides by the scope's
//! clean − corrupted logit difference, so −1 is the whole margin lost.

use std::fmt::Write;
use std::path::Path;

use crate::accuracy::agreement;
use crate::schema::{Column, Table};
use crate::tables::write_table;
use crate::Result;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EdgeRow {
    pub run_id: String,
    pub experiment: String,
    pub model: String,
    /// `pair`, `concept` (the mean over a concept's pairs) or `all` (over every pair).
    pub scope: String,
    /// The pair's name (`pair` rows only).
    pub pair: Option<String>,
    /// The pair's concept, or the concept averaged (`all` rows: none).
    pub concept: Option<String>,
    /// Pairs averaged (1 for a pair).
    pub n_pairs: u32,
    pub method: String,
    /// Integration steps (0 for methods without).
    pub steps: u32,
    pub ablation: String,
    /// The library's edge name, e.g. `a0.h1->a1.h0<q>`.
    pub edge: String,
    pub sender: String,
    pub receiver: String,
    /// `q`, `k`, `v`, `mlp` or `logits`.
    pub receiver_input: String,
    /// TransformerLens hooks: `hook_embed`, `blocks.L.attn.hook_result`, `blocks.L.hook_mlp_out`.
    pub sender_hook: String,
    pub sender_head: Option<u32>,
    /// `blocks.L.hook_q_input`, …, `blocks.L.hook_mlp_in`, `blocks.{last}.hook_resid_post`.
    pub receiver_hook: String,
    pub receiver_head: Option<u32>,
    pub score: f64,
    pub normalized: f64,
    /// The exact effect where `exact` ran on this edge (same scope and ablation).
    pub exact: Option<f64>,
    /// `score − exact` where both exist.
    pub error: Option<f64>,
    /// The score's bootstrap interval over the scope's pairs (`[statistics]`), on each
    /// method's `[circuit] top` strongest edges of a concept's or all pairs' mean.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

pub static EDGES: Table<EdgeRow> = Table {
    file: "edges.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("experiment", |r| &r.experiment, |r, v| r.experiment = v),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("scope", |r| &r.scope, |r, v| r.scope = v),
        Column::opt_text("pair", |r| r.pair.as_deref(), |r, v| r.pair = v),
        Column::opt_text("concept", |r| r.concept.as_deref(), |r, v| r.concept = v),
        Column::u32("n_pairs", |r| r.n_pairs, |r, v| r.n_pairs = v),
        Column::text("method", |r| &r.method, |r, v| r.method = v),
        Column::u32("steps", |r| r.steps, |r, v| r.steps = v),
        Column::text("ablation", |r| &r.ablation, |r, v| r.ablation = v),
        Column::text("edge", |r| &r.edge, |r, v| r.edge = v),
        Column::text("sender", |r| &r.sender, |r, v| r.sender = v),
        Column::text("receiver", |r| &r.receiver, |r, v| r.receiver = v),
        Column::text(
            "receiver_input",
            |r| &r.receiver_input,
            |r, v| r.receiver_input = v,
        ),
        Column::text("sender_hook", |r| &r.sender_hook, |r, v| r.sender_hook = v),
        Column::opt_u32("sender_head", |r| r.sender_head, |r, v| r.sender_head = v),
        Column::text(
            "receiver_hook",
            |r| &r.receiver_hook,
            |r, v| r.receiver_hook = v,
        ),
        Column::opt_u32(
            "receiver_head",
            |r| r.receiver_head,
            |r, v| r.receiver_head = v,
        ),
        Column::f64("score", |r| r.score, |r, v| r.score = v),
        Column::f64("normalized", |r| r.normalized, |r, v| r.normalized = v),
        Column::opt_f64("exact", |r| r.exact, |r, v| r.exact = v),
        Column::opt_f64("error", |r| r.error, |r, v| r.error = v),
        Column::opt_f64("ci_low", |r| r.ci_low, |r, v| r.ci_low = v),
        Column::opt_f64("ci_high", |r| r.ci_high, |r, v| r.ci_high = v),
    ],
};

pub fn write_edges(path: &Path, rows: &[EdgeRow]) -> Result<()> {
    write_table(path, &EDGES, rows)
}

/// The report's "Circuits" section from the `all`-scope rows: per method, its top
/// `top` edges by |score| (with the exact effect where known), and its agreement with
/// `exact` over the edges both scored.
pub fn render_section(
    rows: &[EdgeRow],
    top: usize,
    circuit_files: &[String],
    figures: &[String],
) -> String {
    let all: Vec<&EdgeRow> = rows.iter().filter(|r| r.scope == "all").collect();
    let mut out = String::from("## Circuits\n\n");
    let n_pairs = all.first().map_or(0, |r| r.n_pairs);
    let _ = writeln!(
        out,
        "Edge scores in logit-difference units, mean over {n_pairs} pairs, in the EAP-IG library's direction: the change of the clean run's logit difference when that edge alone carries the ablated sender output (`edges.parquet`; the library's graph JSON in {}).\n",
        circuit_files.join(", ")
    );
    for figure in figures {
        let _ = writeln!(out, "![the circuit's strongest edges (width: |score|; blue: positive, red: negative)]({figure})\n");
    }
    for (method, steps) in methods_of(rows) {
        let of_method: Vec<&&EdgeRow> = all
            .iter()
            .filter(|r| r.method == method && r.steps == steps)
            .collect();
        let ablation = of_method.first().map_or("", |r| r.ablation.as_str());
        let label = crate::circuit_graph::method_label(&method, steps);
        let _ = writeln!(out, "### {label}, {ablation} ablation\n");
        let scored: Vec<(f64, f64)> = of_method
            .iter()
            .filter_map(|r| r.exact.map(|e| (e, r.score)))
            .collect();
        if method != "exact" && scored.len() > 1 {
            let (exact, estimate): (Vec<f64>, Vec<f64>) = scored.iter().copied().unzip();
            let a = agreement(&exact, &estimate);
            let fmt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
            let _ = writeln!(
                out,
                "Against `exact` on {} edges: Spearman {}, Pearson {}, top-10 overlap {:.0} %, largest error {:.4}, median error {:.4}.\n",
                a.cells,
                fmt(a.spearman),
                fmt(a.pearson),
                100.0 * a.recall_top10,
                a.max_abs_error,
                a.median_abs_error
            );
        }
        out.push_str(
            "| edge | score | 95 % interval | normalized | exact |\n|---|---:|---|---:|---:|\n",
        );
        for row in strongest(rows, (&method, steps), top) {
            let exact = row.exact.map_or("".to_string(), |e| format!("{e:+.4}"));
            let interval = match (row.ci_low, row.ci_high) {
                (Some(low), Some(high)) => format!("[{low:+.4}, {high:+.4}]"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {:+.4} | {interval} | {:+.3} | {exact} |",
                row.edge, row.score, row.normalized
            );
        }
        out.push('\n');
    }
    out
}

/// The methods of the rows over every pair, in the order they first appear:
/// (method, steps).
pub fn methods_of(rows: &[EdgeRow]) -> Vec<(String, u32)> {
    let mut methods: Vec<(String, u32)> = Vec::new();
    for row in rows.iter().filter(|r| r.scope == "all") {
        if !methods
            .iter()
            .any(|(m, s)| *m == row.method && *s == row.steps)
        {
            methods.push((row.method.clone(), row.steps));
        }
    }
    methods
}

/// A method's `top` strongest edges over every pair (the `all` rows), by |score|.
pub fn strongest<'a>(
    rows: &'a [EdgeRow],
    (method, steps): (&str, u32),
    top: usize,
) -> Vec<&'a EdgeRow> {
    let mut of_method: Vec<&EdgeRow> = rows
        .iter()
        .filter(|r| r.scope == "all" && r.method == method && r.steps == steps)
        .collect();
    of_method.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
    of_method.truncate(top);
    of_method
}
