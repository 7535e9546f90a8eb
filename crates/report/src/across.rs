//! Across concepts: for each concept of a run, the layer from which the final position
//! (role `end`) carries its effect, and its strongest component, with intervals, from
//! the concept table (`concepts.parquet`). One table in the report and one figure: the
//! `end` position's `resid_pre` effect by layer, a line per concept with its interval.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{Drawing, FONT, PALETTE};
use crate::tables::ConceptRow;
use crate::{ImageFormat, Result};

/// The share of the clean run's effect at which the final position counts as carrying
/// it.
pub const ARRIVED: f64 = 0.5;
/// The direction the summary reads (clean activations into the corrupted run).
const DIRECTION: &str = "denoising";
/// The final position's role.
const END: &str = "end";

/// One cell of the concept table: its layer, mean and interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub layer: u32,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    fn of(row: &ConceptRow) -> Self {
        Estimate {
            layer: row.layer,
            mean: row.mean,
            low: row.ci_low,
            high: row.ci_high,
        }
    }

    fn text(&self) -> String {
        format!("{:.2} [{:.2}, {:.2}]", self.mean, self.low, self.high)
    }
}

/// The strongest component cell of a concept (any kind but the residual stream's).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub kind: String,
    pub head: Option<u32>,
    pub role: Option<String>,
    pub estimate: Estimate,
}

/// One concept's row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptFlow {
    pub concept: String,
    pub n_pairs: u32,
    /// `resid_pre` at the `end` role, layer by layer.
    pub end_by_layer: Vec<Estimate>,
    /// The first layer whose `end` mean reaches [`ARRIVED`].
    pub arrives: Option<Estimate>,
    pub strongest: Option<Component>,
}

/// The flow of every concept with denoising `resid_pre` cells at `end`, in the order
/// of `concepts` (the run's order; others after them, by name).
pub fn flows(rows: &[ConceptRow], concepts: &[String]) -> Vec<ConceptFlow> {
    let mut names: Vec<&str> = concepts.iter().map(String::as_str).collect();
    for row in rows {
        if !names.contains(&row.concept.as_str()) {
            names.push(&row.concept);
        }
    }
    names
        .into_iter()
        .filter_map(|concept| flow(rows, concept))
        .collect()
}

fn flow(rows: &[ConceptRow], concept: &str) -> Option<ConceptFlow> {
    let of_concept = || {
        rows.iter()
            .filter(move |r| r.concept == concept && r.direction == DIRECTION)
    };
    let mut end_rows: Vec<&ConceptRow> = of_concept()
        .filter(|r| r.kind == "resid_pre" && r.role.as_deref() == Some(END))
        .collect();
    end_rows.sort_by_key(|r| r.layer);
    let end_by_layer: Vec<Estimate> = end_rows.iter().map(|r| Estimate::of(r)).collect();
    if end_by_layer.is_empty() {
        return None;
    }
    let strongest = of_concept()
        .filter(|r| !r.kind.starts_with("resid_") && r.mean.is_finite())
        .max_by(|a, b| a.mean.total_cmp(&b.mean))
        .map(|r| Component {
            kind: r.kind.clone(),
            head: r.head,
            role: r.role.clone(),
            estimate: Estimate::of(r),
        });
    Some(ConceptFlow {
        concept: concept.to_string(),
        n_pairs: end_rows.iter().map(|r| r.n_pairs).max().unwrap_or(0),
        arrives: end_by_layer.iter().find(|e| e.mean >= ARRIVED).copied(),
        end_by_layer,
        strongest,
    })
}

/// What the section says before its table.
pub fn explanation() -> String {
    format!(
        "For each concept (denoising): from which layer the final position (`end`) carries at least {:.0} % of the clean run's effect when its `resid_pre` is patched, and the component cell with the largest mean effect; each with its bootstrap interval (`concepts.parquet`).",
        ARRIVED * 100.0
    )
}

/// The section's table: its columns and one row per concept.
pub fn table(flows: &[ConceptFlow]) -> (Vec<String>, Vec<Vec<String>>) {
    let columns = [
        "concept",
        "pairs",
        "the final position (end) carries the effect from",
        "strongest component",
    ];
    let rows = flows
        .iter()
        .map(|flow| {
            let arrives = match &flow.arrives {
                Some(e) => format!("layer {}: {}", e.layer, e.text()),
                None => format!("never reaches {ARRIVED}"),
            };
            let strongest = match &flow.strongest {
                Some(c) => format!("{}: {}", component_label(c), c.estimate.text()),
                None => "— (no component kinds swept)".to_string(),
            };
            vec![
                flow.concept.clone(),
                flow.n_pairs.to_string(),
                arrives,
                strongest,
            ]
        })
        .collect();
    (columns.map(String::from).to_vec(), rows)
}

