//! The layout of every table actpatch writes, in one place. A table is a list of
//! [`Column`]s, one line each: name, type, and how to get the value from (and put it
//! into) a row struct. Writing ([`frame`]) and reading back ([`rows`]) both follow it,
//! and so does the Arrow schema stored in the file ([`arrow_schema`]): plain `string`
//! and `list<string>`, never polars' `string_view`, so that pandas, pyarrow, polars and
//! duckdb read every table without options.
//!
//! A new column is one more line in its table's list (and a field in the row struct).

use polars::prelude::*;

/// A column's type as stored in parquet (and as the row struct holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    U32,
    F64,
    Bool,
    /// A list of strings.
    TextList,
}

impl ColumnType {
    /// How an error message names the type.
    pub fn describe(self, nullable: bool) -> String {
        let base = match self {
            ColumnType::Text => "text (string)",
            ColumnType::U32 => "whole numbers ≥ 0 (uint32)",
            ColumnType::F64 => "numbers (float64)",
            ColumnType::Bool => "true/false (bool)",
            ColumnType::TextList => "lists of text (list<string>)",
        };
        if nullable {
            format!("{base}, nulls allowed")
        } else {
            base.to_string()
        }
    }

    fn arrow(self) -> ArrowDataType {
        match self {
            ColumnType::Text => ArrowDataType::Utf8,
            ColumnType::U32 => ArrowDataType::UInt32,
            ColumnType::F64 => ArrowDataType::Float64,
            ColumnType::Bool => ArrowDataType::Boolean,
            ColumnType::TextList => ArrowDataType::List(Box::new(ArrowField::new(
                "item".into(),
                ArrowDataType::Utf8,
                true,
            ))),
        }
    }
}

/// How a column reads and writes its row struct's field.
#[derive(Clone, Copy)]
enum Access<R> {
    Text(fn(&R) -> &str, fn(&mut R, String)),
    OptText(fn(&R) -> Option<&str>, fn(&mut R, Option<String>)),
    U32(fn(&R) -> u32, fn(&mut R, u32)),
    OptU32(fn(&R) -> Option<u32>, fn(&mut R, Option<u32>)),
    /// Non-nullable floats: a null read back (pandas writes NaN as null) becomes NaN.
    F64(fn(&R) -> f64, fn(&mut R, f64)),
    OptF64(fn(&R) -> Option<f64>, fn(&mut R, Option<f64>)),
    Bool(fn(&R) -> bool, fn(&mut R, bool)),
    TextList(fn(&R) -> &[String], fn(&mut R, Vec<String>)),
}

/// One column of a table of rows `R`.
#[derive(Clone, Copy)]
pub struct Column<R> {
    pub name: &'static str,
    access: Access<R>,
}

impl<R> Column<R> {
    pub const fn text(name: &'static str, get: fn(&R) -> &str, set: fn(&mut R, String)) -> Self {
        Column {
            name,
            access: Access::Text(get, set),
        }
    }
    pub const fn opt_text(
        name: &'static str,
        get: fn(&R) -> Option<&str>,
        set: fn(&mut R, Option<String>),
    ) -> Self {
        Column {
            name,
            access: Access::OptText(get, set),
        }
    }
    pub const fn u32(name: &'static str, get: fn(&R) -> u32, set: fn(&mut R, u32)) -> Self {
        Column {
            name,
            access: Access::U32(get, set),
        }
    }
    pub const fn opt_u32(
        name: &'static str,
        get: fn(&R) -> Option<u32>,
        set: fn(&mut R, Option<u32>),
    ) -> Self {
        Column {
            name,
            access: Access::OptU32(get, set),
        }
    }
    pub const fn f64(name: &'static str, get: fn(&R) -> f64, set: fn(&mut R, f64)) -> Self {
        Column {
            name,
            access: Access::F64(get, set),
        }
    }
    pub const fn opt_f64(
        name: &'static str,
        get: fn(&R) -> Option<f64>,
        set: fn(&mut R, Option<f64>),
    ) -> Self {
        Column {
            name,
            access: Access::OptF64(get, set),
        }
    }
    pub const fn bool(name: &'static str, get: fn(&R) -> bool, set: fn(&mut R, bool)) -> Self {
        Column {
            name,
            access: Access::Bool(get, set),
        }
    }
    pub const fn text_list(
        name: &'static str,
        get: fn(&R) -> &[String],
        set: fn(&mut R, Vec<String>),
    ) -> Self {
        Column {
            name,
            access: Access::TextList(get, set),
        }
    }

    pub fn ty(&self) -> ColumnType {
        match self.access {
            Access::Text(..) | Access::OptText(..) => ColumnType::Text,
            Access::U32(..) | Access::OptU32(..) => ColumnType::U32,
            Access::F64(..) | Access::OptF64(..) => ColumnType::F64,
            Access::Bool(..) => ColumnType::Bool,
            Access::TextList(..) => ColumnType::TextList,
        }
    }

