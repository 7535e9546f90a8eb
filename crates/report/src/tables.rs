//! The run's tables as parquet: `cells.parquet` (one row per patched cell),
//! `baselines.parquet` (one row per pair) and `concepts.parquet` (one row per concept
//! cell, with its interval), laid out by [`CELLS`], [`BASELINES`] and [`CONCEPTS`]
//! (see [`crate::schema`]). Every table carries the schema version in its file
//! metadata under [`SCHEMA_VERSION_KEY`], and is read back leniently
//! ([`read_rows`]): tables that pandas, pyarrow, polars or duckdb wrote back are
//! accepted when their columns can be read without loss.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::atomic::write_atomic;
use crate::lenient::conform;
use crate::schema::{arrow_schema, frame, rows, Column, Table};
use crate::{ReportError, Result};

/// Version of the table layouts below; bump it when a column changes meaning or type.
/// Version 2 added `direction` to cells and `reference` to baselines; version 3 added
/// `method` and `src_position` to cells; version 4 (Gaussian-noise corruption) made
/// `patched_logit_diff` and `logprob_diff` nullable and added `corruption`, `metric`,
/// `clean_metric`, `corrupted_metric` and `subject` to baselines. Older tables still
/// read (as exact, denoising cells without a source position, and non-reference
/// prompt pairs).
pub const SCHEMA_VERSION: u32 = 4;
/// The oldest version [`read_frame`] reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Parquet key-value metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "actpatch.schema_version";

/// One patched cell: a pair, a patch kind, and where (layer, head, position).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CellRow {
    pub run_id: String,
    pub experiment: String,
    pub concept: String,
    pub pair: String,
    pub model: String,
    pub kind: String,
    /// Path patching (kinds `path`, `path_by_pos`): the receiver set's label; `None`
    /// for every other kind.
    pub receivers: Option<String>,
    /// `"denoising"` (clean into corrupted) or `"noising"` (corrupted into clean).
    pub direction: String,
    /// `"exact"` (a patched run), or the approximation that estimated the cell:
    /// `"atp"`, `"atp*"`, `"ig"`.
    pub method: String,
    pub layer: u32,
    /// `None` where the kind has no head axis.
    pub head: Option<u32>,
    /// Position in the patched run (corrupted for denoising, clean for noising); `None`
    /// where the patch spans all positions. For an attention-pattern entry, the
    /// destination (query) position.
    pub position: Option<u32>,
    /// The source (key) position of an attention-pattern entry
    /// (`head_pattern_by_dest_src`); `None` for every other kind.
    pub src_position: Option<u32>,
    /// The clean-prompt token `position` stands for.
    pub token: Option<String>,
    /// What the patched position is across the pairs of a concept (`BOS`,
    /// `subject.last`, `is`, `end`, …; see `actpatch_concepts::roles`); `None` where
    /// the patch spans all positions.
    pub role: Option<String>,
    /// `None` for Gaussian-noise pairs (there is no second answer).
    pub patched_logit_diff: Option<f64>,
    /// (x − x_corrupted) / (x_clean − x_corrupted) of the pair's metric x: the logit
    /// difference for prompt pairs, p(answer) (or its logit) for Gaussian-noise pairs.
    pub normalized_logit_diff: f64,
    /// `None` for Gaussian-noise pairs.
    pub logprob_diff: Option<f64>,
    /// `None` when the sweep computed logit-difference metrics only.
    pub prob_correct: Option<f64>,
    /// `None` when the sweep computed logit-difference metrics only.
    pub kl_div: Option<f64>,
    /// Whether the pair passed baseline validation (false only under `--no-validate`).
    pub pair_valid: bool,
}

impl CellRow {
    /// The grid the cell belongs to: its kind, or for path patching `path → <receivers>`
    /// (each receiver set is its own grid).
    pub fn grid_kind(&self) -> String {
        match &self.receivers {
            None => self.kind.clone(),
            Some(receivers) => format!("{} → {receivers}", self.kind),
        }
    }
}

