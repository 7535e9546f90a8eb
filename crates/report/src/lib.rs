//! Outputs of a patching run: parquet tables ([`tables`], laid out in [`schema`], read
//! back leniently by [`lenient`]), heatmaps ([`heatmap`]) and the markdown report
//! ([`markdown`]). Every file is written atomically ([`atomic`]).

pub mod accuracy;
pub mod across;
pub mod atomic;
pub mod batched;
pub mod circuit_graph;
pub mod compare_table;
pub mod curves;
pub mod edges;
mod error;
mod figure;
pub mod heatmap;
pub mod html;
pub mod lenient;
pub mod markdown;
pub mod scatter;
pub mod schema;
pub mod summary;
pub mod tables;

pub use accuracy::{AccuracyRow, Agreement};
pub use compare_table::CompareRow;
pub use edges::EdgeRow;
pub use error::{ReportError, Result};
pub use heatmap::{Heatmap, ImageFormat};
pub use markdown::{ConceptSection, FigureSection, ReferencePair, RunReport};
pub use scatter::{Scatter, ScatterSeries};
pub use tables::{BaselineRow, CellRow, ConceptRow, TableRead, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
