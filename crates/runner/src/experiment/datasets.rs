//! `[[datasets]]`: pairs from a data file, one row each. CSV (with a header row),
//! JSONL (one object per line) or parquet, told apart by the file's extension; the
//! path is relative to the experiment file.
//!
//! Columns: `clean`, `corrupted`, `correct`, `incorrect` (required); `name`,
//! `concept` (else the dataset's `concept`), `subject` and `subject_corrupted` (the
//! span the roles name `subject.*`), `template` (pairs of one template are resampled
//! together by the bootstrap). Other columns are ignored. Values are read as they are:
//! answers keep their leading space.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::experiment::{CorruptionKind, PairSpec};

/// One `[[datasets]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The data file, relative to the experiment file.
    pub path: PathBuf,
    /// The concept of rows without a `concept` column or value.
    pub concept: Option<String>,
    /// Only the first `limit` rows.
    pub limit: Option<usize>,
    /// `"gaussian"`: every row's corrupted run is its clean prompt with noise on its
    /// `subject` (the `corrupted` and `incorrect` columns are then not needed, and not
    /// used); default `[corruption] kind`.
    pub corruption: Option<CorruptionKind>,
}

/// A row: column → value, and how to name the row in a message.
struct Row {
    values: BTreeMap<String, String>,
    label: String,
}

impl DatasetSpec {
    /// The file's rows as pairs; `base`: the experiment file's folder, `default`: the
    /// experiment's `[corruption] kind`.
    pub fn pairs(&self, base: &Path, default: CorruptionKind) -> Result<Vec<PairSpec>, String> {
        let path = base.join(&self.path);
        let shown = self.path.display();
        let extension = (path.extension().and_then(|e| e.to_str()))
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut rows = match extension.as_str() {
            "csv" => read_csv(&path),
            "jsonl" | "ndjson" => read_jsonl(&path),
            "parquet" => read_parquet(&path),
            _ => Err("its extension is not .csv, .jsonl or .parquet".to_string()),
        }
        .map_err(|e| format!("[[datasets]] {shown}: {e}"))?;
        if let Some(limit) = self.limit {
            rows.truncate(limit);
        }
        if rows.is_empty() {
            return Err(format!("[[datasets]] {shown}: no rows"));
        }
        let stem = (self.path.file_stem().and_then(|s| s.to_str()))
            .unwrap_or("row")
            .to_string();
        (rows.iter().enumerate())
            .map(|(i, row)| {
                self.pair(row, (&stem, i), default)
                    .map_err(|e| format!("[[datasets]] {shown}, {}: {e}", row.label))
            })
            .collect()
    }

    fn pair(
        &self,
        row: &Row,
        (stem, index): (&str, usize),
        default: CorruptionKind,
    ) -> Result<PairSpec, String> {
        let gaussian = self.kind(default) == CorruptionKind::Gaussian;
        let required = |column: &str| {
            match row.values.get(column) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            Some(_) => Err(format!("column `{column}` is empty")),
            None if gaussian => Err(format!(
                "no column `{column}` (under corruption = \"gaussian\" a row needs clean, correct and subject)"
            )),
            None => Err(format!(
                "no column `{column}` (a pair needs clean, corrupted, correct and incorrect)"
            )),
        }
        };
        let optional = |column: &str| row.values.get(column).filter(|v| !v.is_empty()).cloned();
        let concept = optional("concept").or_else(|| self.concept.clone()).ok_or(
            "no `concept`: add a `concept` column, or concept = \"…\" to the [[datasets]] entry",
        )?;
        let clean = required("clean")?;
        let subject = match gaussian {
            true => Some(required("subject")?),
            false => optional("subject"),
        };
        if let Some(subject) = &subject {
            if !clean.contains(subject.as_str()) {
                return Err(format!(
                    "column `subject` = {subject:?} is not part of `clean` = {clean:?}"
                ));
            }
        }
        let pair = PairSpec {
            name: Some(optional("name").unwrap_or_else(|| format!("{stem}-{}", index + 1))),
            concept,
            clean,
            correct: required("correct")?,
            subject,
            corruption: self.corruption,
            group: optional("template"),
            source: Some(format!("{} {}", self.path.display(), row.label)),
            ..PairSpec::default()
        };
        if gaussian {
            // The noised clean prompt is the corrupted run: the corrupted columns of a
            // prompt-pair file are not used.
            return Ok(pair);
        }
        let corrupted = required("corrupted")?;
        let subject_corrupted = optional("subject_corrupted");
        if let Some(span) = &subject_corrupted {
            if !corrupted.contains(span.as_str()) {
                return Err(format!(
                    "column `subject_corrupted` = {span:?} is not part of `corrupted` = {corrupted:?}"
                ));
            }
        }
        Ok(PairSpec {
            corrupted,
            incorrect: required("incorrect")?,
            subject_corrupted,
            ..pair
        })
    }

    /// The corruption of this file's rows: its own, else the experiment's.
    fn kind(&self, default: CorruptionKind) -> CorruptionKind {
        self.corruption.unwrap_or(default)
    }
}

fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::None)
        .from_path(path)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let header: Vec<String> = (reader.headers().map_err(|e| e.to_string())?.iter())
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", i + 1))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        rows.push(Row {
            values: header
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_string))
                .collect(),
            label: format!("row {} (line {line})", i + 1),
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let label = format!("row {} (line {})", rows.len() + 1, i + 1);
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| format!("{label}: not a JSON object: {e}"))?;
        let values = (object.into_iter())
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect();
        rows.push(Row { values, label });
    }
    Ok(rows)
}

fn read_parquet(path: &Path) -> Result<Vec<Row>, String> {
    use polars::prelude::*;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let frame = ParquetReader::new(file)
        .finish()
        .map_err(|e| format!("cannot read it as parquet: {e}"))?;
    let mut rows: Vec<Row> = (0..frame.height())
        .map(|i| Row {
            values: BTreeMap::new(),
            label: format!("row {}", i + 1),
        })
        .collect();
    for column in frame.columns() {
        let text = column
            .cast(&DataType::String)
            .map_err(|e| format!("column `{}`: {e}", column.name()))?;
        let values = text.str().map_err(|e| e.to_string())?;
        for (row, value) in rows.iter_mut().zip(values.iter()) {
            if let Some(value) = value {
                row.values
                    .insert(column.name().to_string(), value.to_string());
            }
        }
    }
    Ok(rows)
}
