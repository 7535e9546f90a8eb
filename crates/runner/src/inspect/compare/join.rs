//! Joining two runs' cells on (concept, pair, patch kind, direction, layer, head,
//! position) — in
//! plain Rust over the tables polars read — layer to layer, or by relative depth.
//!
//! **Relative depth.** A cell at layer `l` of a model with `n` layers sits at depth
//! `l / n` ∈ [0, 1). With `bins` = the smaller model's layer count, its bin is
//! `floor(l / n × bins)` (computed in integers, so exact). The smaller model's layers
//! are their own bins; each bin of the larger model averages the layers that fall in
//! it (e.g. 24 layers into 12 bins: layers 2k and 2k+1 → bin k). Heads and positions
//! are matched by index.

use std::collections::BTreeMap;

use actpatch_report::CompareRow;

use super::input::RunTable;

/// How the layers of the two runs line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAxis {
    /// Layer to layer.
    Layer,
    /// Relative depth, binned into `bins` bins (see the module docs).
    Depth { bins: usize },
}

impl LayerAxis {
    /// Relative depth for two models, binned into the smaller one's layer count.
    pub fn depth(n_layers_a: usize, n_layers_b: usize) -> Self {
        LayerAxis::Depth {
            bins: n_layers_a.min(n_layers_b).max(1),
        }
    }
}

/// `floor(layer / n_layers × bins)`, in integers, clamped to the last bin.
pub fn depth_bin(layer: u32, n_layers: usize, bins: usize) -> u32 {
    let n = n_layers.max(1) as u64;
    let last = bins.max(1) as u64 - 1;
    (layer as u64 * bins as u64 / n).min(last) as u32
}

/// Where a cell sits; `layer` is the depth bin under [`LayerAxis::Depth`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub concept: String,
    pub pair: String,
    pub kind: String,
    pub direction: String,
    pub layer: u32,
    pub head: Option<u32>,
    pub position: Option<u32>,
}

/// The method whose cells a run is compared by: `exact` when the run has it, else the
/// first in its table (so an exact run compared with an `atp` run gives atp − exact).
pub(super) fn compared_method(table: &RunTable) -> Option<&str> {
    let methods = table.cells.iter().map(|c| c.method.as_str());
    methods
        .clone()
        .find(|m| *m == "exact")
        .or_else(|| methods.clone().next())
}

/// A table's cells by key: the mean normalized logit difference of the cells with
/// that key (one cell, except in a depth bin) and the clean token. Cells of one method
/// ([`compared_method`]); single pattern entries (`head_pattern_by_dest_src`, a fourth
/// axis the comparison table does not have) are left out.
fn by_key(table: &RunTable, axis: LayerAxis) -> BTreeMap<Key, (f64, Option<String>)> {
    let mut sums: BTreeMap<Key, (f64, usize, Option<String>)> = BTreeMap::new();
    let method = compared_method(table);
    for c in &table.cells {
        if Some(c.method.as_str()) != method || c.src_position.is_some() {
            continue;
        }
        let layer = match axis {
            LayerAxis::Layer => c.layer,
            LayerAxis::Depth { bins } => depth_bin(c.layer, table.n_layers, bins),
        };
        let key = Key {
            concept: c.concept.clone(),
            pair: c.pair.clone(),
            kind: c.grid_kind(),
            direction: c.direction.clone(),
            layer,
            head: c.head,
            position: c.position,
        };
        let entry = sums.entry(key).or_insert((0.0, 0, c.token.clone()));
        entry.0 += c.normalized_logit_diff;
        entry.1 += 1;
    }
    sums.into_iter()
        .map(|(k, (sum, n, token))| (k, (sum / n as f64, token)))
        .collect()
}

/// Every cell of either run, matched or not, in key order.
pub fn join(a: &RunTable, b: &RunTable, axis: LayerAxis) -> Vec<CompareRow> {
    let a_cells = by_key(a, axis);
    let mut b_cells = by_key(b, axis);
    let row = |key: &Key, token: Option<String>, va: Option<f64>, vb: Option<f64>| {
        let status = match (va, vb) {
            (Some(_), Some(_)) => "matched",
            (Some(_), None) => "only_a",
            _ => "only_b",
        };
        CompareRow {
            run_a: a.id.clone(),
            run_b: b.id.clone(),
            concept: key.concept.clone(),
            pair: key.pair.clone(),
            kind: key.kind.clone(),
            direction: key.direction.clone(),
            layer: key.layer,
            head: key.head,
            position: key.position,
            token,
            a: va,
            b: vb,
            diff: va.zip(vb).map(|(x, y)| y - x),
            status: status.into(),
        }
    };
    let mut rows: Vec<(Key, CompareRow)> = Vec::with_capacity(a_cells.len() + b_cells.len());
    for (key, (va, token)) in a_cells {
        let vb = b_cells.remove(&key);
        let token = token.or_else(|| vb.as_ref().and_then(|v| v.1.clone()));
        let r = row(&key, token, Some(va), vb.map(|v| v.0));
        rows.push((key, r));
    }
    for (key, (vb, token)) in b_cells {
        let r = row(&key, token, None, Some(vb));
        rows.push((key, r));
    }
    rows.sort_by(|x, y| x.0.cmp(&y.0));
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_bins_pair_up_layers() {
        // 24 layers into 12 bins: 2k and 2k+1 → k; 12 layers are their own bins.
        let bins: Vec<u32> = (0..24).map(|l| depth_bin(l, 24, 12)).collect();
        assert_eq!(&bins[..6], &[0, 0, 1, 1, 2, 2]);
        assert_eq!(bins[23], 11);
        assert!((0..12).all(|l| depth_bin(l, 12, 12) == l));
        // 6 layers into 4 bins: depths 0, 1/6, 2/6, 3/6, 4/6, 5/6 → 0, 0, 1, 2, 2, 3.
        let bins: Vec<u32> = (0..6).map(|l| depth_bin(l, 6, 4)).collect();
        assert_eq!(bins, vec![0, 0, 1, 2, 2, 3]);
    }
}