/// The report's "Across concepts" section (markdown), with `figure` when drawn.
pub fn render_section(flows: &[ConceptFlow], figure: Option<&str>) -> String {
    if flows.len() < 2 {
        return String::new();
    }
    let mut md = format!("## Across concepts\n\n{}\n\n", explanation());
    let (columns, rows) = table(flows);
    let _ = writeln!(md, "| {} |", columns.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(columns.len()));
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    if let Some(image) = figure {
        let _ = writeln!(
            md,
            "\n![the end position's effect by layer, per concept]({image})"
        );
    }
    md.push('\n');
    md
}

/// `mlp_out L12 at end`, `head_out L9.H6`.
pub fn component_label(c: &Component) -> String {
    let mut label = format!("{} L{}", c.kind, c.estimate.layer);
    if let Some(head) = c.head {
        let _ = write!(label, ".H{head}");
    }
    if let Some(role) = &c.role {
        let _ = write!(label, " at {role}");
    }
    label
}

/// The figure: each concept's `end` effect by layer with its interval.
pub struct AcrossPlot<'a> {
    pub flows: &'a [ConceptFlow],
}

impl AcrossPlot<'_> {
    pub fn save(&self, path: &Path, format: ImageFormat) -> Result<()> {
        crate::figure::save(self, path, format)
    }
}

impl Drawing for AcrossPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (720, 460)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let estimates = || self.flows.iter().flat_map(|f| f.end_by_layer.iter());
        let last = estimates().map(|e| e.layer).max().unwrap_or(1).max(1) as f64;
        let (lo, hi) = estimates()
            .flat_map(|e| [e.low, e.high])
            .filter(|v| v.is_finite())
            .fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let mut chart = ChartBuilder::on(area)
            .caption(
                "the final position's effect by layer (resid_pre at end)",
                (FONT, 16),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(54)
            .build_cartesian_2d(0.0..last, (lo - 0.05)..(hi + 0.05))?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc("mean normalized effect")
            .x_label_formatter(&|layer| format!("{layer:.0}"))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(WHITE)
            .draw()?;
        for (i, flow) in self.flows.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let upper = flow.end_by_layer.iter().map(|e| (e.layer as f64, e.high));
            let lower = flow
                .end_by_layer
                .iter()
                .rev()
                .map(|e| (e.layer as f64, e.low));
            let band: Vec<(f64, f64)> = upper.chain(lower).collect();
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                colour.mix(0.15).filled(),
            )))?;
            let line: Vec<(f64, f64)> = (flow.end_by_layer.iter())
                .map(|e| (e.layer as f64, e.mean))
                .collect();
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
                .label(flow.concept.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            if let Some(arrives) = &flow.arrives {
                let point = (arrives.layer as f64, arrives.mean);
                chart.draw_series(std::iter::once(Circle::new(point, 5, colour.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(150, 150, 150))
            .label_font((FONT, 12))
            .draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(concept: &str, kind: &str, layer: u32, role: Option<&str>, mean: f64) -> ConceptRow {
        ConceptRow {
            concept: concept.into(),
            direction: DIRECTION.into(),
            kind: kind.into(),
            layer,
            role: role.map(String::from),
            n_pairs: 24,
            mean,
            ci_low: mean - 0.1,
            ci_high: mean + 0.1,
            ..ConceptRow::default()
        }
    }

    #[test]
    fn each_concept_arrives_where_its_end_mean_first_reaches_half() {
        let rows = vec![
            row("b", "resid_pre", 0, Some("end"), 0.1),
            row("b", "resid_pre", 1, Some("end"), 0.6),
            row("b", "resid_pre", 2, Some("end"), 0.4),
            row("b", "mlp_out", 1, Some("subject.last"), 0.3),
            row("b", "attn_out", 2, Some("end"), 0.45),
            row("a", "resid_pre", 0, Some("end"), 0.2),
            row("a", "resid_pre", 1, Some("subject.last"), 0.9),
        ];
        let flows = flows(&rows, &["b".to_string(), "a".to_string()]);
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].concept, "b");
        assert_eq!(flows[0].arrives.map(|e| e.layer), Some(1));
        let strongest = flows[0].strongest.as_ref().unwrap();
        assert_eq!(component_label(strongest), "attn_out L2 at end");
        assert_eq!(flows[1].arrives, None); // 0.9 is at another role
        assert!(flows[1].strongest.is_none());
        let md = render_section(&flows, Some("figures/across.png"));
        assert!(md.contains(
            "| b | 24 | layer 1: 0.60 [0.50, 0.70] | attn_out L2 at end: 0.45 [0.35, 0.55] |"
        ));
        assert!(md.contains("| a | 24 | never reaches 0.5 | — (no component kinds swept) |"));
    }
}