/// `cells.parquet`, one line per column.
pub static CELLS: Table<CellRow> = Table {
    file: "cells.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("experiment", |r| &r.experiment, |r, v| r.experiment = v),
        Column::text("concept", |r| &r.concept, |r, v| r.concept = v),
        Column::text("pair", |r| &r.pair, |r, v| r.pair = v),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("kind", |r| &r.kind, |r, v| r.kind = v),
        Column::opt_text(
            "receivers",
            |r| r.receivers.as_deref(),
            |r, v| r.receivers = v,
        ),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::text("method", |r| &r.method, |r, v| r.method = v),
        Column::u32("layer", |r| r.layer, |r, v| r.layer = v),
        Column::opt_u32("head", |r| r.head, |r, v| r.head = v),
        Column::opt_u32("position", |r| r.position, |r, v| r.position = v),
        Column::opt_u32(
            "src_position",
            |r| r.src_position,
            |r, v| r.src_position = v,
        ),
        Column::opt_text("token", |r| r.token.as_deref(), |r, v| r.token = v),
        Column::opt_text("role", |r| r.role.as_deref(), |r, v| r.role = v),
        Column::opt_f64(
            "patched_logit_diff",
            |r| r.patched_logit_diff,
            |r, v| r.patched_logit_diff = v,
        ),
        Column::f64(
            "normalized_logit_diff",
            |r| r.normalized_logit_diff,
            |r, v| r.normalized_logit_diff = v,
        ),
        Column::opt_f64(
            "logprob_diff",
            |r| r.logprob_diff,
            |r, v| r.logprob_diff = v,
        ),
        Column::opt_f64(
            "prob_correct",
            |r| r.prob_correct,
            |r, v| r.prob_correct = v,
        ),
        Column::opt_f64("kl_div", |r| r.kl_div, |r, v| r.kl_div = v),
        Column::bool("pair_valid", |r| r.pair_valid, |r, v| r.pair_valid = v),
    ],
};

/// One pair's tokenization, baselines and validation outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BaselineRow {
    pub run_id: String,
    pub experiment: String,
    pub concept: String,
    pub pair: String,
    pub model: String,
    pub clean: String,
    pub corrupted: String,
    pub correct: String,
    pub incorrect: String,
    pub clean_tokens: Vec<String>,
    pub corrupted_tokens: Vec<String>,
    pub align: String,
    /// `None` for Gaussian-noise pairs, and when an answer is not one token.
    pub clean_logit_diff: Option<f64>,
    pub corrupted_logit_diff: Option<f64>,
    /// How the corrupted run was made: `"prompt"` or `"gaussian"` (`None` in tables
    /// older than version 4: prompt pairs).
    pub corruption: Option<String>,
    /// What the normalized effects normalize: `"logit_diff"`, `"prob"` or `"logit"`.
    pub metric: Option<String>,
    /// The metric on the clean and on the corrupted run (for Gaussian noise, the mean
    /// over the draws).
    pub clean_metric: Option<f64>,
    pub corrupted_metric: Option<f64>,
    /// The span the roles call `subject.*` (for Gaussian noise, the span noised).
    pub subject: Option<String>,
    pub passed: bool,
    pub swept: bool,
    /// Marked `reference = true`: validated, never swept.
    pub reference: bool,
    /// Why the pair failed validation; empty when it passed.
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

impl BaselineRow {
    /// Whether the corrupted run is the clean prompt with noise on its subject.
    pub fn is_gaussian(&self) -> bool {
        self.corruption.as_deref() == Some("gaussian")
    }

    /// `clean → corrupted`, or `clean → subject noised` under Gaussian noise.
    pub fn prompts_label(&self) -> String {
        match self.is_gaussian() {
            true => format!(
                "{} → `{}` noised",
                self.clean,
                self.subject.as_deref().unwrap_or("")
            ),
            false => format!("{} → {}", self.clean, self.corrupted),
        }
    }

    /// `` `correct` vs `incorrect` ``, or the one answer under Gaussian noise.
    pub fn answers_label(&self) -> String {
        match self.is_gaussian() {
            true => format!("`{}`", self.correct),
            false => format!("`{}` vs `{}`", self.correct, self.incorrect),
        }
    }

