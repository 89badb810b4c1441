//! Whole-file writes that a reader or a crash never sees half done.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file through a temporary sibling, `fsync`, a rename, and an `fsync` of the directory (so the rename
/// itself survives a power cut). Every call uses its own temporary name (pid, counter, time), created with
/// `O_EXCL`: two writers of one file — `report` during a `run`, two threads — never rename each other's half-written
/// temporary into place; the last complete rename wins.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    write_bytes_atomically(path, text.as_bytes())
}

/// [`write_atomically`] for bytes. A missing parent folder is created first (`--out new/x.csv`), so a command does
/// not fail at its last step, after its work is done.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_sibling(path)?;
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_parent(path)
}

/// A fresh temporary name next to `path`: `.NAME.PID.N.NANOS.tmp` (hidden, and never a name the store reads).
pub fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::msg(format!("{}: not a file path", path.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let unique = format!(
        ".{}.{}.{}.{nanos}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    Ok(path.with_file_name(unique))
}

/// `fsync`s the directory holding `path`, making a rename or a new file in it durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Appends one line (a newline added) and syncs it: for logs that are read line by line and never rewritten.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(path, e))
}

/// `fsync` of a directory; a no-op where directories cannot be opened as files (not Unix).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_parent_folder_is_created() {
        // Before: `predict … --out newdir/x.csv` failed on the temporary file, after the scoring was done.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new/deeper/x.csv");
        write_atomically(&path, "a,b\n").expect("writes");
        assert_eq!(fs::read_to_string(&path).expect("reads"), "a,b\n");
    }

    #[test]
    fn concurrent_writers_each_leave_a_complete_file_and_no_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.json");
        let texts: Vec<String> = (0..8).map(|i| format!("{i}").repeat(100_000)).collect();
        let (texts, path) = (&texts, &path);
        std::thread::scope(|s| {
            for text in texts {
                s.spawn(move || {
                    for _ in 0..5 {
                        write_atomically(path, text).expect("write");
                        let now = fs::read_to_string(path).expect("read");
                        assert!(texts.contains(&now), "a torn file was visible");
                    }
                });
            }
        });
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
