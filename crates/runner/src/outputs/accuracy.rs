//! The error table: each approximate method's cells against the exact cells of the
//! same pair, direction and kind (`attribution.parquet`, the report section, and
//! `actpatch compare` of an exact run with an approximate one).

use std::collections::BTreeMap;

use actpatch_report::accuracy::agreement;
use actpatch_report::AccuracyRow;

use crate::manifest::CostRecord;
use crate::outputs::SweptPair;

/// One cell's effect, by names as the tables write them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effect<'a> {
    pub concept: &'a str,
    pub pair: &'a str,
    pub direction: &'a str,
    pub kind: &'a str,
    pub method: &'a str,
    /// (layer, head, position, source position): the cell within its kind.
    pub cell: (u32, Option<u32>, Option<u32>, Option<u32>),
    /// The normalized value minus the target run's own (0 when denoising, 1 when
    /// noising), so that |effect| ranks cells in both directions.
    pub effect: f64,
}

/// A cell's effect from its normalized logit difference in `direction`.
pub(crate) fn effect(direction: &str, normalized: f64) -> f64 {
    match direction {
        "noising" => normalized - 1.0,
        _ => normalized,
    }
}

/// The costs of one run, by names as the tables write them.
pub(crate) fn cost_records(swept: &[SweptPair]) -> Vec<CostRecord> {
    swept
        .iter()
        .flat_map(|pair| {
            pair.costs.iter().map(|c| CostRecord {
                concept: pair.plan.spec.concept.clone(),
                pair: pair.plan.name.clone(),
                direction: c.direction.name().to_string(),
                method: c.method.name().to_string(),
                kind: c.kind.map(|k| k.name().to_string()),
                seconds: c.seconds,
                passes: c.passes,
            })
        })
        .collect()
}

/// The effects of every cell of a run's pairs.
fn swept_effects<'a>(swept: &'a [SweptPair]) -> Vec<Effect<'a>> {
    let index = |i: Option<usize>| i.map(|i| i as u32);
    swept
        .iter()
        .flat_map(|pair| {
            pair.results.iter().map(|r| Effect {
                concept: &pair.plan.spec.concept,
                pair: &pair.plan.name,
                direction: r.direction.name(),
                kind: r.kind.name(),
                method: r.method.name(),
                cell: (
                    r.index.layer as u32,
                    index(r.index.head),
                    index(r.index.position),
                    index(r.index.src),
                ),
                effect: effect(r.direction.name(), r.metrics.normalized_logit_diff),
            })
        })
        .collect()
}

/// The error table of a run's own cells and costs.
pub(crate) fn run_accuracy(run_id: &str, swept: &[SweptPair]) -> Vec<AccuracyRow> {
    accuracy_rows(run_id, &swept_effects(swept), &cost_records(swept))
}

type Group<'a> = (&'a str, &'a str, &'a str, &'a str); // concept, pair, direction, kind
type Cells = BTreeMap<(u32, Option<u32>, Option<u32>, Option<u32>), f64>;

/// The effects grouped by (concept, pair, direction, kind), then by method, each in
/// the order they first appear (the sweep's order).
fn grouped<'a>(effects: &[Effect<'a>]) -> Vec<(Group<'a>, Vec<(&'a str, Cells)>)> {
    let mut groups: Vec<(Group, Vec<(&str, Cells)>)> = Vec::new();
    let mut where_is: BTreeMap<Group, usize> = BTreeMap::new();
    for e in effects {
        let group = (e.concept, e.pair, e.direction, e.kind);
        let at = *where_is.entry(group).or_insert_with(|| {
            groups.push((group, Vec::new()));
            groups.len() - 1
        });
        let methods = &mut groups[at].1;
        let m = match methods.iter().position(|(m, _)| *m == e.method) {
            Some(m) => m,
            None => {
                methods.push((e.method, Cells::new()));
                methods.len() - 1
            }
        };
        methods[m].1.insert(e.cell, e.effect);
    }
    groups
}

/// One row per (concept, pair, direction, kind, approximate method) that has exact
/// cells too: the method's estimates against the exact effects of the cells both
/// have, with the method's cost (every kind at once) and the exact sweep's for the
/// kind from `costs`. None when there are no exact cells or no approximation.
pub(crate) fn accuracy_rows(
    run_id: &str,
    effects: &[Effect],
    costs: &[CostRecord],
) -> Vec<AccuracyRow> {
    let mut rows = Vec::new();
    for ((concept, pair, direction, kind), methods) in grouped(effects) {
        let Some((_, exact)) = methods.iter().find(|(m, _)| *m == "exact") else {
            continue;
        };
        for (method, estimates) in methods.iter().filter(|(m, _)| *m != "exact") {
            let (want, got): (Vec<f64>, Vec<f64>) = exact
                .iter()
                .filter_map(|(cell, value)| estimates.get(cell).map(|e| (*value, *e)))
                .unzip();
            let cost = |m: &str, k: Option<&str>| {
                costs.iter().find(|c| {
                    (c.concept.as_str(), c.pair.as_str(), c.direction.as_str())
                        == (concept, pair, direction)
                        && c.method == m
                        && c.kind.as_deref() == k
                })
            };
            let approx = cost(method, None);
            let exact_cost = cost("exact", Some(kind));
            rows.push(AccuracyRow {
                run_id: run_id.to_string(),
                concept: concept.to_string(),
                pair: pair.to_string(),
                direction: direction.to_string(),
                kind: kind.to_string(),
                method: method.to_string(),
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
