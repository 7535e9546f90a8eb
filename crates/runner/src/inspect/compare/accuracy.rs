//! An exact run against an approximate one: the attribution statistics the run report
//! gives an experiment that runs both (`attribution.parquet`, "Attribution accuracy"),
//! from the two runs' cells, with each run's recorded costs.

use std::path::Path;

use actpatch_report::{AccuracyRow, FigureSection, ImageFormat};

use super::input::RunTable;
use super::join::{compared_method, LayerAxis};
use crate::outputs::accuracy::{accuracy_rows, effect, paired, Effect};
use crate::outputs::accuracy_figures::accuracy_figures;
use crate::RunnerError;

/// The error table of the approximate side against the exact side, and its scatter
/// plots in `<out_dir>/figures/` (`formats`), when exactly one side's compared method
/// is `exact` and layers are matched by index; nothing otherwise. The rows carry the
/// approximate run's id.
pub fn accuracy(
    (a, b): (&RunTable, &RunTable),
    axis: LayerAxis,
    out_dir: &Path,
    formats: &[ImageFormat],
) -> Result<(Vec<AccuracyRow>, Vec<FigureSection>), RunnerError> {
    let (Some(method_a), Some(method_b)) = (compared_method(a), compared_method(b)) else {
        return Ok(Default::default());
    };
    let (exact, approximate) = match (method_a, method_b) {
        ("exact", "exact") => return Ok(Default::default()),
        ("exact", _) => (a, b),
        (_, "exact") => (b, a),
        _ => return Ok(Default::default()),
    };
    if axis != LayerAxis::Layer {
        return Ok(Default::default());
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
    let paired = paired(&effects);
    let rows = accuracy_rows(&approximate.id, &paired, &costs);
    let written = |source| RunnerError::Write {
        source: Box::new(source),
        resume: None,
    };
    if formats.is_empty() || rows.is_empty() {
        return Ok((rows, Vec::new()));
    }
    std::fs::create_dir_all(out_dir.join("figures")).map_err(|source| {
        written(actpatch_report::ReportError::Write {
            path: out_dir.join("figures"),
            source,
        })
    })?;
    let figures = accuracy_figures(&paired, out_dir, formats).map_err(written)?;
    Ok((rows, figures))
}
