//! Reading back tables that other tools wrote. pandas, pyarrow, polars and duckdb keep
//! the columns but not always their types or the file's metadata: pandas turns an
//! integer column with nulls into float64 (`head`, `position`) and writes NaN as
//! null; pyarrow drops the `actpatch.schema_version` key. [`conform`] accepts what
//! can be read without loss, casting it to the schema's types, and names the column
//! and the type it expected when something cannot.

use polars::prelude::*;

use crate::schema::{Column, ColumnType, Table};

/// A column that does not have, and cannot be cast to, its schema type.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub column: String,
    /// The schema type, in words.
    pub expected: String,
    /// What the file holds, in words.
    pub found: String,
}

/// The frame with the schema's columns, in order and of the schema's types, and notes
/// on what was adapted (columns ignored or filled with nulls).
pub fn conform<R>(
    table: &Table<R>,
    frame: &DataFrame,
) -> Result<(DataFrame, Vec<String>), Mismatch> {
    let mut columns = Vec::with_capacity(table.columns.len());
    let mut notes = Vec::new();
    for spec in table.columns {
        let expected = spec.ty().describe(spec.nullable());
        match frame.column(spec.name) {
            Ok(column) => columns.push(cast(spec, column).map_err(|found| Mismatch {
                column: spec.name.to_string(),
                expected,
                found,
            })?),
            Err(_) if spec.nullable() => {
                notes.push(format!(
                    "column `{}` is missing; read as all null",
                    spec.name
                ));
                columns.push(polars::prelude::Column::full_null(
                    spec.name.into(),
                    frame.height(),
                    &target(spec.ty()),
                ));
            }
            Err(_) => {
                return Err(Mismatch {
                    column: spec.name.to_string(),
                    expected,
                    found: "no such column".into(),
                })
            }
        }
    }
    let extra: Vec<&str> = frame
        .get_column_names()
        .into_iter()
        .map(|n| n.as_str())
        .filter(|n| table.column(n).is_none() && !n.starts_with("__index_level_"))
        .collect();
    if !extra.is_empty() {
        notes.push(format!(
            "columns not in the actpatch schema ignored: {}",
            extra.join(", ")
        ));
    }
    let conformed = DataFrame::new_infer_height(columns).map_err(|e| Mismatch {
        column: String::new(),
        expected: "columns of equal length".into(),
        found: e.to_string(),
    })?;
    Ok((conformed, notes))
}

fn target(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Text => DataType::String,
        ColumnType::U32 => DataType::UInt32,
        ColumnType::F64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::TextList => DataType::List(Box::new(DataType::String)),
    }
}

/// `column` cast to `spec`'s type, or what it holds in words when it cannot be.
fn cast<R>(
    spec: &Column<R>,
    column: &polars::prelude::Column,
) -> Result<polars::prelude::Column, String> {
    let dtype = column.dtype();
    let found = || format!("{dtype} values");
    let want = target(spec.ty());
    if *dtype == want {
        return Ok(column.clone());
    }
    let castable = match (spec.ty(), dtype) {
        (_, DataType::Null) => true,
        (ColumnType::U32, d) if d.is_integer() => true,
        (ColumnType::U32, d) if d.is_float() => return integral(column, &want),
        (ColumnType::F64, d) => d.is_primitive_numeric(),
        (ColumnType::TextList, DataType::List(inner)) => {
            matches!(inner.as_ref(), DataType::Null | DataType::String)
        }
        _ => false,
    };
    if !castable {
        return Err(found());
    }
    // Strict: a value out of range (e.g. a negative layer) is an error, not a null.
    column.strict_cast(&want).map_err(|_| match spec.ty() {
        ColumnType::U32 => format!("{dtype} values outside 0..=4294967295"),
        _ => found(),
    })
}

/// Floats that are whole numbers (as pandas writes integer columns with nulls) cast
/// to `want`; NaN becomes null.
fn integral(
    column: &polars::prelude::Column,
    want: &DataType,
) -> Result<polars::prelude::Column, String> {
    let values = column.cast(&DataType::Float64).map_err(|e| e.to_string())?;
    let values = values.f64().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(values.len());
    for v in values.iter() {
        match v {
            Some(v) if v.is_nan() => out.push(None),
            Some(v) if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) => {
                out.push(Some(v as u32))
            }
            Some(v) => {
                return Err(format!(
                    "{} values such as {v}, not whole numbers ≥ 0",
                    column.dtype()
                ))
            }
            None => out.push(None),
        }
    }
    polars::prelude::Column::new(column.name().clone(), out)
        .cast(want)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Row {
        name: String,
        layer: u32,
        head: Option<u32>,
        value: f64,
        tokens: Vec<String>,
    }

    static TABLE: Table<Row> = Table {
        file: "test.parquet",
        columns: &[
            Column::text("name", |r| &r.name, |r, v| r.name = v),
            Column::u32("layer", |r| r.layer, |r, v| r.layer = v),
            Column::opt_u32("head", |r| r.head, |r, v| r.head = v),
            Column::f64("value", |r| r.value, |r, v| r.value = v),
            Column::text_list("tokens", |r| &r.tokens, |r, v| r.tokens = v),
        ],
    };

    fn pandas_like() -> DataFrame {
        // As pandas writes it back: integers with nulls as float64, NaN as null, the
        // index as an extra column, columns in another order.
        df!(
            "__index_level_0__" => [3i64, 7],
            "value" => [Some(0.5), None],
            "head" => [None::<f64>, None],
            "layer" => [1.0f64, 2.0],
            "name" => ["a", "b"],
        )
        .unwrap()
        .hstack(&[polars::prelude::Column::new(
            "tokens".into(),
            vec![
                Series::new("".into(), ["x", "y"]),
                Series::new("".into(), Vec::<String>::new()),
            ],
        )])
        .unwrap()
    }

    #[test]
    fn integral_floats_and_nulls_are_read_back() {
        let (frame, notes) = conform(&TABLE, &pandas_like()).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let rows = crate::schema::rows(&TABLE, &frame).unwrap();
        assert_eq!(rows[0].layer, 1);
        assert_eq!(rows[1].head, None);
        assert!(rows[1].value.is_nan());
        assert_eq!(rows[0].tokens, vec!["x", "y"]);
        assert_eq!(rows[1].name, "b");
    }

    #[test]
    fn fractional_layers_name_the_column_and_type() {
        let mut frame = pandas_like();
        frame
            .replace(
                "layer",
                polars::prelude::Column::new("layer".into(), [1.5f64, 2.0]),
            )
            .unwrap();
        let err = conform(&TABLE, &frame).unwrap_err();
        assert_eq!(err.column, "layer");
        assert!(err.expected.contains("uint32"), "{err:?}");
        assert!(err.found.contains("1.5"), "{err:?}");
    }

    #[test]
    fn text_where_numbers_belong_is_refused() {
        let mut frame = pandas_like();
        frame
            .replace(
                "value",
                polars::prelude::Column::new("value".into(), ["x", "y"]),
            )
            .unwrap();
        let err = conform(&TABLE, &frame).unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.found.as_str()),
            ("value", "str values")
        );
    }

    #[test]
    fn missing_required_columns_are_named() {
        let frame = pandas_like().drop("name").unwrap();
        let err = conform(&TABLE, &frame).unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.found.as_str()),
            ("name", "no such column")
        );
    }
}
