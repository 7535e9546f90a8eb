//! The integration tests of `actpatch-patching`: every patch kind and sweep against
//! TransformerLens, the fast paths against the naive loop.
//! One test binary per crate (each file below is a module): a binary links all of
//! candle and polars, so one per file would take gigabytes of disk and minutes of linking.

mod common;
mod golden;

mod atp_star;
mod attribution;
mod fast_path;
mod fast_path_families;
mod gaussian;
mod golden_kinds;
mod golden_paths;
mod real_smollm2_paths;
mod split_batches;