    /// The clean and corrupted baselines as the report shows them: logit differences,
    /// or the metric under Gaussian noise (`p 0.391`, `logit 12.3`), `–` where none.
    pub fn baseline_labels(&self) -> [String; 2] {
        let show = |v: Option<f64>, prefix: &str| match v {
            None => "–".into(),
            Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{prefix}{v:.2e}"),
            Some(v) => format!("{prefix}{v:.3}"),
        };
        match self.is_gaussian() {
            true => {
                let prefix = match self.metric.as_deref() {
                    Some("logit") => "logit ",
                    _ => "p ",
                };
                [
                    show(self.clean_metric, prefix),
                    show(self.corrupted_metric, prefix),
                ]
            }
            false => [
                show(self.clean_logit_diff, ""),
                show(self.corrupted_logit_diff, ""),
            ],
        }
    }
}

/// `baselines.parquet`, one line per column.
pub static BASELINES: Table<BaselineRow> = Table {
    file: "baselines.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("experiment", |r| &r.experiment, |r, v| r.experiment = v),
        Column::text("concept", |r| &r.concept, |r, v| r.concept = v),
        Column::text("pair", |r| &r.pair, |r, v| r.pair = v),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("clean", |r| &r.clean, |r, v| r.clean = v),
        Column::text("corrupted", |r| &r.corrupted, |r, v| r.corrupted = v),
        Column::text("correct", |r| &r.correct, |r, v| r.correct = v),
        Column::text("incorrect", |r| &r.incorrect, |r, v| r.incorrect = v),
        Column::text_list(
            "clean_tokens",
            |r| &r.clean_tokens,
            |r, v| r.clean_tokens = v,
        ),
        Column::text_list(
            "corrupted_tokens",
            |r| &r.corrupted_tokens,
            |r, v| r.corrupted_tokens = v,
        ),
        Column::text("align", |r| &r.align, |r, v| r.align = v),
        Column::opt_f64(
            "clean_logit_diff",
            |r| r.clean_logit_diff,
            |r, v| r.clean_logit_diff = v,
        ),
        Column::opt_f64(
            "corrupted_logit_diff",
            |r| r.corrupted_logit_diff,
            |r, v| r.corrupted_logit_diff = v,
        ),
        Column::opt_text(
            "corruption",
            |r| r.corruption.as_deref(),
            |r, v| r.corruption = v,
        ),
        Column::opt_text("metric", |r| r.metric.as_deref(), |r, v| r.metric = v),
        Column::opt_f64(
            "clean_metric",
            |r| r.clean_metric,
            |r, v| r.clean_metric = v,
        ),
        Column::opt_f64(
            "corrupted_metric",
            |r| r.corrupted_metric,
            |r, v| r.corrupted_metric = v,
        ),
        Column::opt_text("subject", |r| r.subject.as_deref(), |r, v| r.subject = v),
        Column::bool("passed", |r| r.passed, |r, v| r.passed = v),
        Column::bool("swept", |r| r.swept, |r, v| r.swept = v),
        Column::bool("reference", |r| r.reference, |r, v| r.reference = v),
        Column::text_list("reasons", |r| &r.reasons, |r, v| r.reasons = v),
        Column::text_list("warnings", |r| &r.warnings, |r, v| r.warnings = v),
    ],
};

/// One concept cell: a concept's pairs summarized at one (direction, kind, layer,
/// head, role).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConceptRow {
    pub run_id: String,
    pub experiment: String,
    pub concept: String,
    pub model: String,
    pub direction: String,
    pub kind: String,
    pub layer: u32,
    pub head: Option<u32>,
    /// `None` for kinds that patch every position at once.
    pub role: Option<String>,
    /// Pairs with this cell (a role can be missing from some templates).
    pub n_pairs: u32,
    /// Mean over pairs of the normalized effect (of the logit difference, or for
    /// Gaussian-noise pairs of p(answer) or its logit).
    pub mean: f64,
    /// Percentile bootstrap interval of the mean (pairs resampled, grouped by
    /// template), at the run's `[statistics] level` (0.95 by default).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Σ(ld − ld_corrupted) / Σ(ld_clean − ld_corrupted) over the same pairs.
    pub ratio_of_sums: f64,
}

