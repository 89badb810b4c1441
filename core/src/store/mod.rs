//! The result store: one directory per experiment, trials appended one JSON line each.
//!
//! Layout of a results directory:
//! * `trials.jsonl` — one [`TrialRecord`] per line, appended with a single `write` and `fsync`ed as soon as the
//!   trial ends. A process killed mid-write can leave at most one torn last line; opening the store detects it
//!   (no final newline, or not valid JSON) and cuts it off, so the trial is simply run again.
//! * `manifest.json` — the parts of the experiment that trial ids and the plan depend on. Reopening with a
//!   different manifest is refused with the list of fields that differ (see [`ResultStore::check_manifest`]).
//! * `experiment.ron` and `version.txt` — a copy of the experiment file and the code version that produced the
//!   results.
//! * `plan.json` — the trials each stage planned (written by the refinement runner), so `peftspace report` can
//!   rebuild every table from the directory alone.
//! * `run.lock` — the lock a writing run holds (see [`DirLock`]); opening a store for appending takes it
//!   exclusively, so two runs never interleave their trials, and cutting a torn last line can never cut a line
//!   another process is still writing.
//!
//! Every whole-file write goes through [`write_atomically`] (a unique temporary, a rename, a directory `fsync`).

mod files;
mod lock;
mod manifest;
mod provenance;

pub use files::{
    append_line, sync_dir, sync_parent, temp_sibling, write_atomically, write_bytes_atomically,
};
pub use lock::{DirLock, LockKind, LOCK_FILE};
pub(crate) use manifest::pretty;
pub use manifest::ManifestCheck;
pub use provenance::{sha256_file, sha256_hex, CodeProvenance, HistoryEntry, PluginHash};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::trial::{TrialRecord, TrialStatus};
use crate::{Error, Result};

pub const TRIALS_FILE: &str = "trials.jsonl";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const EXPERIMENT_COPY: &str = "experiment.ron";
pub const VERSION_FILE: &str = "version.txt";
pub const PLAN_FILE: &str = "plan.json";

/// Completed trials of one experiment, keyed by trial id, with an append handle.
pub struct ResultStore {
    dir: PathBuf,
    file: Option<File>,
    records: Vec<TrialRecord>,
    by_id: HashMap<String, usize>,
    /// Bytes of a torn last line that were cut off when the store was opened.
    pub repaired_bytes: u64,
    /// Held by a store opened for appending, for as long as it lives.
    _lock: Option<DirLock>,
    /// Whether stored `failed` trials count as not done (`peftspace run --retry-failed`).
    retry_failed: bool,
}

impl ResultStore {
    /// Opens (creating if needed) the store in `dir` for appending and takes the directory's lock exclusively
    /// (refused with [`Error::Locked`] naming the holder while another run has it); cuts off a torn last line.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = DirLock::acquire(dir, LockKind::Exclusive)?;
        let path = dir.join(TRIALS_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        // A new trials.jsonl (and run.lock) must survive a crash as directory entries too.
        sync_dir(dir)?;
        let (records, good_len) = parse_lines(&path, &bytes)?;
        let repaired_bytes = (bytes.len() - good_len) as u64;
        if repaired_bytes > 0 {
            file.set_len(good_len as u64)
                .map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        let mut store = ResultStore {
            dir: dir.to_path_buf(),
            file: Some(file),
            records: Vec::new(),
            by_id: HashMap::new(),
            repaired_bytes,
            _lock: Some(lock),
            retry_failed: false,
        };
        for record in records {
            store.remember(record);
        }
        Ok(store)
    }

    /// Reads the store in `dir` without modifying it (a torn last line is ignored, not cut) and without locking:
    /// lines are appended whole, so a reader sees a prefix of the trials (take a [`LockKind::Shared`] lock to
    /// keep a run out while writing files derived from them).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(TRIALS_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let (records, good_len) = parse_lines(&path, &bytes)?;
        let mut store = ResultStore {
            dir: dir.to_path_buf(),
            file: None,
            records: Vec::new(),
            by_id: HashMap::new(),
            repaired_bytes: (bytes.len() - good_len) as u64,
            _lock: None,
            retry_failed: false,
        };
        for record in records {
            store.remember(record);
        }
        Ok(store)
    }

    fn remember(&mut self, record: TrialRecord) {
        match self.by_id.get(&record.id) {
            None => {
                self.by_id.insert(record.id.clone(), self.records.len());
                self.records.push(record);
            }
            // A failed trial that was run again (`--retry-failed`): the later line wins.
            Some(&i) if is_failed(&self.records[i]) => self.records[i] = record,
            // Otherwise a trial stored twice keeps its first result (only possible in stores written before
            // results directories were locked).
            Some(_) => {}
        }
    }

    /// Makes stored `failed` trials count as not done, so the runner runs them again; their new line replaces
    /// the failed one. Diverged trials are results (the design diverges) and are never retried.
    pub fn set_retry_failed(&mut self, retry: bool) {
        self.retry_failed = retry;
    }

