//! Files appear complete or not at all: written to a temporary name in the same
//! folder, then renamed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{ReportError, Result};

/// The temporary name a file is written under before it is renamed to `path`: unique
/// to this process and this write, so that writers of the same file on one shared
/// folder (two array tasks given the same shard, even pods whose process ids agree)
/// never write into each other's temporary file.
pub fn temp_path(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".partial.{}.{nanos:x}.{write}.{name}",
        std::process::id()
    ))
}

/// Writes `path` through `write`, atomically: readers see the old state or the
/// complete new file, never a half-written one.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let tmp = temp_path(path);
    let io_err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(&tmp).map_err(io_err)?;
    let mut writer = BufWriter::new(file);
    let written = write(&mut writer).and_then(|_| {
        writer.flush().map_err(io_err)?;
        writer.get_ref().sync_all().map_err(io_err)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes).map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
    })
}