/// `concepts.parquet`, one line per column.
pub static CONCEPTS: Table<ConceptRow> = Table {
    file: "concepts.parquet",
    columns: &[
        Column::text("run_id", |r| &r.run_id, |r, v| r.run_id = v),
        Column::text("experiment", |r| &r.experiment, |r, v| r.experiment = v),
        Column::text("concept", |r| &r.concept, |r, v| r.concept = v),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::text("kind", |r| &r.kind, |r, v| r.kind = v),
        Column::u32("layer", |r| r.layer, |r, v| r.layer = v),
        Column::opt_u32("head", |r| r.head, |r, v| r.head = v),
        Column::opt_text("role", |r| r.role.as_deref(), |r, v| r.role = v),
        Column::u32("n_pairs", |r| r.n_pairs, |r, v| r.n_pairs = v),
        Column::f64("mean", |r| r.mean, |r, v| r.mean = v),
        Column::f64("ci_low", |r| r.ci_low, |r, v| r.ci_low = v),
        Column::f64("ci_high", |r| r.ci_high, |r, v| r.ci_high = v),
        Column::f64(
            "ratio_of_sums",
            |r| r.ratio_of_sums,
            |r, v| r.ratio_of_sums = v,
        ),
    ],
};

pub(crate) fn table_err(path: &Path, e: PolarsError) -> ReportError {
    ReportError::Table {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes `rows` as `table` to `path` atomically, with the schema version and the
/// table's Arrow schema (plain strings) in its metadata.
pub fn write_table<R>(path: &Path, table: &Table<R>, rows: &[R]) -> Result<()> {
    let mut data = frame(table, rows).map_err(|e| table_err(path, e))?;
    write_atomic(path, |writer| {
        parquet_writer(writer, table)
            .finish(&mut data)
            .map(|_| ())
            .map_err(|e| table_err(path, e))
    })
}

/// A parquet writer of `table` into `writer`: zstd, the schema version and the table's
/// Arrow schema (plain strings) in the file's metadata.
pub(crate) fn parquet_writer<R, W: std::io::Write>(
    writer: W,
    table: &Table<R>,
) -> ParquetWriter<W> {
    let hint = polars_parquet::write::schema_to_metadata_key(&arrow_schema(table));
    let mut metadata = vec![(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())];
    if let Some(value) = hint.value {
        // Given explicitly, this replaces the schema polars would store, whose
        // strings are `string_view`, which pandas cannot read inside lists.
        metadata.push((hint.key, value));
    }
    ParquetWriter::new(writer)
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
}

pub fn write_cells(path: &Path, rows: &[CellRow]) -> Result<()> {
    write_table(path, &CELLS, rows)
}

pub fn write_baselines(path: &Path, rows: &[BaselineRow]) -> Result<()> {
    write_table(path, &BASELINES, rows)
}

pub fn write_concepts(path: &Path, rows: &[ConceptRow]) -> Result<()> {
    write_table(path, &CONCEPTS, rows)
}

/// The cells as a data frame laid out by [`CELLS`].
pub fn cells_frame(rows: &[CellRow]) -> PolarsResult<DataFrame> {
    frame(&CELLS, rows)
}

/// The baselines as a data frame laid out by [`BASELINES`].
pub fn baselines_frame(rows: &[BaselineRow]) -> PolarsResult<DataFrame> {
    frame(&BASELINES, rows)
}

/// A table read from parquet, with what was adapted on the way.
#[derive(Debug, Clone)]
pub struct TableRead<T> {
    pub data: T,
    /// What the reader accepted and adapted (no version key, columns ignored…), one
    /// sentence each, for the user to see.
    pub notes: Vec<String>,
}

/// Reads a parquet table as it is. A table of another actpatch schema version is
/// refused; one without the version key (as pandas and pyarrow write it back) is
/// read, with a note.
pub fn read_frame(path: &Path) -> Result<TableRead<DataFrame>> {
    let read_err = |reason: String| ReportError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut reader = ParquetReader::new(file);
    let metadata = reader.get_metadata().map_err(|e| read_err(e.to_string()))?;
    let version = metadata
        .key_value_metadata()
        .as_ref()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == SCHEMA_VERSION_KEY))
        .and_then(|kv| kv.value.clone());
    let mut notes = Vec::new();
    let readable = (OLDEST_READABLE_VERSION..=SCHEMA_VERSION).map(|v| v.to_string());
    let mut older = None;
    match version {
        Some(v) if readable.clone().any(|r| r == v) => older = v.parse::<u32>().ok(),
        Some(found) => {
            return Err(ReportError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            })
        }
        None => notes.push(format!(
            "{} has no `{SCHEMA_VERSION_KEY}` key (another tool, e.g. pandas or pyarrow, wrote it); read as schema version {SCHEMA_VERSION}",
            path.display()
        )),
    }
    let mut data = reader.finish().map_err(|e| table_err(path, e))?;
    if older.is_some_and(|v| v < SCHEMA_VERSION) {
        upgrade(&mut data).map_err(|e| table_err(path, e))?;
    }
    Ok(TableRead { data, notes })
}

