//! An exact run against an approximate one: the attribution statistics the run report
//! gives an experiment that runs both (`attribution.parquet`, "Attribution accuracy"),
//! from the two runs' cells, with each run's recorded costs.

use actpatch_report::AccuracyRow;

use super::input::RunTable;
use super::join::{compared_method, LayerAxis};
use crate::outputs::accuracy::{accuracy_rows, effect, Effect};

/// The error table of the approximate side against the exact side, when exactly one
/// side's compared method is `exact` and layers are matched by index; empty otherwise.
/// The rows carry the approximate run's id.
pub fn accuracy(a: &RunTable, b: &RunTable, axis: LayerAxis) -> Vec<AccuracyRow> {
    let (Some(method_a), Some(method_b)) = (compared_method(a), compared_method(b)) else {
        return Vec::new();
    };
    let (exact, approximate) = match (method_a, method_b) {
        ("exact", "exact") => return Vec::new(),
        ("exact", _) => (a, b),
        (_, "exact") => (b, a),
        _ => return Vec::new(),
    };
    if axis != LayerAxis::Layer {
        return Vec::new();
    }
    let mut effects = Vec::new();
    for (table, method) in [
        (exact, "exact"),
        (
            approximate,
            compared_method(approximate).unwrap_or_default(),
        ),
    ] {
        let cells = table.cells.iter().filter(|c| c.method == method);
        effects.extend(cells.map(|c| Effect {
            concept: &c.concept,
            pair: &c.pair,
            direction: &c.direction,
            kind: &c.kind,
            method: &c.method,
            cell: (c.layer, c.head, c.position, c.src_position),
            effect: effect(&c.direction, c.normalized_logit_diff),
        }));
    }
    let costs: Vec<_> = exact
        .costs
        .iter()
        .chain(&approximate.costs)
        .cloned()
        .collect();
    accuracy_rows(&approximate.id, &effects, &costs)
}
