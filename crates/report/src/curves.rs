//! Faithfulness curves (`circuits.parquet`): one row per (scope, method, ablation,
//! circuit size), the plot of faithfulness against circuit size (a line per method and
//! ablation; linear or log size axis), and the report's "Circuit faithfulness" section.

use std::fmt::Write;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{Drawing, FONT, PALETTE};
use crate::schema::{Column, Table};
use crate::tables::write_table;
use crate::{ImageFormat, Result};

/// `scope` of the rows of one pair's own curve.
pub const SCOPE_PAIR: &str = "pair";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CircuitRow {
    pub run_id: String,
    pub experiment: String,
    pub model: String,
    /// `all` (the mean logit differences over every pair, as MIB scores a batch) or
    /// `pair` (one pair's own curve).
    pub scope: String,
    pub pair: Option<String>,
    pub n_pairs: u32,
    /// The method whose scores chose the circuits, and its steps.
    pub method: String,
    pub steps: u32,
    /// `patching`, `zero` or `mean`: what the edges outside the circuit carry.
    pub ablation: String,
    /// `abs` or `signed`: how edges were ranked (empty for a circuit file).
    pub select: String,
    /// The circuit file scored (`[circuit] evaluate`; method `file`), by file name.
    pub circuit_file: Option<String>,
    pub fraction: f64,
    pub edges_requested: u32,
    pub edges_after_pruning: u32,
    /// The logit difference with only the circuit's edges (mean over the scope's pairs).
    pub logit_diff: f64,
    /// `(m(C) − m(∅)) / (m(full) − m(∅))`.
    pub faithfulness: f64,
    pub logit_diff_empty: f64,
    pub logit_diff_full: f64,
}

pub static CIRCUITS: Table<CircuitRow> = Table {
    file: "circuits.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("experiment", |r| &r.experiment, |r, v| r.experiment = v),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("scope", |r| &r.scope, |r, v| r.scope = v),
        Column::opt_text("pair", |r| r.pair.as_deref(), |r, v| r.pair = v),
        Column::u32("n_pairs", |r| r.n_pairs, |r, v| r.n_pairs = v),
        Column::text("method", |r| &r.method, |r, v| r.method = v),
        Column::u32("steps", |r| r.steps, |r, v| r.steps = v),
        Column::text("ablation", |r| &r.ablation, |r, v| r.ablation = v),
        Column::text("select", |r| &r.select, |r, v| r.select = v),
        Column::opt_text(
            "circuit_file",
            |r| r.circuit_file.as_deref(),
            |r, v| r.circuit_file = v,
        ),
        Column::f64("fraction", |r| r.fraction, |r, v| r.fraction = v),
        Column::u32(
            "edges_requested",
            |r| r.edges_requested,
            |r, v| r.edges_requested = v,
        ),
        Column::u32(
            "edges_after_pruning",
            |r| r.edges_after_pruning,
            |r, v| r.edges_after_pruning = v,
        ),
        Column::f64("logit_diff", |r| r.logit_diff, |r, v| r.logit_diff = v),
        Column::f64(
            "faithfulness",
            |r| r.faithfulness,
            |r, v| r.faithfulness = v,
        ),
        Column::f64(
            "logit_diff_empty",
            |r| r.logit_diff_empty,
            |r, v| r.logit_diff_empty = v,
        ),
        Column::f64(
            "logit_diff_full",
            |r| r.logit_diff_full,
            |r, v| r.logit_diff_full = v,
        ),
    ],
};

pub fn write_circuits(path: &Path, rows: &[CircuitRow]) -> Result<()> {
    write_table(path, &CIRCUITS, rows)
}

/// One line of a curve plot: (fraction, faithfulness) points.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Faithfulness against circuit size.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePlot {
    pub title: String,
    pub series: Vec<CurveSeries>,
    /// A log₁₀ size axis (MIB's fractions span three decades).
    pub log_x: bool,
}

impl CurvePlot {
    pub fn save(&self, path: &Path, format: ImageFormat) -> Result<()> {
        crate::figure::save(self, path, format)
    }

    fn x(&self, fraction: f64) -> f64 {
        match self.log_x {
            true => fraction.max(1e-6).log10(),
            false => fraction,
        }
    }
}

impl Drawing for CurvePlot {
    fn size(&self) -> (u32, u32) {
        (640, 440)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let points = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let (x_lo, x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
            (lo.min(self.x(x)), hi.max(self.x(x)))
        });
        let (y_lo, y_hi) = points()
            .map(|(_, y)| y)
            .filter(|y| y.is_finite())
            .fold((0.0f64, 1.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (x_lo, x_hi) = if x_lo < x_hi {
            (x_lo, x_hi)
        } else {
            (0.0, 1.0)
        };
        let pad = 0.05 * (y_hi - y_lo);
        let log_x = self.log_x;
        // Log axis: label the decades only (0.001, 0.01, 0.1, 1).
        let x_label = move |v: &f64| match log_x {
            true if (v - v.round()).abs() < 0.02 => format!("{}", 10f64.powf(v.round())),
            true => String::new(),
            false => format!("{v:.2}"),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 16))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(54)
            .build_cartesian_2d(x_lo..x_hi, (y_lo - pad)..(y_hi + pad))?;
        chart
            .configure_mesh()
            .x_desc(match log_x {
                true => "fraction of edges (log scale)",
                false => "fraction of edges",
            })
            .y_desc("faithfulness")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(WHITE)
            .x_label_formatter(&x_label)
            .draw()?;
        let grey = RGBColor(150, 150, 150);
        chart.draw_series(LineSeries::new(
            [(x_lo, 1.0), (x_hi, 1.0)],
            grey.stroke_width(1),
        ))?;
        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let line: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|(_, y)| y.is_finite())
                .map(|(x, y)| (self.x(*x), *y))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
                .label(series.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(grey)
            .label_font((FONT, 12))
            .draw()
    }
}