/// Adds what later versions added to an older table: every cell of version 1 was
/// denoising, no pair a reference pair; every cell before version 3 was exact.
fn upgrade(data: &mut DataFrame) -> PolarsResult<()> {
    let height = data.height();
    let names: Vec<String> = (data.get_column_names().iter())
        .map(|n| n.to_string())
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    if has("kind") && !has("direction") {
        let direction = vec!["denoising"; height];
        data.with_column(polars::prelude::Column::new("direction".into(), direction))?;
    }
    if has("kind") && !has("method") {
        let method = vec!["exact"; height];
        data.with_column(polars::prelude::Column::new("method".into(), method))?;
    }
    if has("passed") && !has("reference") {
        data.with_column(polars::prelude::Column::new(
            "reference".into(),
            vec![false; height],
        ))?;
    }
    Ok(())
}

/// Reads a table as it is (see [`read_frame`]), without the notes.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    read_frame(path).map(|t| t.data)
}

/// Reads `table`'s rows from `path`, casting what other tools changed back to the
/// schema's types; an error names the column and the type it expected.
pub fn read_rows<R: Default>(path: &Path, table: &Table<R>) -> Result<TableRead<Vec<R>>> {
    let TableRead { data, mut notes } = read_frame(path)?;
    let (conformed, adapted) = conform(table, &data).map_err(|m| ReportError::Column {
        path: path.to_path_buf(),
        table: table.file,
        column: m.column,
        expected: m.expected,
        found: m.found,
    })?;
    notes.extend(
        adapted
            .into_iter()
            .map(|n| format!("{}: {n}", path.display())),
    );
    let data = rows(table, &conformed).map_err(|e| ReportError::Column {
        path: path.to_path_buf(),
        table: table.file,
        column: e.column.clone(),
        expected: table
            .column(&e.column)
            .map(|c| c.ty().describe(c.nullable()))
            .unwrap_or_default(),
        found: e.reason,
    })?;
    Ok(TableRead { data, notes })
}

/// Reads `cells.parquet` back into rows.
pub fn read_cells(path: &Path) -> Result<Vec<CellRow>> {
    read_rows(path, &CELLS).map(|t| t.data)
}

/// Reads `concepts.parquet` back into rows.
pub fn read_concepts(path: &Path) -> Result<Vec<ConceptRow>> {
    read_rows(path, &CONCEPTS).map(|t| t.data)
}

/// Reads `baselines.parquet` back into rows.
pub fn read_baselines(path: &Path) -> Result<Vec<BaselineRow>> {
    read_rows(path, &BASELINES).map(|t| t.data)
}
