//! The heatmaps of a page as data: a [`Grid`] is one figure (rows × columns of
//! values with what hovering a cell shows), found by its facets (pair or concept,
//! direction, kind, method, …). [`grids`] lays out a long table of cells — one per
//! (facets, layer, head, column) — the way the run's PNG figures are laid out, from
//! the data alone: rows are layers (or layer/head pairs), columns positions, roles or
//! heads. New kinds and new facet columns need no change here.

use std::collections::BTreeSet;

use serde::{Serialize, Serializer};

/// One entry of an axis: its tick label and what hovering shows about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub label: String,
    pub hover: Vec<(String, String)>,
}

/// A facet of a grid: (selector name, value).
pub type Facet = (String, String);

/// One heatmap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    /// (selector name, value), e.g. ("kind", "resid_pre"); shown on hover too.
    pub facets: Vec<(String, String)>,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// What the colour means, e.g. "normalized logit diff".
    pub value_label: String,
    pub rows: Vec<Tick>,
    pub cols: Vec<Tick>,
    /// `values[row * cols.len() + col]`; `None` where no cell was computed.
    #[serde(serialize_with = "rounded")]
    pub values: Vec<Option<f64>>,
    /// A 95% interval per cell, where the table has one (concept statistics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Vec<Option<(f64, f64)>>>,
}

/// Five significant digits: the page stays small, differences of 1e-6 stay visible.
fn round(v: f64) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    if v == 0.0 {
        return Some(0.0);
    }
    let scale = 10f64.powi(4 - v.abs().log10().floor() as i32);
    Some((v * scale).round() / scale)
}

fn rounded<S: Serializer>(values: &[Option<f64>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| v.and_then(round)))
}

/// The column a cell sits in: a position (ordered by index) or a role (ordered by
/// first appearance in the prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnKey {
    pub order: u32,
    pub label: String,
    pub hover: Vec<(String, String)>,
}

/// One cell of a long table.
#[derive(Debug, Clone, PartialEq)]
pub struct LongCell {
    pub facets: Vec<(String, String)>,
    pub layer: u32,
    pub head: Option<u32>,
    /// Position or role; `None` where the cell spans all positions.
    pub column: Option<ColumnKey>,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
}

/// How a group's cells map to rows and columns.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Rows: layers; columns: positions or roles (or one column "all").
    LayerByColumn,
    /// Rows: (layer, head); columns: positions or roles.
    HeadByColumn,
    /// Rows: layers; columns: heads.
    LayerByHead,
}

type RowKey = (u32, Option<u32>);

fn place(shape: Shape, cell: &LongCell) -> (RowKey, u32) {
    let column = cell.column.as_ref().map_or(0, |c| c.order);
    match shape {
        Shape::LayerByColumn => ((cell.layer, None), column),
        Shape::HeadByColumn => ((cell.layer, cell.head), column),
        Shape::LayerByHead => ((cell.layer, None), cell.head.unwrap_or(0)),
    }
}

/// Groups `cells` by facets (in order of first appearance) and lays each group out
/// as a grid. `column_axis` names the column axis when columns are positions or
/// roles; `title` makes a grid's title from its facets.
pub fn grids(
    cells: &[LongCell],
    column_axis: &str,
    value_label: &str,
    title: &dyn Fn(&[Facet]) -> String,
) -> Vec<Grid> {
    let mut groups: Vec<(&[Facet], Vec<&LongCell>)> = Vec::new();
    for cell in cells {
        match groups
            .iter_mut()
            .find(|(f, _)| *f == cell.facets.as_slice())
        {
            Some((_, group)) => group.push(cell),
            None => groups.push((&cell.facets, vec![cell])),
        }
    }
    groups
        .into_iter()
        .map(|(facets, group)| layout(facets, &group, column_axis, value_label, title(facets)))
        .collect()
}