/// One curve's areas for the report: method (with steps), ablation, CPR, CMD and
/// their bootstrap intervals where the run has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Areas {
    pub method: String,
    pub ablation: String,
    pub cpr: f64,
    pub cmd: f64,
    pub cpr_interval: Option<[f64; 2]>,
    pub cmd_interval: Option<[f64; 2]>,
}

/// The report's "Circuit faithfulness" section from the `all`-scope rows: CPR and CMD
/// per method and ablation, how small a circuit keeps 80 % of the behaviour, and the
/// figures.
pub fn render_section(rows: &[CircuitRow], areas: &[Areas], figures: &[String]) -> String {
    let mut out = String::from("## Circuit faithfulness\n\n");
    out.push_str("A circuit is the top edges of a method's scores, pruned as the EAP-IG library prunes; every edge outside it carries the ablated sender output. Faithfulness f = (m(C) − m(∅)) / (m(full) − m(∅)) with m the logit difference averaged over the pairs (MIB's batch score); CPR is the area under f (higher is better), CMD the area under |1 − f| (lower is better), trapezoids over the fractions of edges (`circuits.parquet`).\n\n");
    out.push_str("| method | ablation | CPR | CMD | smallest circuit with f ≥ 0.8 |\n|---|---|---:|---:|---|\n");
    let with = |value: f64, interval: Option<[f64; 2]>| match interval {
        Some([low, high]) => format!("{value:.4} [{low:.3}, {high:.3}]"),
        None => format!("{value:.4}"),
    };
    for area in areas {
        let (method, ablation) = (&area.method, &area.ablation);
        let smallest = rows
            .iter()
            .filter(|r| {
                r.scope == "all"
                    && &r.method_label() == method
                    && &r.ablation == ablation
                    && r.faithfulness >= 0.8
            })
            .min_by(|a, b| a.fraction.total_cmp(&b.fraction))
            .map_or("none".to_string(), |r| {
                format!(
                    "{} edges ({:.1} %)",
                    r.edges_after_pruning,
                    100.0 * r.fraction
                )
            });
        let (cpr, cmd) = (
            with(area.cpr, area.cpr_interval),
            with(area.cmd, area.cmd_interval),
        );
        let _ = writeln!(
            out,
            "| {method} | {ablation} | {cpr} | {cmd} | {smallest} |"
        );
    }
    out.push('\n');
    out.push_str(&points_table(rows, areas));
    out.push_str(&files_table(rows));
    for figure in figures {
        let _ = writeln!(out, "![faithfulness curves]({figure})\n");
    }
    out
}

/// Faithfulness at every size: a row per method and ablation, a column per fraction.
fn points_table(rows: &[CircuitRow], areas: &[Areas]) -> String {
    let all: Vec<&CircuitRow> = rows
        .iter()
        .filter(|r| r.scope == "all" && r.circuit_file.is_none())
        .collect();
    let mut fractions: Vec<f64> = all.iter().map(|r| r.fraction).collect();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let mut out = String::from("| method | ablation |");
    for f in &fractions {
        let _ = write!(out, " {} % |", 100.0 * f);
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(fractions.len()));
    out.push('\n');
    for area in areas {
        let (method, ablation) = (&area.method, &area.ablation);
        let _ = write!(out, "| {method} | {ablation} |");
        for f in &fractions {
            let point = all.iter().find(|r| {
                &r.method_label() == method && &r.ablation == ablation && r.fraction == *f
            });
            let _ = write!(
                out,
                " {} |",
                point.map_or(String::new(), |r| format!(
                    "{:.3} ({})",
                    r.faithfulness, r.edges_after_pruning
                ))
            );
        }
        out.push('\n');
    }
    out.push_str("\nEach cell: faithfulness (edges left after pruning).\n\n");
    out
}

/// The circuit files scored (`[circuit] evaluate`): size and faithfulness per ablation.
fn files_table(rows: &[CircuitRow]) -> String {
    let files: Vec<&CircuitRow> = rows
        .iter()
        .filter(|r| r.scope == "all" && r.circuit_file.is_some())
        .collect();
    if files.is_empty() {
        return String::new();
    }
    let mut out = String::from("Circuit files scored:\n\n| file | ablation | edges (after pruning) | faithfulness |\n|---|---|---:|---:|\n");
    for row in files {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} ({}) | {:.3} |",
            row.circuit_file.as_deref().unwrap_or(""),
            row.ablation,
            row.edges_requested,
            row.edges_after_pruning,
            row.faithfulness
        );
    }
    out.push('\n');
    out
}

impl CircuitRow {
    /// `eap-ig-inputs(5)`, `eap`.
    pub fn method_label(&self) -> String {
        crate::circuit_graph::method_label(&self.method, self.steps)
    }
}
