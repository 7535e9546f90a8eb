//! The integration tests of `actpatch-circuits`: edge scores, faithfulness curves and exact
//! edge effects against the EAP-IG library and MIB.
//! One test binary per crate (each file below is a module): a binary links all of
//! candle and polars, so one per file would take gigabytes of disk and minutes of linking.

mod common;

mod golden_edges;
mod golden_faithfulness;
mod naive_exact;