    /// Whether the row struct's field is an `Option` (a null is a value of its own).
    pub fn optional(&self) -> bool {
        matches!(
            self.access,
            Access::OptText(..) | Access::OptU32(..) | Access::OptF64(..)
        )
    }

    /// Whether the column may hold nulls. Non-nullable floats read nulls back as NaN.
    pub fn nullable(&self) -> bool {
        matches!(
            self.access,
            Access::OptText(..) | Access::OptU32(..) | Access::OptF64(..) | Access::F64(..)
        )
    }

    fn build(&self, rows: &[R]) -> polars::prelude::Column {
        let name = self.name.into();
        match self.access {
            Access::Text(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::OptText(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::U32(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::OptU32(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::F64(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::OptF64(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::Bool(get, _) => {
                polars::prelude::Column::new(name, rows.iter().map(get).collect::<Vec<_>>())
            }
            Access::TextList(get, _) => {
                let lists: Vec<Series> = rows
                    .iter()
                    .map(|r| Series::new("".into(), get(r)))
                    .collect();
                let column = polars::prelude::Column::new(name, lists);
                if rows.is_empty() {
                    // An empty frame infers no inner type: give it the schema's.
                    return column
                        .cast(&DataType::List(Box::new(DataType::String)))
                        .unwrap_or(column);
                }
                column
            }
        }
    }
}

/// A table: its file name (for messages) and its columns, in order.
pub struct Table<R: 'static> {
    pub file: &'static str,
    pub columns: &'static [Column<R>],
}

impl<R> Table<R> {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column<R>> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The rows as a data frame with the table's columns, in order.
pub fn frame<R>(table: &Table<R>, rows: &[R]) -> PolarsResult<DataFrame> {
    DataFrame::new_infer_height(table.columns.iter().map(|c| c.build(rows)).collect())
}

/// The Arrow schema stored in the parquet file (`ARROW:schema`): what pyarrow and
/// pandas turn the columns into. Plain `string` and `list<string>` throughout.
pub fn arrow_schema<R>(table: &Table<R>) -> ArrowSchema {
    table
        .columns
        .iter()
        .map(|c| {
            let field = ArrowField::new(c.name.into(), c.ty().arrow(), c.nullable());
            (c.name.into(), field)
        })
        .collect()
}

/// Why a column could not be read as its schema type.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnError {
    pub column: String,
    pub reason: String,
}

/// Reads rows out of `frame`, whose columns already have the schema's types (see
/// [`crate::lenient::conform`]). Columns missing from the frame keep `R::default()`'s
/// value.
pub fn rows<R: Default>(table: &Table<R>, frame: &DataFrame) -> Result<Vec<R>, ColumnError> {
    let mut out: Vec<R> = (0..frame.height()).map(|_| R::default()).collect();
    for column in table.columns {
        let Ok(data) = frame.column(column.name) else {
            continue;
        };
        fill(column, data, &mut out).map_err(|e| ColumnError {
            column: column.name.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(out)
}

fn null_in(name: &str, row: usize) -> PolarsError {
    PolarsError::ComputeError(format!("row {row} is null, but `{name}` may not be null").into())
}

fn fill<R>(column: &Column<R>, data: &polars::prelude::Column, out: &mut [R]) -> PolarsResult<()> {
    let name = column.name;
    match column.access {
        Access::Text(_, set) => {
            for (i, (row, v)) in out.iter_mut().zip(data.str()?.iter()).enumerate() {
                set(row, v.ok_or_else(|| null_in(name, i))?.to_string());
            }
        }
        Access::OptText(_, set) => {
            for (row, v) in out.iter_mut().zip(data.str()?.iter()) {
                set(row, v.map(str::to_string));
            }
        }
        Access::U32(_, set) => {
            for (i, (row, v)) in out.iter_mut().zip(data.u32()?.iter()).enumerate() {
                set(row, v.ok_or_else(|| null_in(name, i))?);
            }
        }
        Access::OptU32(_, set) => {
            for (row, v) in out.iter_mut().zip(data.u32()?.iter()) {
                set(row, v);
            }
        }
        Access::F64(_, set) => {
            for (row, v) in out.iter_mut().zip(data.f64()?.iter()) {
                set(row, v.unwrap_or(f64::NAN));
            }
        }
        Access::OptF64(_, set) => {
            for (row, v) in out.iter_mut().zip(data.f64()?.iter()) {
                set(row, v);
            }
        }
        Access::Bool(_, set) => {
            for (i, (row, v)) in out.iter_mut().zip(data.bool()?.iter()).enumerate() {
                set(row, v.ok_or_else(|| null_in(name, i))?);
            }
        }
        Access::TextList(_, set) => {
            let lists = data.list()?;
            for (i, row) in out.iter_mut().enumerate() {
                let items = match lists.get_as_series(i) {
                    Some(series) => series
                        .str()?
                        .iter()
                        .map(|s| s.unwrap_or_default().to_string())
                        .collect(),
                    None => Vec::new(),
                };
                set(row, items);
            }
        }
    }
    Ok(())
}
