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
pub(crate) fn swept_effects<'a>(swept: &'a [SweptPair]) -> Vec<Effect<'a>> {
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

/// One approximate method's cells of one (concept, pair, direction, kind) next to the
/// exact ones: (exact effect, estimated effect) for every cell both have.
pub(crate) struct Paired<'a> {
    pub concept: &'a str,
    pub pair: &'a str,
    pub direction: &'a str,
    pub kind: &'a str,
    pub method: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Every approximate method's cells against the exact cells of the same (concept,
/// pair, direction, kind), in the sweep's order; none where there are no exact cells.
pub(crate) fn paired<'a>(effects: &[Effect<'a>]) -> Vec<Paired<'a>> {
    let mut paired = Vec::new();
    for ((concept, pair, direction, kind), methods) in grouped(effects) {
        let Some((_, exact)) = methods.iter().find(|(m, _)| *m == "exact") else {
            continue;
        };
        for (method, estimates) in methods.iter().filter(|(m, _)| *m != "exact") {
            let points = (exact.iter())
                .filter_map(|(cell, value)| estimates.get(cell).map(|e| (*value, *e)))
                .collect();
            paired.push(Paired {
                concept,
                pair,
                direction,
                kind,
                method,
                points,
            });
        }
    }
    paired
}

/// One row per [`Paired`] (concept, pair, direction, kind, approximate method): the
/// method's estimates against the exact effects, with the method's cost (every kind
/// at once) and the exact sweep's for the kind from `costs`.
pub(crate) fn accuracy_rows(
    run_id: &str,
    paired: &[Paired],
    costs: &[CostRecord],
) -> Vec<AccuracyRow> {
    let cost = |p: &Paired, m: &str, k: Option<&str>| {
        costs.iter().find(|c| {
            (c.concept.as_str(), c.pair.as_str(), c.direction.as_str())
                == (p.concept, p.pair, p.direction)
                && c.method == m
                && c.kind.as_deref() == k
        })
    };
    (paired.iter())
        .map(|p| {
            let (want, got): (Vec<f64>, Vec<f64>) = p.points.iter().copied().unzip();
            let approx = cost(p, p.method, None);
            let exact = cost(p, "exact", Some(p.kind));
            AccuracyRow {
                run_id: run_id.to_string(),
                concept: p.concept.to_string(),
                pair: p.pair.to_string(),
                direction: p.direction.to_string(),
                kind: p.kind.to_string(),
                method: p.method.to_string(),
                agreement: agreement(&want, &got),
                seconds: approx.map(|c| c.seconds),
                passes: approx.map(|c| c.passes),
                exact_seconds: exact.map(|c| c.seconds),
                exact_passes: exact.map(|c| c.passes),
            }
        })
        .collect()
}
