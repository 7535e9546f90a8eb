//! `compare.parquet`: one row per cell of two runs joined on (concept, pair, patch kind,
//! direction, layer, head, position), with both runs' normalized logit differences and B − A.
//! Carries the schema version like the run tables ([`crate::tables::write_parquet`]).

use std::path::Path;

use polars::prelude::*;

use crate::tables::write_parquet;
use crate::{ReportError, Result};

/// One joined cell. `a`/`b` are `None` where the cell is missing from that run.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub run_a: String,
    pub run_b: String,
    pub concept: String,
    pub pair: String,
    pub kind: String,
    /// `"denoising"` or `"noising"`.
    pub direction: String,
    /// Layer, or the relative-depth bin when compared by depth.
    pub layer: u32,
    pub head: Option<u32>,
    pub position: Option<u32>,
    /// The clean token at `position` (from A, else B).
    pub token: Option<String>,
    /// Normalized logit difference in run A.
    pub a: Option<f64>,
    /// Normalized logit difference in run B.
    pub b: Option<f64>,
    /// `b − a`; `None` unless both are present.
    pub diff: Option<f64>,
    /// `"matched"`, `"only_a"` or `"only_b"`.
    pub status: String,
}

pub fn compare_frame(rows: &[CompareRow]) -> PolarsResult<DataFrame> {
    let s = |f: fn(&CompareRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let o = |f: fn(&CompareRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&CompareRow) -> Option<u32>| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        Column::new("run_a".into(), s(|r| r.run_a.clone())),
        Column::new("run_b".into(), s(|r| r.run_b.clone())),
        Column::new("concept".into(), s(|r| r.concept.clone())),
        Column::new("pair".into(), s(|r| r.pair.clone())),
        Column::new("kind".into(), s(|r| r.kind.clone())),
        Column::new("direction".into(), s(|r| r.direction.clone())),
        Column::new(
            "layer".into(),
            rows.iter().map(|r| r.layer).collect::<Vec<_>>(),
        ),
        Column::new("head".into(), u(|r| r.head)),
        Column::new("position".into(), u(|r| r.position)),
        Column::new(
            "token".into(),
            rows.iter().map(|r| r.token.clone()).collect::<Vec<_>>(),
        ),
        Column::new("a".into(), o(|r| r.a)),
        Column::new("b".into(), o(|r| r.b)),
        Column::new("diff".into(), o(|r| r.diff)),
        Column::new("abs_diff".into(), o(|r| r.diff.map(f64::abs))),
        Column::new("status".into(), s(|r| r.status.clone())),
    ])
}

/// Writes `compare.parquet` atomically, with the schema version in its metadata.
pub fn write_compare(path: &Path, rows: &[CompareRow]) -> Result<()> {
    let mut frame = compare_frame(rows).map_err(|e| ReportError::Table {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_parquet(path, &mut frame)
}
