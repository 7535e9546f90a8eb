//! Sharded runs: one run's work divided among n processes (Slurm array tasks,
//! Kubernetes Indexed Job pods, or `--shard i/n` by hand) that write into one run
//! folder, merged afterwards into the tables of a single-process run.
//!
//! - [`spec`]: which shard this process is (`--shard`, or the scheduler's environment)
//!   and the run id the shards share;
//! - [`layout`]: where shards write in the run folder;
//! - [`assign`]: which of the sweep's batches each shard runs, balanced by cost;
//! - [`check`]: whether two shards belong to one run.
//!
//! Running a shard and merging the shards are in [`crate::run`].

pub mod assign;
pub mod check;
pub mod layout;
pub mod spec;

pub use spec::{resolve_run_id, resolve_shard, ShardChoice, ShardFlags, ShardSpec};
