//! The page's circuit sections: the strongest edges drawn as a graph (inline SVG, an
//! edge's `<title>` is its hover text: sender, receiver, score, exact effect), and the
//! faithfulness curves (a point's `<title>`: method, ablation, size, f), from the
//! manifest's `circuit_top_edges` and `circuit_areas` and `circuits.parquet`.

use std::fmt::Write;

use polars::prelude::DataFrame;
use serde_json::Value;

use super::columns::{numbers, texts};
use super::{escape, Block, Section, TableBlock};
use crate::circuit_graph::{method_label, place};

/// One edge of the manifest's `circuit_top_edges`.
struct TopEdge {
    method: String,
    sender: String,
    receiver: String,
    input: String,
    score: f64,
    exact: Option<f64>,
}

fn top_edges(manifest: &Value) -> Vec<TopEdge> {
    let Some(edges) = manifest["circuit_top_edges"].as_array() else {
        return Vec::new();
    };
    edges
        .iter()
        .filter_map(|e| {
            Some(TopEdge {
                method: e["method"].as_str()?.to_string(),
                sender: e["sender"].as_str()?.to_string(),
                receiver: e["receiver"].as_str()?.to_string(),
                input: e["receiver_input"].as_str()?.to_string(),
                score: e["score"].as_f64()?,
                exact: e["exact"].as_f64(),
            })
        })
        .collect()
}

