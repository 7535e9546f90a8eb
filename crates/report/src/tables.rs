//! The run's tables as parquet: `cells.parquet` (one row per patched cell) and
//! `baselines.parquet` (one row per pair). Both carry the schema version in their
//! file metadata under [`SCHEMA_VERSION_KEY`].

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::atomic::write_atomic;
use crate::{ReportError, Result};

/// Version of the table layouts below; bump it when a column changes meaning or type.
/// Version 2 added `direction` to cells and `reference` to baselines; version-1 tables
/// still read (as denoising cells and non-reference pairs).
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest version [`read_parquet`] reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Parquet key-value metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "actpatch.schema_version";

/// One patched cell: a pair, a patch kind, and where (layer, head, position).
#[derive(Debug, Clone, PartialEq)]
pub struct CellRow {
    pub run_id: String,
    pub experiment: String,
    pub concept: String,
    pub pair: String,
    pub model: String,
    pub kind: String,
    /// `"denoising"` (clean into corrupted) or `"noising"` (corrupted into clean).
    pub direction: String,
    pub layer: u32,
    /// `None` where the kind has no head axis.
    pub head: Option<u32>,
    /// Position in the patched run (corrupted for denoising, clean for noising); `None`
    /// where the patch spans all positions.
    pub position: Option<u32>,
    /// The clean-prompt token `position` stands for.
    pub token: Option<String>,
    pub patched_logit_diff: f64,
    pub normalized_logit_diff: f64,
    pub logprob_diff: f64,
    /// `None` when the sweep computed logit-difference metrics only.
    pub prob_correct: Option<f64>,
    /// `None` when the sweep computed logit-difference metrics only.
    pub kl_div: Option<f64>,
    /// Whether the pair passed baseline validation (false only under `--no-validate`).
    pub pair_valid: bool,
}

/// One pair's tokenization, baselines and validation outcome.
#[derive(Debug, Clone, PartialEq)]
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
    pub clean_logit_diff: Option<f64>,
    pub corrupted_logit_diff: Option<f64>,
    pub passed: bool,
    pub swept: bool,
    /// Marked `reference = true`: validated, never swept.
    pub reference: bool,
    /// Why the pair failed validation; empty when it passed.
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

fn str_col(name: &str, values: Vec<String>) -> Column {
    Column::new(name.into(), values)
}

fn list_col(name: &str, values: Vec<Vec<String>>) -> Column {
    let series: Vec<Series> = values
        .into_iter()
        .map(|v| Series::new("".into(), v))
        .collect();
    Column::new(name.into(), series)
}

pub fn cells_frame(rows: &[CellRow]) -> PolarsResult<DataFrame> {
    let s = |f: fn(&CellRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: fn(&CellRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        str_col("run_id", s(|r| r.run_id.clone())),
        str_col("experiment", s(|r| r.experiment.clone())),
        str_col("concept", s(|r| r.concept.clone())),
        str_col("pair", s(|r| r.pair.clone())),
        str_col("model", s(|r| r.model.clone())),
        str_col("kind", s(|r| r.kind.clone())),
        str_col("direction", s(|r| r.direction.clone())),
        Column::new(
            "layer".into(),
            rows.iter().map(|r| r.layer).collect::<Vec<_>>(),
        ),
        Column::new(
            "head".into(),
            rows.iter().map(|r| r.head).collect::<Vec<_>>(),
        ),
        Column::new(
            "position".into(),
            rows.iter().map(|r| r.position).collect::<Vec<_>>(),
        ),
        Column::new(
            "token".into(),
            rows.iter().map(|r| r.token.clone()).collect::<Vec<_>>(),
        ),
        Column::new("patched_logit_diff".into(), f(|r| r.patched_logit_diff)),
        Column::new(
            "normalized_logit_diff".into(),
            f(|r| r.normalized_logit_diff),
        ),
        Column::new("logprob_diff".into(), f(|r| r.logprob_diff)),
        Column::new(
            "prob_correct".into(),
            rows.iter().map(|r| r.prob_correct).collect::<Vec<_>>(),
        ),
        Column::new(
            "kl_div".into(),
            rows.iter().map(|r| r.kl_div).collect::<Vec<_>>(),
        ),
        Column::new(
            "pair_valid".into(),
            rows.iter().map(|r| r.pair_valid).collect::<Vec<_>>(),
        ),
    ])
}

