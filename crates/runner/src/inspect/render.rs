//! `actpatch report DIR`: re-renders the page of a run folder (`report.html`, from its
//! tables and manifest) or of a comparison folder (`compare.html`, from
//! `compare.md` and `compare.parquet`). The page depends on the folder's files only,
//! so a finished, resumed or merged run renders the same page.

use std::path::{Path, PathBuf};

use actpatch_report::html::compare_page::write_compare_page;
use actpatch_report::html::run_page::write_run_page;

use crate::manifest::Manifest;
use crate::RunnerError;

/// Writes the page of `dir`; returns its path.
pub fn report(dir: &Path) -> Result<PathBuf, RunnerError> {
    let how = "Give a run folder (results/<experiment>/<run id>/, with cells.parquet and manifest.json; `actpatch runs` lists them) or a folder written by `actpatch compare`.";
    if !dir.is_dir() {
        return Err(RunnerError::Input(format!(
            "{} is not a folder. {how}",
            dir.display()
        )));
    }
    if dir.join("cells.parquet").is_file() && dir.join("manifest.json").is_file() {
        return write_run_page(dir, None).map_err(RunnerError::from_files);
    }
    if dir.join("compare.parquet").is_file() && dir.join("compare.md").is_file() {
        return write_compare_page(dir).map_err(RunnerError::from_files);
    }
    let status = (Manifest::read(dir).ok().flatten())
        .map(|m| m.status.name().to_string())
        .map(|s| {
            format!(
                " Its manifest says status \"{s}\": finish it with `actpatch run --resume {}`.",
                dir.display()
            )
        })
        .unwrap_or_default();
    Err(RunnerError::Input(format!(
        "{} has no cells.parquet with a manifest.json, nor compare.parquet with compare.md.{status} {how}",
        dir.display()
    )))
}
