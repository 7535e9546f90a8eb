//! The cells of a run's concept heatmaps, read from `concepts.parquet`.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use super::columns::{numbers, texts};
use super::grid::{ColumnKey, LongCell};
use super::SUBJECT;

/// Concept heatmaps from `concepts.parquet` (one row per concept, direction, kind,
/// layer, head, role: `n_pairs`, `mean`, `ci_low`, `ci_high`); roles are columns in
/// order of first appearance. Rows missing a required value are left out.
pub fn concept_cells(frame: &DataFrame) -> Vec<LongCell> {
    let (Some(concept), Some(kind), Some(layer), Some(role), Some(mean)) = (
        texts(frame, "concept"),
        texts(frame, "kind"),
        numbers(frame, "layer"),
        texts(frame, "role"),
        numbers(frame, "mean"),
    ) else {
        return Vec::new();
    };
    let optional = |name| texts(frame, name).unwrap_or_else(|| vec![None; frame.height()]);
    let (direction, method) = (optional("direction"), optional("method"));
    let head = numbers(frame, "head").unwrap_or_else(|| vec![None; frame.height()]);
    let n_pairs = numbers(frame, "n_pairs").unwrap_or_else(|| vec![None; frame.height()]);
    let (low, high) = (
        numbers(frame, "ci_low").unwrap_or_else(|| vec![None; frame.height()]),
        numbers(frame, "ci_high").unwrap_or_else(|| vec![None; frame.height()]),
    );
    // The facet names a concept by its pair count: the most pairs any of its cells
    // has (a role missing from some templates has fewer), one facet per concept.
    let mut most_pairs: BTreeMap<&str, f64> = BTreeMap::new();
    for (c, n) in concept.iter().zip(&n_pairs) {
        if let (Some(c), Some(n)) = (c, n) {
            let most = most_pairs.entry(c.as_str()).or_insert(0.0);
            *most = most.max(*n);
        }
    }
    let mut roles: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut cells = Vec::new();
    for i in 0..frame.height() {
        let (Some(c), Some(k), Some(l), Some(r), Some(m)) =
            (&concept[i], &kind[i], layer[i], &role[i], mean[i])
        else {
            continue;
        };
        let next = roles.iter().filter(|((rc, _), _)| rc == c).count() as u32;
        let order = *roles.entry((c.clone(), r.clone())).or_insert(next);
        let subject = match most_pairs.get(c.as_str()) {
            Some(n) => format!("{c}: {n} pairs"),
            None => format!("{c}: all pairs"),
        };
        let mut facets = vec![(SUBJECT.to_string(), subject)];
        if let Some(d) = &direction[i] {
            facets.push(("direction".into(), d.clone()));
        }
        facets.push(("kind".into(), k.clone()));
        if let Some(m) = &method[i] {
            facets.push(("method".into(), m.clone()));
        }
        cells.push(LongCell {
            facets,
            layer: l as u32,
            head: head[i].map(|h| h as u32),
            column: Some(ColumnKey {
                order,
                label: r.clone(),
                hover: vec![("role".into(), r.clone())],
            }),
            value: m,
            interval: low[i].zip(high[i]),
        });
    }
    cells
}