    /// Whether the trial has a stored result the runner should reuse.
    pub fn is_done(&self, id: &str) -> bool {
        self.get(id)
            .is_some_and(|r| !(self.retry_failed && is_failed(r)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&TrialRecord> {
        self.by_id.get(id).map(|&i| &self.records[i])
    }

    pub fn records(&self) -> &[TrialRecord] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends one finished trial: one `write` of the whole line, then `fsync`.
    pub fn append(&mut self, record: TrialRecord) -> Result<()> {
        if self.get(&record.id).is_some_and(|r| !is_failed(r)) {
            return Ok(());
        }
        let path = self.dir.join(TRIALS_FILE);
        let file = self.file.as_mut().ok_or_else(|| {
            Error::msg(format!(
                "{}: the store was opened read-only",
                path.display()
            ))
        })?;
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| Error::msg(format!("cannot serialise trial {}: {e}", record.id)))?;
        line.push(b'\n');
        file.write_all(&line).map_err(|e| Error::io(&path, e))?;
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        self.remember(record);
        Ok(())
    }
}

fn is_failed(record: &TrialRecord) -> bool {
    matches!(record.outcome.status, TrialStatus::Failed { .. })
}

/// Parses complete lines; returns the records and the byte length of the valid prefix. Only the last line may be
/// torn; a bad line followed by good ones means the file was edited or corrupted, which is an error.
fn parse_lines(path: &Path, bytes: &[u8]) -> Result<(Vec<TrialRecord>, usize)> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut line_no = 0;
    while start < bytes.len() {
        line_no += 1;
        let end = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(offset) => start + offset,
            // No newline: the write of this line never finished.
            None => return Ok((records, start)),
        };
        let line = &bytes[start..end];
        if line.iter().all(u8::is_ascii_whitespace) {
            start = end + 1;
            continue;
        }
        match serde_json::from_slice::<TrialRecord>(line) {
            Ok(record) => records.push(record),
            Err(e) if end + 1 >= bytes.len() => {
                tracing::warn!("{}:{line_no}: dropping an unreadable last line ({e})", path.display());
                return Ok((records, start));
            }
            Err(e) => {
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: format!(
                        "not a trial record ({e}); the file was edited or damaged: fix or delete this line \
                         (the trial is then run again)"
                    ),
                })
            }
        }
        start = end + 1;
    }
    Ok((records, bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::TrialOutcome;

    fn record(id: &str, primary: f64) -> TrialRecord {
        TrialRecord {
            id: id.into(),
            design: "d".into(),
            task: "sst2".into(),
            seed: 1,
            outcome: TrialOutcome {
                status: TrialStatus::Ok,
                metrics: [("accuracy".to_string(), primary)].into_iter().collect(),
                primary: Some(primary),
                trainable_params: 10,
                head_params: 2,
                seconds: 1.5,
                reference: None,
                device: None,
            },
        }
    }

    #[test]
    fn appended_records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ResultStore::open(dir.path()).expect("open");
        store.append(record("a", 0.5)).expect("append");
        store.append(record("b", 0.6)).expect("append");
        store.append(record("a", 0.9)).expect("duplicate ignored");
        drop(store);
        let store = ResultStore::open(dir.path()).expect("reopen");
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("a").and_then(|r| r.outcome.primary), Some(0.5));
    }

    #[test]
    fn torn_last_line_is_cut_off_and_appending_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ResultStore::open(dir.path()).expect("open");
        store.append(record("a", 0.5)).expect("append");
        drop(store);
        let path = dir.path().join(TRIALS_FILE);
        let full = fs::read(&path).expect("read");
        let mut torn = full.clone();
        torn.extend_from_slice(&serde_json::to_vec(&record("b", 0.6)).expect("json")[..20]);
        fs::write(&path, &torn).expect("write");
        let mut store = ResultStore::open(dir.path()).expect("reopen");
        assert_eq!(store.len(), 1);
        assert_eq!(store.repaired_bytes, 20);
        assert_eq!(fs::read(&path).expect("read"), full);
        store.append(record("c", 0.7)).expect("append");
        drop(store);
        assert_eq!(ResultStore::read(dir.path()).expect("read").len(), 2);
    }

    #[test]
    fn corrupted_middle_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TRIALS_FILE);
        let good = serde_json::to_string(&record("a", 0.5)).expect("json");
        fs::write(&path, format!("{good}\nnot json\n{good}\n")).expect("write");
        let err = ResultStore::open(dir.path())
            .err()
            .expect("error")
            .to_string();
        assert!(err.contains(":2:"), "{err}");
    }

    #[test]
    fn a_retried_failed_trial_replaces_the_failed_line_and_ok_lines_stay_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ResultStore::open(dir.path()).expect("open");
        let mut failed = record("a", 0.0);
        failed.outcome.status = TrialStatus::Failed {
            message: "out of memory".into(),
        };
        failed.outcome.primary = None;
        store.append(failed).expect("append");
        assert!(store.is_done("a"));
        store.set_retry_failed(true);
        assert!(!store.is_done("a"));
        store.append(record("a", 0.7)).expect("retry result");
        assert!(store.is_done("a"));
        store.append(record("a", 0.1)).expect("ignored");
        drop(store);
        let store = ResultStore::read(dir.path()).expect("read");
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("a").and_then(|r| r.outcome.primary), Some(0.7));
    }
}
