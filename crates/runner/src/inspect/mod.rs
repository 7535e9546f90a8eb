//! Looking back at finished runs: `actpatch compare` (two runs cell by cell),
//! `actpatch runs` (every run under a folder) and `actpatch report` (a run's page,
//! re-rendered from its folder). Both read what runs wrote —
//! `cells.parquet` and the typed [`crate::manifest::Manifest`] — and nothing else of
//! the runner.

pub mod compare;
pub mod render;
pub mod runs;