/// The first method's top edges as an SVG graph.
fn graph_svg(edges: &[&TopEdge], n_layers: usize, n_heads: usize) -> String {
    let (width, height) = (
        80.0 + 64.0 * (n_layers as f64 + 2.0),
        60.0 + 26.0 * (n_heads as f64 + 1.0),
    );
    let at = |(c, r): (f64, f64)| (40.0 + 64.0 * c, 30.0 + 26.0 * r);
    let largest = edges.iter().map(|e| e.score.abs()).fold(1e-12, f64::max);
    let mut svg = format!(
        "<svg class=\"circuit\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">"
    );
    let mut nodes: Vec<&str> = Vec::new();
    for e in edges {
        let (Some(from), Some(to)) = (
            place(&e.sender, n_layers, n_heads),
            place(&e.receiver, n_layers, n_heads),
        ) else {
            continue;
        };
        let ((x1, y1), (x2, y2)) = (at(from), at(to));
        let colour = if e.score >= 0.0 { "#2166ac" } else { "#b2182b" };
        let exact = e
            .exact
            .map_or(String::new(), |x| format!(", exact {x:+.4}"));
        let _ = write!(
            svg,
            "<line class=\"edge\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\" stroke-opacity=\"0.75\" stroke-width=\"{:.1}\"><title>{} → {} ({}): score {:+.4}{exact}</title></line>",
            1.0 + 5.0 * e.score.abs() / largest,
            escape(&e.sender),
            escape(&e.receiver),
            escape(&e.input),
            e.score
        );
        nodes.extend([e.sender.as_str(), e.receiver.as_str()]);
    }
    nodes.sort_unstable();
    nodes.dedup();
    for node in nodes {
        if let Some(p) = place(node, n_layers, n_heads) {
            let (x, y) = at(p);
            let _ = write!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#222\"><title>{}</title></circle><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                escape(node),
                x + 5.0,
                y - 5.0,
                escape(node)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The "Circuits" section, when the manifest has the top edges.
pub fn edges_section(manifest: &Value) -> Option<Section> {
    let edges = top_edges(manifest);
    let first = edges.first()?.method.clone();
    let n_layers = manifest["model"]["n_layers"].as_u64().unwrap_or(0) as usize;
    let n_heads = manifest["model"]["n_heads"].as_u64().unwrap_or(0) as usize;
    let drawn: Vec<&TopEdge> = edges.iter().filter(|e| e.method == first).collect();
    let table = TableBlock {
        columns: ["method", "edge", "score", "exact"]
            .map(String::from)
            .to_vec(),
        rows: edges
            .iter()
            .map(|e| {
                let input = match e.input.as_str() {
                    "q" | "k" | "v" => format!("<{}>", e.input),
                    _ => String::new(),
                };
                vec![
                    e.method.clone(),
                    format!("`{}->{}{input}`", e.sender, e.receiver),
                    format!("{:+.4}", e.score),
                    e.exact.map_or(String::new(), |x| format!("{x:+.4}")),
                ]
            })
            .collect(),
    };
    Some(Section {
        heading: "Circuits".into(),
        blocks: vec![
            Block::Text(format!("The strongest edges of `{first}`, mean over every pair, in logit-difference units (the change of the clean run's logit difference when that edge alone carries the ablated output; `edges.parquet` has every edge). Width: |score|; blue: positive, red: negative. Hover an edge for its score and exact effect.")),
            Block::Svg(graph_svg(&drawn, n_layers, n_heads)),
            Block::Table(table),
        ],
    })
}

/// A curve's point: (fraction of edges, faithfulness, edges after pruning).
type Point = (f64, f64, u32);

/// The curves as an SVG plot: faithfulness against log₁₀ of the fraction of edges.
fn curves_svg(series: &[(String, Vec<Point>)]) -> String {
    let (width, height, left, top, plot_w, plot_h) = (640.0, 360.0, 50.0, 20.0, 560.0, 300.0);
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let (x_lo, x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.0.max(1e-6).log10()), hi.max(p.0.max(1e-6).log10()))
    });
    let (y_lo, y_hi) = points()
        .filter(|p| p.1.is_finite())
        .fold((0.0f64, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let x_span = if x_hi > x_lo { x_hi - x_lo } else { 1.0 };
    let y_span = y_hi - y_lo;
    let x = |f: f64| left + plot_w * (f.max(1e-6).log10() - x_lo) / x_span;
    let y = |v: f64| top + plot_h * (y_hi - v) / y_span;
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let mut svg = format!("<svg class=\"curves\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">");
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>",
        y(1.0),
        left + plot_w,
        y(1.0)
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ccc\"/>",
        y(0.0),
        left + plot_w,
        y(0.0)
    );
    let _ = write!(svg, "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">f = 1</text><text x=\"4\" y=\"{:.1}\" font-size=\"10\">0</text>", y(1.0) + 3.0, y(0.0) + 3.0);
    for (i, (name, line)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let path: Vec<String> = line
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>", path.join(" "), escape(name));
        for p in line.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(
                svg,
                "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{}: {} % of edges ({} after pruning), f = {:.3}</title></circle>",
                x(p.0),
                y(p.1),
                escape(name),
                100.0 * p.0,
                p.2,
                p.1
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            left + 8.0,
            top + 14.0 * (i as f64 + 1.0),
            escape(name)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">fraction of edges (log scale)</text></svg>",
        left + plot_w / 2.0 - 70.0,
        height - 8.0
    );
    svg
}

/// The "Circuit faithfulness" section from `circuits.parquet`'s rows over every pair
/// and the manifest's CPR and CMD.
pub fn curves_section(frame: &DataFrame, manifest: &Value) -> Option<Section> {
    let text = |name: &str| texts(frame, name);
    let number = |name: &str| numbers(frame, name);
    let (scope, method, ablation) = (text("scope")?, text("method")?, text("ablation")?);
    let (steps, fraction, f, edges) = (
        number("steps")?,
        number("fraction")?,
        number("faithfulness")?,
        number("edges_after_pruning")?,
    );
    let mut series: Vec<(String, Vec<Point>)> = Vec::new();
    for i in 0..frame.height() {
        if scope[i].as_deref() != Some("all") || method[i].as_deref() == Some("file") {
            continue;
        }
        let label = method_label(
            method[i].as_deref().unwrap_or_default(),
            steps[i].unwrap_or(0.0) as u32,
        );
        let name = format!("{label} · {}", ablation[i].clone().unwrap_or_default());
        let point = (
            fraction[i].unwrap_or(f64::NAN),
            f[i].unwrap_or(f64::NAN),
            edges[i].unwrap_or(0.0) as u32,
        );
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, line)) => line.push(point),
            None => series.push((name, vec![point])),
        }
    }
    if series.is_empty() {
        return None;
    }
    let areas = manifest["circuit_areas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let table = TableBlock {
        columns: ["method", "ablation", "CPR", "CMD"]
            .map(String::from)
            .to_vec(),
        rows: areas
            .iter()
            .map(|a| {
                let value =
                    |key: &str| a[key].as_f64().map_or(String::new(), |v| format!("{v:.4}"));
                vec![
                    a["method"].as_str().unwrap_or("").to_string(),
                    a["ablation"].as_str().unwrap_or("").to_string(),
                    value("cpr"),
                    value("cmd"),
                ]
            })
            .collect(),
    };
    Some(Section {
        heading: "Circuit faithfulness".into(),
        blocks: vec![
            Block::Text("Faithfulness f = (m(C) − m(∅)) / (m(full) − m(∅)) of each method's circuits against their size (MIB's CPR: area under f, higher is better; CMD: area under |1 − f|, lower is better). Hover a point for its size and f.".into()),
            Block::Svg(curves_svg(&series)),
            Block::Table(table),
        ],
    })
}
