//! Where the shards of a run write, in the run folder `<out>/<run id>/`:
//!
//! - `cells/shard=i-of-n/part-0.parquet`: shard i's cells (hive layout: polars
//!   `scan_parquet("cells/**/*.parquet")` and duckdb
//!   `read_parquet('cells/*/*.parquet', hive_partitioning = true)` read them as one
//!   table with a `shard` column);
//! - `exact/shard=i-of-n.json`: with `[circuit]` exact effects, those shard i measured
//!   (its receiver blocks; see `run/circuit_shards.rs`);
//! - `shards/i-of-n.json`: shard i's manifest, `"complete"` once its part is written;
//! - `manifest.json`: the run's own, `"running"` with `shards = n` until the merge
//!   writes the run's tables and marks it `"complete"`.
//!
//! Every file is written atomically, so two processes given the same shard each
//! leave either nothing or a whole file.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::shard::ShardSpec;

pub fn shards_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("shards")
}

/// Shard `shard`'s manifest.
pub fn shard_manifest_path(run_dir: &Path, shard: ShardSpec) -> PathBuf {
    shards_dir(run_dir).join(format!("{}.json", shard.label()))
}

/// Shard `shard`'s cells.
pub fn part_path(run_dir: &Path, shard: ShardSpec) -> PathBuf {
    run_dir
        .join("cells")
        .join(shard.partition())
        .join("part-0.parquet")
}

/// The folder of the shards' exact edge effects (`[circuit]`), in the run folder.
pub const EXACT_DIR: &str = "exact";

/// Shard `shard`'s exact edge effects.
pub fn exact_part_path(run_dir: &Path, shard: ShardSpec) -> PathBuf {
    run_dir
        .join(EXACT_DIR)
        .join(format!("{}.json", shard.partition()))
}

/// Held while one process merges the shards, so the last two shards to finish do
/// not both merge.
pub fn merge_lock_path(run_dir: &Path) -> PathBuf {
    shards_dir(run_dir).join(".merging")
}

/// The shard manifests in `run_dir`, by shard (unreadable ones as their error).
pub fn read_shards(run_dir: &Path) -> Vec<(ShardSpec, Result<Manifest, String>)> {
    let Ok(entries) = std::fs::read_dir(shards_dir(run_dir)) else {
        return Vec::new();
    };
    let mut shards: Vec<(ShardSpec, Result<Manifest, String>)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let shard = ShardSpec::from_label(name.strip_suffix(".json")?)?;
            let manifest = Manifest::read_from(&e.path()).and_then(|m| {
                m.ok_or_else(|| format!("{} vanished while it was read", e.path().display()))
            });
            Some((shard, manifest))
        })
        .collect();
    shards.sort_by_key(|(shard, _)| *shard);
    shards
}

/// How many of a run's `count` shards are complete.
pub fn complete_shards(run_dir: &Path, count: usize) -> usize {
    read_shards(run_dir)
        .iter()
        .filter(|(s, m)| s.count == count && m.as_ref().is_ok_and(|m| m.complete()))
        .count()
}