fn layout(
    facets: &[(String, String)],
    cells: &[&LongCell],
    column_axis: &str,
    value_label: &str,
    title: String,
) -> Grid {
    let has_head = cells.iter().any(|c| c.head.is_some());
    let has_column = cells.iter().any(|c| c.column.is_some());
    let shape = match (has_head, has_column) {
        (true, true) => Shape::HeadByColumn,
        (true, false) => Shape::LayerByHead,
        (false, _) => Shape::LayerByColumn,
    };
    let rows: Vec<RowKey> = cells
        .iter()
        .map(|c| place(shape, c).0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cols: Vec<u32> = cells
        .iter()
        .map(|c| place(shape, c).1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut values = vec![None; rows.len() * cols.len()];
    let mut intervals = vec![None; rows.len() * cols.len()];
    for cell in cells {
        let (row, col) = place(shape, cell);
        if let (Ok(r), Ok(c)) = (rows.binary_search(&row), cols.binary_search(&col)) {
            values[r * cols.len() + c] = Some(cell.value);
            intervals[r * cols.len() + c] = cell.interval;
        }
    }
    let row_ticks = rows.iter().map(row_tick).collect();
    let col_ticks = cols
        .iter()
        .map(|&col| col_tick(shape, cells, col))
        .collect();
    let (x_label, y_label) = axis_labels(shape, has_column, column_axis);
    Grid {
        facets: facets.to_vec(),
        title,
        x_label: x_label.into(),
        y_label: y_label.into(),
        value_label: value_label.into(),
        rows: row_ticks,
        cols: col_ticks,
        values,
        intervals: intervals.iter().any(Option::is_some).then_some(intervals),
    }
}

/// The x and y axis labels of a grid of `shape`.
fn axis_labels(shape: Shape, has_column: bool, column_axis: &str) -> (&str, &'static str) {
    let layer_axis = "layer";
    match shape {
        Shape::LayerByColumn if has_column => (column_axis, layer_axis),
        Shape::LayerByColumn => ("all positions", layer_axis),
        Shape::HeadByColumn => (column_axis, "layer / head"),
        Shape::LayerByHead => ("head", layer_axis),
    }
}

/// A grid's title from its facets' values: `landmarks (landmarks) · resid_pre`.
pub fn facet_title(facets: &[Facet]) -> String {
    facets
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" · ")
}

fn row_tick(&(layer, head): &RowKey) -> Tick {
    match head {
        Some(h) => Tick {
            label: format!("L{layer}H{h}"),
            hover: vec![
                ("layer".into(), layer.to_string()),
                ("head".into(), h.to_string()),
            ],
        },
        None => Tick {
            label: layer.to_string(),
            hover: vec![("layer".into(), layer.to_string())],
        },
    }
}

fn col_tick(shape: Shape, cells: &[&LongCell], col: u32) -> Tick {
    if shape == Shape::LayerByHead {
        return Tick {
            label: format!("H{col}"),
            hover: vec![("head".into(), col.to_string())],
        };
    }
    cells
        .iter()
        .filter_map(|c| c.column.as_ref())
        .find(|k| k.order == col)
        .map(|k| Tick {
            label: k.label.clone(),
            hover: k.hover.clone(),
        })
        .unwrap_or_else(|| Tick {
            label: "all positions".into(),
            hover: vec![("position".into(), "all".into())],
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(kind: &str, layer: u32, head: Option<u32>, pos: Option<u32>, value: f64) -> LongCell {
        LongCell {
            facets: vec![("kind".into(), kind.into())],
            layer,
            head,
            column: pos.map(|p| ColumnKey {
                order: p,
                label: format!("t{p}_{p}"),
                hover: vec![("position".into(), p.to_string())],
            }),
            value,
            interval: None,
        }
    }

    fn title(f: &[(String, String)]) -> String {
        f[0].1.clone()
    }

    #[test]
    fn each_kind_is_laid_out_like_its_figure() {
        let cells = vec![
            cell("resid_pre", 0, None, Some(1), 0.5),
            cell("resid_pre", 1, None, Some(0), -0.25),
            cell("head_out", 0, Some(1), None, 0.75),
            cell("head_by_pos", 1, Some(0), Some(2), 1.0),
            cell("head_by_pos", 0, Some(1), Some(0), 2.0),
        ];
        let g = grids(&cells, "position", "v", &title);
        assert_eq!(g.len(), 3);
        // resid_pre: layers × positions, missing cells None.
        assert_eq!(
            (g[0].y_label.as_str(), g[0].x_label.as_str()),
            ("layer", "position")
        );
        assert_eq!(g[0].values, vec![None, Some(0.5), Some(-0.25), None]);
        assert_eq!(g[0].cols[1].label, "t1_1");
        // head_out: layers × heads.
        assert_eq!(g[1].cols[0].label, "H1");
        assert_eq!(g[1].values, vec![Some(0.75)]);
        // by position: (layer, head) rows.
        let rows: Vec<&str> = g[2].rows.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(rows, vec!["L0H1", "L1H0"]);
        assert_eq!(g[2].values, vec![Some(2.0), None, None, Some(1.0)]);
        assert!(g[2].intervals.is_none());
    }

    #[test]
    fn values_keep_five_significant_digits() {
        assert_eq!(round(0.123456789), Some(0.12346));
        assert_eq!(round(-1.234567e-6), Some(-1.2346e-6));
        assert_eq!(round(f64::NAN), None);
    }
}
