//! Tables written batch by batch: a table of millions of rows (`edges.parquet` of a
//! real model: every edge of every pair) never sits in memory whole, neither as rows
//! nor as one data frame. The file holds what [`crate::tables::write_table`] writes of
//! all the rows, in more row groups.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use polars::prelude::*;

use crate::atomic::write_atomic;
use crate::schema::{frame, Table};
use crate::tables::{parquet_writer, table_err};
use crate::{ReportError, Result};

/// Rows per data frame handed to the parquet writer (one row group each).
const ROWS_PER_GROUP: usize = 1 << 18;

/// Where [`write_table_batches`]'s producer hands its batches of rows.
pub struct BatchSink<'w, R: 'static> {
    path: &'w Path,
    table: &'w Table<R>,
    /// The file until the first batch opens the parquet writer on it.
    file: Option<&'w mut BufWriter<File>>,
    writer: Option<BatchedWriter<&'w mut BufWriter<File>>>,
}

impl<R> BatchSink<'_, R> {
    /// Writes `rows` after the rows written before.
    pub fn write(&mut self, rows: &[R]) -> Result<()> {
        for group in rows.chunks(ROWS_PER_GROUP) {
            let data = frame(self.table, group).map_err(|e| table_err(self.path, e))?;
            self.write_frame(&data)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, data: &DataFrame) -> Result<()> {
        let writer = match (&mut self.writer, self.file.take()) {
            (Some(writer), _) => writer,
            (None, Some(file)) => {
                let batched = parquet_writer(file, self.table).batched(data.schema());
                self.writer
                    .insert(batched.map_err(|e| table_err(self.path, e))?)
            }
            (None, None) => {
                let reason = "the parquet writer failed to open".to_string();
                return Err(ReportError::Table {
                    path: self.path.to_path_buf(),
                    reason,
                });
            }
        };
        writer
            .write_batch(data)
            .map_err(|e| table_err(self.path, e))
    }

    /// The file's footer; a table with no rows gets its columns all the same.
    fn finish(mut self) -> Result<()> {
        if self.writer.is_none() {
            let empty = frame(self.table, &[]).map_err(|e| table_err(self.path, e))?;
            self.write_frame(&empty)?;
        }
        if let Some(writer) = &self.writer {
            writer.finish().map_err(|e| table_err(self.path, e))?;
        }
        Ok(())
    }
}

/// Writes `table` to `path` atomically, batch by batch: `produce` hands each batch to
/// the sink, which writes it before the producer makes the next, and returns what it
/// keeps (e.g. the rows a report reads).
pub fn write_table_batches<R, T>(
    path: &Path,
    table: &Table<R>,
    produce: impl FnOnce(&mut BatchSink<R>) -> Result<T>,
) -> Result<T> {
    let mut kept = None;
    write_atomic(path, |file| {
        let mut sink = BatchSink {
            path,
            table,
            file: Some(file),
            writer: None,
        };
        kept = Some(produce(&mut sink)?);
        sink.finish()
    })?;
    kept.ok_or_else(|| ReportError::Table {
        path: path.to_path_buf(),
        reason: "nothing was produced".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::{EdgeRow, EDGES};
    use crate::tables::{read_frame, write_table};

    fn rows(n: usize) -> Vec<EdgeRow> {
        (0..n)
            .map(|i| EdgeRow {
                scope: if i % 3 == 0 { "all" } else { "pair" }.into(),
                pair: (i % 3 != 0).then(|| format!("p{}", i % 7)),
                edge: format!("a{}.h{}->m{}", i % 5, i % 11, i % 13),
                n_pairs: (i % 4) as u32,
                score: i as f64 * 0.25 - 3.0,
                exact: (i % 2 == 0).then_some(i as f64),
                ..EdgeRow::default()
            })
            .collect()
    }

    /// Batches of any sizes (none empty, one empty, one past a row group) read back as
    /// the table written at once; no batch at all gives the table's empty columns.
    #[test]
    fn batches_read_back_as_one_table() {
        let dir = std::env::temp_dir().join(format!("actpatch-batched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = rows(ROWS_PER_GROUP + 1000);
        let (once, batched) = (dir.join("once.parquet"), dir.join("batched.parquet"));
        write_table(&once, &EDGES, &all).unwrap();
        let cuts = [0, 10, 10, 5000, ROWS_PER_GROUP + 600, all.len()];
        let kept = write_table_batches(&batched, &EDGES, |sink| {
            for pair in cuts.windows(2) {
                sink.write(&all[pair[0]..pair[1]])?;
            }
            Ok(cuts.len())
        })
        .unwrap();
        assert_eq!(kept, cuts.len());
        let (a, b) = (read_frame(&once).unwrap(), read_frame(&batched).unwrap());
        assert_eq!(a.data.height(), all.len());
        assert!(a.data.equals_missing(&b.data), "the batched table differs");
        let empty = dir.join("empty.parquet");
        write_table_batches(&empty, &EDGES, |_| Ok(())).unwrap();
        let e = read_frame(&empty).unwrap().data;
        assert_eq!((e.height(), e.width()), (0, EDGES.columns.len()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
