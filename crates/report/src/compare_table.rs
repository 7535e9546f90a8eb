//! `compare.parquet`: one row per cell of two runs joined on (concept, pair, patch kind,
//! direction, layer, head, position), with both runs' normalized logit differences and
//! B − A, laid out by [`COMPARE`]. Carries the schema version like the run tables
//! ([`crate::tables::write_table`]).

use std::path::Path;

use polars::prelude::*;

use crate::schema::{frame, Column, Table};
use crate::tables::{read_rows, write_table};
use crate::Result;

/// One joined cell. `a`/`b` are `None` where the cell is missing from that run.
#[derive(Debug, Clone, PartialEq, Default)]
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

/// `compare.parquet`, one line per column.
pub static COMPARE: Table<CompareRow> = Table {
    file: "compare.parquet",
    columns: &[
        Column::text("run_a", |r| &r.run_a, |r, v| r.run_a = v),
        Column::text("run_b", |r| &r.run_b, |r, v| r.run_b = v),
        Column::text("concept", |r| &r.concept, |r, v| r.concept = v),
        Column::text("pair", |r| &r.pair, |r, v| r.pair = v),
        Column::text("kind", |r| &r.kind, |r, v| r.kind = v),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::u32("layer", |r| r.layer, |r, v| r.layer = v),
        Column::opt_u32("head", |r| r.head, |r, v| r.head = v),
        Column::opt_u32("position", |r| r.position, |r, v| r.position = v),
        Column::opt_text("token", |r| r.token.as_deref(), |r, v| r.token = v),
        Column::opt_f64("a", |r| r.a, |r, v| r.a = v),
        Column::opt_f64("b", |r| r.b, |r, v| r.b = v),
        Column::opt_f64("diff", |r| r.diff, |r, v| r.diff = v),
        // Derived from `diff`: written for convenience, ignored when read back.
        Column::opt_f64("abs_diff", |r| r.diff.map(f64::abs), |_, _| {}),
        Column::text("status", |r| &r.status, |r, v| r.status = v),
    ],
};

pub fn compare_frame(rows: &[CompareRow]) -> PolarsResult<DataFrame> {
    frame(&COMPARE, rows)
}

/// Writes `compare.parquet` atomically, with the schema version in its metadata.
pub fn write_compare(path: &Path, rows: &[CompareRow]) -> Result<()> {
    write_table(path, &COMPARE, rows)
}

/// Reads `compare.parquet` back into rows.
pub fn read_compare(path: &Path) -> Result<Vec<CompareRow>> {
    read_rows(path, &COMPARE).map(|t| t.data)
}
