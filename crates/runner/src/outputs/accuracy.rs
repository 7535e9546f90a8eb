//! The error table: each approximate method's cells against the exact cells of the
//! same pair, direction and kind (`attribution.parquet` and the report section).

use std::collections::BTreeMap;

use actpatch_patching::{CellIndex, Direction, Method, PatchKind};
use actpatch_report::accuracy::agreement;
use actpatch_report::AccuracyRow;

use crate::outputs::SweptPair;

/// A cell's effect: its normalized value minus the target run's own (0 when
/// denoising, 1 when noising).
fn effect(direction: Direction, normalized: f64) -> f64 {
    match direction {
        Direction::Denoising => normalized,
        Direction::Noising => normalized - 1.0,
    }
}

/// One row per (pair, direction, kind, approximate method) of pairs swept with exact
/// and that method; none when the run has no exact cells or no approximation.
pub(crate) fn accuracy_rows(run_id: &str, swept: &[SweptPair]) -> Vec<AccuracyRow> {
    let mut rows = Vec::new();
    for pair in swept {
        type Key = (Direction, PatchKind, Method);
        let mut cells: BTreeMap<Key, BTreeMap<CellIndex, f64>> = BTreeMap::new();
        for r in &pair.results {
            let value = effect(r.direction, r.metrics.normalized_logit_diff);
            let key = (r.direction, r.kind, r.method);
            cells.entry(key).or_default().insert(r.index, value);
        }
        for ((direction, kind, method), estimates) in &cells {
            let Some(exact) = cells.get(&(*direction, *kind, Method::Exact)) else {
                continue;
            };
            if method.is_exact() {
                continue;
            }
            let (mut want, mut got) = (Vec::new(), Vec::new());
            for (index, value) in exact {
                if let Some(estimate) = estimates.get(index) {
                    want.push(*value);
                    got.push(*estimate);
                }
            }
            let cost = |m: Method, k: Option<PatchKind>| {
                (pair.costs.iter())
                    .find(|c| c.direction == *direction && c.method == m && c.kind == k)
            };
            let approx = cost(*method, None);
            let exact_cost = cost(Method::Exact, Some(*kind));
            rows.push(AccuracyRow {
                run_id: run_id.to_string(),
                concept: pair.plan.spec.concept.clone(),
                pair: pair.plan.name.clone(),
                direction: direction.name().to_string(),
                kind: kind.name().to_string(),
                method: method.name().to_string(),
                agreement: agreement(&want, &got),
                seconds: approx.map(|c| c.seconds),
                passes: approx.map(|c| c.passes),
                exact_seconds: exact_cost.map(|c| c.seconds),
                exact_passes: exact_cost.map(|c| c.passes),
            });
        }
    }
    rows
}