pub fn baselines_frame(rows: &[BaselineRow]) -> PolarsResult<DataFrame> {
    let s = |f: fn(&BaselineRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let l = |f: fn(&BaselineRow) -> Vec<String>| rows.iter().map(f).collect::<Vec<_>>();
    let o = |f: fn(&BaselineRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new_infer_height(vec![
        str_col("run_id", s(|r| r.run_id.clone())),
        str_col("experiment", s(|r| r.experiment.clone())),
        str_col("concept", s(|r| r.concept.clone())),
        str_col("pair", s(|r| r.pair.clone())),
        str_col("model", s(|r| r.model.clone())),
        str_col("clean", s(|r| r.clean.clone())),
        str_col("corrupted", s(|r| r.corrupted.clone())),
        str_col("correct", s(|r| r.correct.clone())),
        str_col("incorrect", s(|r| r.incorrect.clone())),
        list_col("clean_tokens", l(|r| r.clean_tokens.clone())),
        list_col("corrupted_tokens", l(|r| r.corrupted_tokens.clone())),
        str_col("align", s(|r| r.align.clone())),
        Column::new("clean_logit_diff".into(), o(|r| r.clean_logit_diff)),
        Column::new("corrupted_logit_diff".into(), o(|r| r.corrupted_logit_diff)),
        Column::new(
            "passed".into(),
            rows.iter().map(|r| r.passed).collect::<Vec<_>>(),
        ),
        Column::new(
            "swept".into(),
            rows.iter().map(|r| r.swept).collect::<Vec<_>>(),
        ),
        Column::new(
            "reference".into(),
            rows.iter().map(|r| r.reference).collect::<Vec<_>>(),
        ),
        list_col("reasons", l(|r| r.reasons.clone())),
        list_col("warnings", l(|r| r.warnings.clone())),
    ])
}

fn table_err(path: &Path, e: PolarsError) -> ReportError {
    ReportError::Table {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes `frame` to `path` atomically, with the schema version in its metadata.
pub fn write_parquet(path: &Path, frame: &mut DataFrame) -> Result<()> {
    write_atomic(path, |writer| {
        ParquetWriter::new(writer)
            .with_compression(ParquetCompression::Zstd(None))
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(vec![(
                SCHEMA_VERSION_KEY.to_string(),
                SCHEMA_VERSION.to_string(),
            )])))
            .finish(frame)
            .map(|_| ())
            .map_err(|e| table_err(path, e))
    })
}

pub fn write_cells(path: &Path, rows: &[CellRow]) -> Result<()> {
    let mut frame = cells_frame(rows).map_err(|e| table_err(path, e))?;
    write_parquet(path, &mut frame)
}

pub fn write_baselines(path: &Path, rows: &[BaselineRow]) -> Result<()> {
    let mut frame = baselines_frame(rows).map_err(|e| table_err(path, e))?;
    write_parquet(path, &mut frame)
}

/// Reads a table written by actpatch, refusing other schema versions.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
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
    let readable = (OLDEST_READABLE_VERSION..=SCHEMA_VERSION).map(|v| v.to_string());
    match version {
        Some(v) if readable.clone().any(|r| r == v) => {}
        other => {
            return Err(ReportError::SchemaVersion {
                path: path.to_path_buf(),
                found: other.unwrap_or_else(|| "none (not an actpatch table)".into()),
                expected: SCHEMA_VERSION,
            })
        }
    }
    reader.finish().map_err(|e| table_err(path, e))
}

/// Reads `cells.parquet` back into rows.
pub fn read_cells(path: &Path) -> Result<Vec<CellRow>> {
    let frame = read_parquet(path)?;
    cells_from_frame(&frame).map_err(|e| table_err(path, e))
}

fn cells_from_frame(frame: &DataFrame) -> PolarsResult<Vec<CellRow>> {
    let strings = |name: &str| -> PolarsResult<Vec<Option<String>>> {
        Ok(frame
            .column(name)?
            .str()?
            .iter()
            .map(|s| s.map(str::to_string))
            .collect())
    };
    let optional = |name: &str| -> PolarsResult<Vec<Option<f64>>> {
        Ok(frame.column(name)?.f64()?.iter().collect())
    };
    let floats = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(frame
            .column(name)?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let uints = |name: &str| -> PolarsResult<Vec<Option<u32>>> {
        Ok(frame.column(name)?.u32()?.iter().collect())
    };
    let (run_id, experiment, concept, pair, model, kind, token) = (
        strings("run_id")?,
        strings("experiment")?,
        strings("concept")?,
        strings("pair")?,
        strings("model")?,
        strings("kind")?,
        strings("token")?,
    );
    let (layer, head, position) = (uints("layer")?, uints("head")?, uints("position")?);
    // Version 1 had no direction: every cell was denoising.
    let direction = match frame.column("direction") {
        Ok(_) => strings("direction")?,
        Err(_) => vec![Some("denoising".to_string()); frame.height()],
    };
    let (ld, nld, lp, pc, kl) = (
        floats("patched_logit_diff")?,
        floats("normalized_logit_diff")?,
        floats("logprob_diff")?,
        optional("prob_correct")?,
        optional("kl_div")?,
    );
    let valid: Vec<bool> = frame
        .column("pair_valid")?
        .bool()?
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect();
    Ok((0..frame.height())
        .map(|i| CellRow {
            run_id: run_id[i].clone().unwrap_or_default(),
            experiment: experiment[i].clone().unwrap_or_default(),
            concept: concept[i].clone().unwrap_or_default(),
            pair: pair[i].clone().unwrap_or_default(),
            model: model[i].clone().unwrap_or_default(),
            kind: kind[i].clone().unwrap_or_default(),
            direction: direction[i].clone().unwrap_or_default(),
            layer: layer[i].unwrap_or(0),
            head: head[i],
            position: position[i],
            token: token[i].clone(),
            patched_logit_diff: ld[i],
            normalized_logit_diff: nld[i],
            logprob_diff: lp[i],
            prob_correct: pc[i],
            kl_div: kl[i],
            pair_valid: valid[i],
        })
        .collect())
}
