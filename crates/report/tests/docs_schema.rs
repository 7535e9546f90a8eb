//! The guide's output-schema chapter (`docs/src/outputs.md`) against the writers'
//! schemas: for every table, the documented columns are the written ones, in file
//! order, with their types, and `null` exactly where the row struct's field is optional.

use std::path::Path;

use actpatch_report::schema::{ColumnType, Table};
use actpatch_report::{accuracy, compare_table, curves, edges, tables};

/// A documented or written column: name, type, whether it may be null.
type ColumnDoc = (String, String, bool);

/// The (column, type, optional) rows of each ``### `file` `` section of the chapter.
fn documented() -> Vec<(String, Vec<ColumnDoc>)> {
    let chapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/outputs.md");
    let text = std::fs::read_to_string(&chapter).unwrap();
    let mut sections: Vec<(String, Vec<ColumnDoc>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            let file = rest.trim_end_matches('`').to_string();
            sections.push((file, Vec::new()));
            continue;
        }
        let Some((_, rows)) = sections.last_mut() else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let (ty, optional) = match cells[2].strip_suffix(", null") {
            Some(ty) => (ty.to_string(), true),
            None => (cells[2].to_string(), false),
        };
        rows.push((name, ty, optional));
    }
    sections
}

fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "str",
        ColumnType::U32 => "u32",
        ColumnType::F64 => "f64",
        ColumnType::Bool => "bool",
        ColumnType::TextList => "list[str]",
    }
}

fn written<R>(table: &Table<R>) -> (&'static str, Vec<ColumnDoc>) {
    let columns = (table.columns.iter())
        .map(|c| {
            (
                c.name.to_string(),
                type_name(c.ty()).to_string(),
                c.optional(),
            )
        })
        .collect();
    (table.file, columns)
}

#[test]
fn the_schema_chapter_is_the_writers_schema() {
    let written = [
        written(&tables::CELLS),
        written(&tables::BASELINES),
        written(&tables::CONCEPTS),
        written(&accuracy::ACCURACY),
        written(&edges::EDGES),
        written(&curves::CIRCUITS),
        written(&compare_table::COMPARE),
    ];
    let documented = documented();
    for (file, columns) in &written {
        let Some((_, doc)) = documented.iter().find(|(f, _)| f == file) else {
            panic!("docs/src/outputs.md has no section ### `{file}`");
        };
        assert_eq!(
            doc, columns,
            "docs/src/outputs.md, `{file}`: the documented (column, type, null) rows differ from the writer's schema"
        );
    }
    for (file, _) in &documented {
        assert!(
            written.iter().any(|(f, _)| f == file),
            "docs/src/outputs.md documents `{file}`, which no writer writes"
        );
    }
}
