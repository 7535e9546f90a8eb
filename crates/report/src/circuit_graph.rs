//! A circuit drawn as a graph: nodes placed by layer (the input on the left, the logits
//! on the right; in each layer its heads stacked, the MLP below them), the strongest
//! edges as arrows whose width grows with |score|, blue where the score is positive and
//! red where negative. PNG and SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{Drawing, FONT};
use crate::{ImageFormat, Result};

/// One edge to draw: sender and receiver node names (`input`, `a3.h1`, `m3`, `logits`),
/// the receiver's input (`q`, `k`, `v`, `mlp`, `logits`) and the score.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnEdge {
    pub sender: String,
    pub receiver: String,
    pub input: String,
    pub score: f64,
}

/// A circuit's top edges in a model of `n_layers` layers of `n_heads` heads.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitGraph {
    pub title: String,
    pub n_layers: usize,
    pub n_heads: usize,
    pub edges: Vec<DrawnEdge>,
}

const BLUE: RGBColor = RGBColor(33, 102, 172);
const RED: RGBColor = RGBColor(178, 24, 43);

impl CircuitGraph {
    pub fn save(&self, path: &Path, format: ImageFormat) -> Result<()> {
        crate::figure::save(self, path, format)
    }
}

/// A node's place in a model of `n_layers` layers of `n_heads` heads: (column, row) with
/// the input in column 0, layer `l` in column `l + 1`, the logits last; heads in rows
/// 0.., the MLP in row `n_heads` (the figure's and the report page's layout).
pub fn place(node: &str, n_layers: usize, n_heads: usize) -> Option<(f64, f64)> {
    let mid = n_heads as f64 / 2.0;
    match node {
        "input" => Some((0.0, mid)),
        "logits" => Some((n_layers as f64 + 1.0, mid)),
        _ => match node.strip_prefix('m') {
            Some(layer) => Some((layer.parse::<f64>().ok()? + 1.0, n_heads as f64)),
            None => {
                let (layer, head) = node.strip_prefix('a')?.split_once(".h")?;
                Some((layer.parse::<f64>().ok()? + 1.0, head.parse().ok()?))
            }
        },
    }
}

/// A method's label with its steps: `eap`, `eap-ig-inputs(5)`.
pub fn method_label(method: &str, steps: u32) -> String {
    match steps {
        0 => method.to_string(),
        s => format!("{method}({s})"),
    }
}

impl Drawing for CircuitGraph {
    fn size(&self) -> (u32, u32) {
        let width = (120 + 48 * (self.n_layers + 2)).clamp(480, 1600) as u32;
        let height = (140 + 26 * (self.n_heads + 1)).clamp(320, 900) as u32;
        (width, height)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let x_max = self.n_layers as f64 + 1.0;
        let y_max = self.n_heads as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 16))
            .margin(24)
            .x_label_area_size(30)
            .build_cartesian_2d(-0.5..x_max + 0.5, (y_max + 0.7)..-0.7)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(self.n_layers + 2)
            .x_label_formatter(&|x| {
                let column = x.round() as usize;
                match column {
                    0 => "input".into(),
                    c if c == self.n_layers + 1 => "logits".into(),
                    c => format!("L{}", c - 1),
                }
            })
            .label_style((FONT, 11))
            .light_line_style(WHITE)
            .draw()?;
        let largest = self
            .edges
            .iter()
            .map(|e| e.score.abs())
            .fold(0.0, f64::max)
            .max(1e-12);
        let mut nodes: Vec<&str> = Vec::new();
        for edge in &self.edges {
            let (Some(from), Some(to)) = (
                place(&edge.sender, self.n_layers, self.n_heads),
                place(&edge.receiver, self.n_layers, self.n_heads),
            ) else {
                continue;
            };
            let colour = if edge.score >= 0.0 { BLUE } else { RED };
            let width = (1.0 + 5.0 * edge.score.abs() / largest).round() as u32;
            chart.draw_series(LineSeries::new(
                [from, to],
                colour.mix(0.75).stroke_width(width),
            ))?;
            nodes.extend([edge.sender.as_str(), edge.receiver.as_str()]);
        }
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            if let Some(at) = place(node, self.n_layers, self.n_heads) {
                chart.draw_series([Circle::new(at, 5, BLACK.filled())])?;
                chart.draw_series([Text::new(
                    node.to_string(),
                    (at.0 + 0.08, at.1 - 0.25),
                    (FONT, 11),
                )])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sit_by_layer_and_head() {
        assert_eq!(place("input", 2, 4), Some((0.0, 2.0)));
        assert_eq!(place("a1.h3", 2, 4), Some((2.0, 3.0)));
        assert_eq!(place("m0", 2, 4), Some((1.0, 4.0)));
        assert_eq!(place("logits", 2, 4), Some((3.0, 2.0)));
        assert_eq!(place("x", 2, 4), None);
        assert_eq!(method_label("eap-ig-inputs", 5), "eap-ig-inputs(5)");
        assert_eq!(method_label("eap", 0), "eap");
    }
}
