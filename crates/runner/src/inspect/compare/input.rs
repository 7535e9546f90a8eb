//! The two sides of a comparison: a run folder or a `cells.parquet` file, read with the
//! schema-version check and lenient reading of [`actpatch_report::tables::read_rows`],
//! plus what the run's `manifest.json` says about it when there is one.

use std::path::{Path, PathBuf};

use actpatch_report::tables::{read_rows, CELLS};
use actpatch_report::CellRow;

use crate::manifest::{CostRecord, Manifest, RunStatus};
use crate::RunnerError;

/// One side of a comparison.
#[derive(Debug, Clone)]
pub struct RunTable {
    /// The run id (manifest, else the table's `run_id`, else the folder name).
    pub id: String,
    /// The `cells.parquet` that was read.
    pub cells_path: PathBuf,
    pub cells: Vec<CellRow>,
    /// The model's layer count: manifest `model.n_layers`, else the largest layer + 1.
    pub n_layers: usize,
    /// Where `n_layers` came from, for the report.
    pub n_layers_source: &'static str,
    /// Hub id or folder of the model.
    pub model: String,
    /// Manifest `status`, when there is a manifest.
    pub status: Option<RunStatus>,
    /// What reading the table adapted (e.g. written back by pandas without the
    /// schema version key).
    pub notes: Vec<String>,
    /// What each method cost, from the manifest (none without one).
    pub costs: Vec<CostRecord>,
}

/// The `cells.parquet` of `path` (a run folder or the file itself) and its run folder.
fn resolve(path: &Path, side: &str) -> Result<(PathBuf, Option<PathBuf>), RunnerError> {
    let how = "Pass a run folder (results/<experiment>/<run id>/) or its cells.parquet; `actpatch runs` lists the runs.";
    if !path.exists() {
        return Err(RunnerError::Input(format!(
            "{side}: {} does not exist. {how}",
            path.display()
        )));
    }
    if path.is_dir() {
        let cells = path.join("cells.parquet");
        if !cells.is_file() {
            let status = (Manifest::read(path).ok().flatten())
                .map(|m| {
                    format!(
                        " (its manifest says status \"{}\": the run did not finish)",
                        m.status.name()
                    )
                })
                .unwrap_or_default();
            return Err(RunnerError::Input(format!(
                "{side}: {} has no cells.parquet{status}. {how}",
                path.display()
            )));
        }
        return Ok((cells, Some(path.to_path_buf())));
    }
    let dir = path
        .parent()
        .filter(|d| d.join("manifest.json").is_file())
        .map(Path::to_path_buf);
    Ok((path.to_path_buf(), dir))
}

/// Loads one side of a comparison. `side` ("A" or "B") prefixes error messages.
pub fn load(path: &Path, side: &str) -> Result<RunTable, RunnerError> {
    let (cells_path, run_dir) = resolve(path, side)?;
    let table = read_rows(&cells_path, &CELLS).map_err(RunnerError::read)?;
    let (cells, notes) = (table.data, table.notes);
    let manifest = (run_dir.as_deref()).and_then(|d| Manifest::read(d).ok().flatten());
    let folder_name = || {
        run_dir
            .as_deref()
            .or(cells_path.parent())
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| cells_path.display().to_string())
    };
    let id = (manifest.as_ref().map(|m| m.run_id.clone()))
        .or_else(|| cells.first().map(|c| c.run_id.clone()))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(folder_name);
    let model = (manifest.as_ref())
        .and_then(|m| m.model.as_ref().map(|model| model.source.clone()))
        .or_else(|| cells.first().map(|c| c.model.clone()))
        .unwrap_or_default();
    let manifest_layers = (manifest.as_ref())
        .and_then(|m| m.model.as_ref().map(|model| model.n_layers))
        .filter(|n| *n > 0);
    let (n_layers, n_layers_source) = match manifest_layers {
        Some(n) => (n, "manifest model.n_layers"),
        None => (
            cells
                .iter()
                .map(|c| c.layer as usize + 1)
                .max()
                .unwrap_or(1),
            "largest layer in cells.parquet + 1",
        ),
    };
    let status = manifest.as_ref().map(|m| m.status);
    let costs = manifest.map(|m| m.costs).unwrap_or_default();
    Ok(RunTable {
        id,
        cells_path,
        cells,
        n_layers,
        n_layers_source,
        model,
        status,
        notes,
        costs,
    })
}
