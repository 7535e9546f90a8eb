//! Heatmaps of sweep results: layers (or layer/head pairs) against positions labelled
//! `token_position` (or heads), one per pair and patch kind, and the concept mean.

use std::collections::BTreeSet;

use actpatch_report::Heatmap;

use actpatch_patching::{CellIndex, PatchKind};

/// Row and column of a cell in its kind's figure.
fn row_col(kind: PatchKind, cell: &CellIndex) -> ((usize, Option<usize>), usize) {
    match (kind.has_head(), kind.by_position()) {
        (false, _) => ((cell.layer, None), cell.position.unwrap_or(0)),
        (true, true) => ((cell.layer, cell.head), cell.position.unwrap_or(0)),
        (true, false) => ((cell.layer, None), cell.head.unwrap_or(0)),
    }
}

/// The heatmap of one kind's cells, coloured by `value`. `position_labels[j]` names
/// target position j (e.g. `" France_4"`).
pub fn heatmap(
    kind: PatchKind,
    cells: &[(CellIndex, f64)],
    position_labels: &[String],
    title: String,
) -> Heatmap {
    let rows: BTreeSet<(usize, Option<usize>)> =
        cells.iter().map(|(c, _)| row_col(kind, c).0).collect();
    let cols: BTreeSet<usize> = cells.iter().map(|(c, _)| row_col(kind, c).1).collect();
    let rows: Vec<_> = rows.into_iter().collect();
    let cols: Vec<_> = cols.into_iter().collect();
    let mut values = vec![vec![f64::NAN; cols.len()]; rows.len()];
    for (cell, value) in cells {
        let (row, col) = row_col(kind, cell);
        if let (Ok(r), Ok(c)) = (rows.binary_search(&row), cols.binary_search(&col)) {
            values[r][c] = *value;
        }
    }
    let y_ticks = rows
        .iter()
        .map(|(layer, head)| match head {
            Some(h) => format!("L{layer}H{h}"),
            None => format!("{layer}"),
        })
        .collect();
    let x_ticks = cols
        .iter()
        .map(|c| {
            if kind.by_position() {
                position_labels
                    .get(*c)
                    .cloned()
                    .unwrap_or_else(|| format!("pos_{c}"))
            } else {
                format!("H{c}")
            }
        })
        .collect();
    let (x_label, y_label) = match (kind.has_head(), kind.by_position()) {
        (false, _) => ("position (clean token)", "layer"),
        (true, true) => ("position (clean token)", "layer / head"),
        (true, false) => ("head", "layer"),
    };
    Heatmap {
        title,
        x_label: x_label.into(),
        y_label: y_label.into(),
        x_ticks,
        y_ticks,
        values,
        colorbar_label: "normalized logit diff".into(),
        faded: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_by_position_rows_are_layer_head_pairs() {
        let cell = |layer, head, position| CellIndex {
            layer,
            head: Some(head),
            position: Some(position),
            src: None,
        };
        let cells = vec![
            (cell(0, 0, 0), 0.1),
            (cell(0, 1, 1), 0.2),
            (cell(1, 0, 1), 0.3),
        ];
        let labels = vec!["a_0".to_string(), "b_1".to_string()];
        let h = heatmap(PatchKind::HeadOutByPos, &cells, &labels, "t".into());
        assert_eq!(h.y_ticks, vec!["L0H0", "L0H1", "L1H0"]);
        assert_eq!(h.x_ticks, labels);
        assert_eq!(h.values[1][1], 0.2);
        assert!(h.values[1][0].is_nan());
    }
}
