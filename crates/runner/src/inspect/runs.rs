//! `actpatch runs [DIR]`: one table over every run under a results folder, from each
//! run's `manifest.json` and `cells.parquet`. Runs whose manifest status is not
//! `"complete"` (still running, interrupted, or without a manifest) are listed as
//! incomplete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use actpatch_report::tables::read_cells;

use crate::manifest::{Manifest, RunStatus};
use crate::shard::layout;
use crate::RunnerError;

/// One run as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEntry {
    pub dir: PathBuf,
    pub run_id: String,
    pub experiment: String,
    pub model: String,
    /// Manifest `started` (RFC 3339).
    pub started: Option<String>,
    pub passed: Option<u64>,
    pub failed: Option<u64>,
    /// Rows of `cells.parquet` (manifest `cells` when the table cannot be read).
    pub cells: Option<usize>,
    pub wall_seconds: Option<f64>,
    /// Manifest `status`; `None` without a manifest.
    pub status: Option<RunStatus>,
    /// The concepts in `cells.parquet`.
    pub concepts: BTreeSet<String>,
    /// Why part of the run could not be read.
    pub problem: Option<String>,
    /// A sharded run's shards: (complete, of n).
    pub shards: Option<(usize, usize)>,
}

impl RunEntry {
    pub fn complete(&self) -> bool {
        self.status == Some(RunStatus::Complete)
    }
}

/// Filters of `actpatch runs`.
#[derive(Debug, Clone, Default)]
pub struct RunsFilter {
    /// Only runs with a cell of this concept (exact).
    pub concept: Option<String>,
    /// Only runs whose model contains this text (case-insensitive).
    pub model: Option<String>,
}

impl RunsFilter {
    pub fn accepts(&self, run: &RunEntry) -> bool {
        let concept = match &self.concept {
            Some(c) => run.concepts.contains(c),
            None => true,
        };
        let model = match &self.model {
            Some(m) => run.model.to_lowercase().contains(&m.to_lowercase()),
            None => true,
        };
        concept && model
    }
}

/// Folders under `dir` (itself included) that hold a `manifest.json` or a
/// `cells.parquet`; run folders are not searched further. Symlinks are not followed.
fn run_dirs(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    if dir.join("manifest.json").is_file() || dir.join("cells.parquet").is_file() {
        found.push(dir.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        run_dirs(&sub, depth - 1, found);
    }
}

fn entry(dir: &Path) -> RunEntry {
    let (manifest, problem) = match Manifest::read(dir) {
        Ok(manifest) => (manifest, None),
        Err(problem) => (None, Some(problem)),
    };
    let m = manifest.as_ref();
    let mut run = RunEntry {
        dir: dir.to_path_buf(),
        run_id: m.map(|m| m.run_id.clone()).unwrap_or_default(),
        experiment: m.map(|m| m.experiment.clone()).unwrap_or_default(),
        model: (m.and_then(|m| m.model.as_ref()))
            .map(|model| model.source.clone())
            .unwrap_or_default(),
        started: m.map(|m| m.started.clone()).filter(|s| !s.is_empty()),
        passed: (m.and_then(|m| m.pairs.as_ref())).map(|p| p.passed as u64),
        failed: (m.and_then(|m| m.pairs.as_ref())).map(|p| p.failed as u64),
        cells: m.and_then(|m| m.cells),
        wall_seconds: m.and_then(|m| m.wall_seconds),
        status: m.map(|m| m.status),
        concepts: BTreeSet::new(),
        problem,
        shards: (m.and_then(|m| m.shards)).map(|n| (layout::complete_shards(dir, n), n)),
    };
    let cells_path = dir.join("cells.parquet");
    if cells_path.is_file() {
        match read_cells(&cells_path) {
            Ok(cells) => {
                run.cells = Some(cells.len());
                run.concepts = cells.iter().map(|c| c.concept.clone()).collect();
                if let Some(c) = cells.first() {
                    for (field, value) in [
                        (&mut run.run_id, &c.run_id),
                        (&mut run.experiment, &c.experiment),
                        (&mut run.model, &c.model),
                    ] {
                        if field.is_empty() {
                            *field = value.clone();
                        }
                    }
                }
            }
            Err(e) => run.problem = Some(e.to_string()),
        }
    }
    if run.run_id.is_empty() {
        run.run_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    run
}

/// Every run under `dir`, oldest first, that `filter` accepts.
pub fn scan(dir: &Path, filter: &RunsFilter) -> Result<Vec<RunEntry>, RunnerError> {
    if !dir.is_dir() {
        return Err(RunnerError::Input(format!(
            "{} is not a folder. `actpatch runs` lists the runs under a results folder (default: results/); pass the folder the runs were written to ([output] dir or --out).",
            dir.display()
        )));
    }
    let mut dirs = Vec::new();
    run_dirs(dir, 8, &mut dirs);
    let mut runs: Vec<RunEntry> = dirs
        .iter()
        .map(|d| entry(d))
        .filter(|r| filter.accepts(r))
        .collect();
    runs.sort_by(|a, b| (a.started.as_deref(), &a.run_id).cmp(&(b.started.as_deref(), &b.run_id)));
    Ok(runs)
}

fn date(started: Option<&str>) -> String {
    started
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "–".into())
}

/// `12.3 s`, `4 min 05 s`, `2 h 03 min`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, s as u64 % 60)
    } else {
        format!("{} h {:02} min", (s / 3600.0) as u64, (s as u64 / 60) % 60)
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
}

/// The runs as an aligned text table (UTC dates), one line each.
pub fn render(runs: &[RunEntry]) -> String {
    let header = [
        "run id",
        "experiment",
        "model",
        "date (UTC)",
        "pairs passed/failed",
        "cells",
        "wall time",
        "status",
    ];
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            let status = match (r.status, &r.problem) {
                (_, Some(_)) if r.complete() => "complete, tables unreadable (see below)".into(),
                (Some(RunStatus::Complete), None) => match r.shards {
                    Some((_, n)) => format!("complete ({n} shards merged)"),
                    None => "complete".into(),
                },
                (Some(RunStatus::Running), _) if r.shards.is_some() => {
                    let (done, n) = r.shards.unwrap_or_default();
                    format!("incomplete ({done} of {n} shards complete)")
                }
                (Some(s), _) => format!("incomplete ({})", s.name()),
                (None, _) => "incomplete (no manifest)".into(),
            };
            [
                r.run_id.clone(),
                r.experiment.clone(),
                r.model.clone(),
                date(r.started.as_deref()),
                format!("{}/{}", or_dash(r.passed), or_dash(r.failed)),
                or_dash(r.cells),
                r.wall_seconds.map(duration).unwrap_or_else(|| "–".into()),
                status,
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut text = line(&header.map(String::from));
    text.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in &rows {
        text.push_str(&line(r));
    }
    text
}

/// The command: prints the table of runs under `dir`, problems to stderr.
pub fn cli(dir: &Path, filter: &RunsFilter) -> Result<(), RunnerError> {
    let runs = scan(dir, filter)?;
    if runs.is_empty() {
        eprintln!("no runs under {} match", dir.display());
        return Ok(());
    }
    print!("{}", render(&runs));
    for r in runs.iter().filter(|r| r.problem.is_some()) {
        if let Some(p) = &r.problem {
            eprintln!("warning: {}: {p}", r.dir.display());
        }
    }
    Ok(())
}
