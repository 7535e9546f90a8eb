//! Looking back at finished runs: `actpatch compare` (two runs cell by cell) and
//! `actpatch runs` (every run under a folder). Both read what runs wrote —
//! `cells.parquet` and the typed [`crate::manifest::Manifest`] — and nothing else of
//! the runner.

pub mod compare;
pub mod runs;
