//! `actpatch compare A B`: two runs' `cells.parquet` joined on (concept, pair, patch
//! kind, layer, head, position). The tables are read by polars
//! ([`actpatch_report::tables::read_rows`], which refuses other schema versions and
//! reads back what pandas or pyarrow rewrote); the
//! join and the statistics are plain Rust ([`join`], [`stats`]). Writes
//! `compare.parquet` (every cell, matched or not), `compare.md` (also printed), a
//! B − A heatmap per pair and patch kind, and `compare.html` (the same, interactive).

mod accuracy;
mod input;
pub mod join;
mod render;
pub mod stats;

use std::path::{Path, PathBuf};

use actpatch_report::compare_table::write_compare;
use actpatch_report::{AccuracyRow, CompareRow, ImageFormat};

pub use input::{load, RunTable};
pub use join::{depth_bin, LayerAxis};
pub use stats::Summary;

use crate::RunnerError;

/// Choices of `actpatch compare`.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Output folder (default `results/compare/<A>-vs-<B>`).
    pub out_dir: Option<PathBuf>,
    /// Match layers on relative depth (`layer / n_layers`) instead of by index.
    pub by_depth: bool,
    /// Count the matched cells that differ by more than this; the command exits 1
    /// when there is any.
    pub fail_above: Option<f64>,
    /// How many of the most-changed cells to list.
    pub top: usize,
    /// Formats of the difference heatmaps; empty: no figures.
    pub formats: Vec<ImageFormat>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            out_dir: None,
            by_depth: false,
            fail_above: None,
            top: 20,
            formats: vec![ImageFormat::Png],
        }
    }
}

/// What a comparison found and wrote.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub a: RunTable,
    pub b: RunTable,
    pub axis: LayerAxis,
    /// Every cell of either run, matched or not.
    pub rows: Vec<CompareRow>,
    pub summary: Summary,
    /// An exact run against an approximate one: the attribution statistics (also in
    /// `attribution.parquet`); empty otherwise.
    pub accuracy: Vec<AccuracyRow>,
    /// `compare.md`.
    pub markdown: String,
    pub out_dir: PathBuf,
}

impl Comparison {
    /// Whether `--fail-above` was given and some matched cell exceeds it.
    pub fn failed(&self) -> bool {
        self.summary.exceeding.is_some_and(|n| n > 0)
    }
}

/// Image formats from `--format` values (`png`, `svg`); none when `no_figures`.
pub fn image_formats(names: &[String], no_figures: bool) -> Result<Vec<ImageFormat>, RunnerError> {
    if no_figures {
        return Ok(Vec::new());
    }
    names
        .iter()
        .map(|n| match n.as_str() {
            "png" => Ok(ImageFormat::Png),
            "svg" => Ok(ImageFormat::Svg),
            other => Err(RunnerError::Input(format!(
                "unknown figure format `{other}`: use png or svg"
            ))),
        })
        .collect()
}

fn folder_name(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => c,
            _ => '-',
        })
        .collect()
}

/// Compares run `a` with run `b` (folders or `cells.parquet` files) and writes the
/// outputs.
pub fn compare(a: &Path, b: &Path, options: &CompareOptions) -> Result<Comparison, RunnerError> {
    if let Some(x) = options.fail_above {
        if !x.is_finite() || x < 0.0 {
            return Err(RunnerError::Input(format!(
                "--fail-above {x}: give a finite threshold ≥ 0 on |B − A| of the normalized logit difference, e.g. --fail-above 1e-4"
            )));
        }
    }
    let a = load(a, "A")?;
    let b = load(b, "B")?;
    let axis = if options.by_depth {
        LayerAxis::depth(a.n_layers, b.n_layers)
    } else {
        LayerAxis::Layer
    };
    let rows = join::join(&a, &b, axis);
    let summary = stats::summarize(&rows, options.fail_above);
    let out_dir = options.out_dir.clone().unwrap_or_else(|| {
        Path::new("results/compare").join(format!(
            "{}-vs-{}",
            folder_name(&a.id),
            folder_name(&b.id)
        ))
    });
    let written = |source| RunnerError::Write {
        source: Box::new(source),
        resume: None,
    };
    std::fs::create_dir_all(&out_dir).map_err(|source| {
        written(actpatch_report::ReportError::Write {
            path: out_dir.clone(),
            source,
        })
    })?;
    write_compare(&out_dir.join("compare.parquet"), &rows).map_err(written)?;
    let (accuracy, scatters) = accuracy::accuracy((&a, &b), axis, &out_dir, &options.formats)?;
    if !accuracy.is_empty() {
        let path = out_dir.join("attribution.parquet");
        actpatch_report::tables::write_table(
            &path,
            &actpatch_report::accuracy::ACCURACY,
            &accuracy,
        )
        .map_err(written)?;
    }
    let figures = render::figures(&rows, &out_dir, axis, &options.formats)?;
    let markdown = render::markdown(
        (&a, &b),
        axis,
        (&summary, &accuracy),
        (options.fail_above, options.top),
        (&figures, &scatters),
    );
    actpatch_report::atomic::write_bytes_atomic(&out_dir.join("compare.md"), markdown.as_bytes())
        .map_err(written)?;
    actpatch_report::html::compare_page::write_compare_page(&out_dir).map_err(written)?;
    Ok(Comparison {
        a,
        b,
        axis,
        rows,
        summary,
        accuracy,
        markdown,
        out_dir,
    })
}

/// The command: compares and prints `compare.md`; an error when `--fail-above` is
/// exceeded (exit 1).
pub fn cli(a: &Path, b: &Path, options: &CompareOptions) -> Result<(), RunnerError> {
    let c = compare(a, b, options)?;
    for note in c.a.notes.iter().chain(&c.b.notes) {
        eprintln!("note: {note}");
    }
    let (text, figures) = match c.markdown.split_once(render::FIGURES_HEADING) {
        Some((text, figures)) => (text, figures.matches("![").count()),
        None => (c.markdown.as_str(), 0),
    };
    print!("{text}");
    let figures = match figures {
        0 => String::new(),
        n => format!(", {n} figures in figures/"),
    };
    println!(
        "\nwritten to {}: compare.md, compare.html, compare.parquet{}{figures}",
        c.out_dir.display(),
        match c.accuracy.is_empty() {
            true => "",
            false => ", attribution.parquet",
        }
    );
    if c.summary.matched == 0 {
        eprintln!(
            "warning: no cell of {} matches one of {}: are they runs of the same experiment? With models of different depth, use --by-depth.",
            c.a.cells_path.display(),
            c.b.cells_path.display()
        );
    }
    match (options.fail_above, c.summary.exceeding) {
        (Some(threshold), Some(count)) if count > 0 => Err(RunnerError::ThresholdExceeded {
            count,
            matched: c.summary.matched,
            threshold,
            largest: (c.summary.changed.first())
                .and_then(stats::abs_change)
                .unwrap_or(f64::NAN),
            report: c.out_dir.join("compare.md"),
        }),
        _ => Ok(()),
    }
}
