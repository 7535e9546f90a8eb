//! Reading one column of a table written back by any tool: as text or numbers,
//! whatever its stored type.

use polars::prelude::{DataFrame, DataType};

/// A column of `frame` as text, numbers or whole numbers; `None` when it is absent
/// or cannot be cast.
pub(crate) fn texts(frame: &DataFrame, name: &str) -> Option<Vec<Option<String>>> {
    let column = frame.column(name).ok()?.cast(&DataType::String).ok()?;
    Some(
        column
            .str()
            .ok()?
            .iter()
            .map(|s| s.map(str::to_string))
            .collect(),
    )
}

pub(crate) fn numbers(frame: &DataFrame, name: &str) -> Option<Vec<Option<f64>>> {
    let column = frame.column(name).ok()?.cast(&DataType::Float64).ok()?;
    Some(column.f64().ok()?.iter().collect())
}
