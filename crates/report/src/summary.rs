//! Findings derived from the data, one sentence per grid: for the residual stream,
//! where along the layers the effect moves from the subject tokens to the final
//! position; for component outputs and heads, the strongest cells. Shared by
//! `report.md` and `report.html`.

/// Where a cell of a grid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Spot {
    pub layer: usize,
    pub head: Option<usize>,
    pub position: Option<usize>,
}

/// Where a cell is: `L3H1 ` France_4``, the head and position where it has them.
pub fn cell_label(spot: &Spot, labels: &[String]) -> String {
    let mut text = format!("L{}", spot.layer);
    if let Some(h) = spot.head {
        text.push_str(&format!("H{h}"));
    }
    if let Some(p) = spot.position {
        let label = labels.get(p).map(String::as_str).unwrap_or_default();
        text.push_str(&format!(" `{label}`"));
    }
    text
}

/// Where the effect of a layer × position sweep sits at each layer: the position
/// with the largest value.
pub fn peak_positions(cells: &[(Spot, f64)], n_layers: usize) -> Vec<Option<(usize, f64)>> {
    (0..n_layers)
        .map(|layer| {
            cells
                .iter()
                .filter(|(c, v)| c.layer == layer && c.head.is_none() && v.is_finite())
                .filter_map(|(c, v)| c.position.map(|p| (p, *v)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        })
        .collect()
}

/// One sentence on how the effect of a position-resolved sweep moves along the layers.
pub fn flow_sentence(
    pair: &str,
    kind: &str,
    cells: &[(Spot, f64)],
    labels: &[String],
    n_layers: usize,
) -> Option<String> {
    let peaks = peak_positions(cells, n_layers);
    let last = labels.len().checked_sub(1)?;
    let (first_pos, first_value) = peaks.first().copied().flatten()?;
    let label = |p: usize| labels.get(p).cloned().unwrap_or_else(|| format!("pos_{p}"));
    // First layer from which the peak stays on the final position.
    let settle = (0..n_layers).find(|&l| {
        peaks[l..]
            .iter()
            .all(|p| p.map(|(pos, _)| pos) == Some(last))
    });
    let mut text = format!(
        "**{pair}** ({kind}): at layer 0 the effect is largest at `{}` ({first_value:.2})",
        label(first_pos)
    );
    match settle {
        Some(0) => text.push_str(", and it stays on the final position in every layer."),
        Some(l) => text.push_str(&format!(
            "; from layer {l} on it sits on the final position `{}` ({:.2} at the last layer).",
            label(last),
            peaks
                .last()
                .copied()
                .flatten()
                .map(|p| p.1)
                .unwrap_or(f64::NAN)
        )),
        None => {
            let (p, v) = peaks.last().copied().flatten()?;
            text.push_str(&format!(
                "; at the last layer it is largest at `{}` ({v:.2}), not at the final position.",
                label(p)
            ));
        }
    }
    Some(text)
}

/// One sentence about a kind's grid: for the residual stream (`resid_*`), how the
/// effect moves along the layers; for component outputs and heads, the strongest
/// three cells.
pub fn kind_sentence(
    pair: &str,
    kind: &str,
    cells: &[(Spot, f64)],
    labels: &[String],
    n_layers: usize,
) -> Option<String> {
    if kind.starts_with("resid_") {
        return flow_sentence(pair, kind, cells, labels, n_layers);
    }
    let mut sorted: Vec<&(Spot, f64)> = cells.iter().filter(|(_, v)| v.is_finite()).collect();
    sorted.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let strongest: Vec<String> = sorted
        .iter()
        .take(3)
        .map(|(cell, value)| format!("{} ({value:.2})", cell_label(cell, labels)))
        .collect();
    (!strongest.is_empty()).then(|| {
        format!(
            "**{pair}** ({kind}): strongest at {}.",
            strongest.join(", ")
        )
    })
}

/// Position labels for a mean over pairs: the shared token where every pair has
/// the same one at that position, else `pos_i`.
pub fn shared_labels(per_pair: &[Vec<String>]) -> Vec<String> {
    let n = per_pair.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|j| match per_pair.first().and_then(|l| l.get(j)) {
            Some(first) if per_pair.iter().all(|l| l.get(j) == Some(first)) => first.clone(),
            _ => format!("pos_{j}"),
        })
        .collect()
}

/// The mean over pairs of each cell, when every pair has the same cells (same token
/// length); `None` otherwise.
pub fn mean_cells<K: PartialEq + Copy>(per_pair: &[Vec<(K, f64)>]) -> Option<Vec<(K, f64)>> {
    let first = per_pair.first()?;
    let same = per_pair.iter().all(|cells| {
        cells.len() == first.len() && cells.iter().zip(first).all(|(a, b)| a.0 == b.0)
    });
    if !same || first.is_empty() {
        return None;
    }
    let n = per_pair.len() as f64;
    Some(
        first
            .iter()
            .enumerate()
            .map(|(i, (index, _))| {
                (
                    *index,
                    per_pair.iter().map(|cells| cells[i].1).sum::<f64>() / n,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(values: &[&[f64]]) -> Vec<(Spot, f64)> {
        let mut cells = Vec::new();
        for (layer, row) in values.iter().enumerate() {
            for (p, v) in row.iter().enumerate() {
                let spot = Spot {
                    layer,
                    head: None,
                    position: Some(p),
                };
                cells.push((spot, *v));
            }
        }
        cells
    }

    #[test]
    fn shared_labels_keep_common_tokens() {
        let a = vec!["x_0".to_string(), "y_1".to_string()];
        let b = vec!["x_0".to_string(), "z_1".to_string()];
        assert_eq!(shared_labels(&[a, b]), vec!["x_0", "pos_1"]);
    }

    #[test]
    fn mean_needs_identical_cells() {
        let a = vec![(0, 1.0), (1, 0.0)];
        let b = vec![(0, 0.0), (1, 1.0)];
        assert_eq!(
            mean_cells(&[a.clone(), b]).unwrap(),
            vec![(0, 0.5), (1, 0.5)]
        );
        assert!(mean_cells(&[a, vec![(0, 1.0)]]).is_none());
    }

    #[test]
    fn component_kinds_name_their_strongest_cells() {
        let cells = grid(&[&[0.0, 0.1, 0.2], &[0.0, -0.5, 0.9]]);
        let labels: Vec<String> = ["a_0", "b_1", "c_2"].map(String::from).to_vec();
        let text = kind_sentence("p", "attn_out", &cells, &labels, 2).unwrap();
        assert_eq!(
            text,
            "**p** (attn_out): strongest at L1 `c_2` (0.90), L1 `b_1` (-0.50), L0 `c_2` (0.20)."
        );
    }

    #[test]
    fn effect_moving_to_the_final_position_is_described() {
        let cells = grid(&[&[0.0, 0.9, 0.1], &[0.0, 0.5, 0.6], &[0.0, 0.0, 1.0]]);
        let labels: Vec<String> = ["<bos>_0", " France_1", " is_2"].map(String::from).to_vec();
        let text = flow_sentence("capital", "resid_pre", &cells, &labels, 3).unwrap();
        assert!(
            text.contains("layer 0 the effect is largest at ` France_1` (0.90)"),
            "{text}"
        );
        assert!(
            text.contains("from layer 1 on it sits on the final position ` is_2`"),
            "{text}"
        );
    }
}
