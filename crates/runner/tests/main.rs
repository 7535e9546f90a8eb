//! The integration tests of `actpatch-runner`: the command end to end: files in; tables,
//! figures and reports out; exit codes, shards, the browser.
//! One test binary per crate (each file below is a module): a binary links all of
//! candle and polars, so one per file would take gigabytes of disk and minutes of linking.

mod common;
#[path = "../../../tests/support/tiny_gguf.rs"]
mod tiny_gguf;

mod bad_input;
mod browser;
mod circuit_shards;
mod circuits;
mod compare;
mod concepts;
mod docs_reference;
mod end_to_end;
mod exit_codes;
mod families;
mod gaussian;
mod golden_grids;
mod golden_paths;
mod gpt2_files;
mod interrupt;
mod loader_fuzz;
mod methods;
mod pairs_at_once;
mod real_concepts;
mod real_smollm2;
mod report_page;
mod shards;
mod smollm2_expect;
