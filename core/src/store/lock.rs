//! One writer per results directory: an advisory `flock` on `DIR/run.lock`.
//!
//! `peftspace run` holds the lock exclusively for as long as it may write the directory; `peftspace report` holds
//! it shared while it rewrites the tables. The lock belongs to the open file, so the kernel releases it when the
//! holder exits for any reason (kill -9 included): there is never a stale lock to delete by hand. The file's text
//! (pid, host, start time) only explains who holds it; it is rewritten by every new holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file inside a results directory.
pub const LOCK_FILE: &str = "run.lock";

/// Exclusive (one writer) or shared (readers that write derived files, such as `report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Exclusive,
    Shared,
}

/// A held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting. When another process holds it, the error
    /// ([`Error::Locked`]) says who (pid and host, as that process wrote them).
    pub fn acquire(dir: &Path, kind: LockKind) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !try_lock(&file, kind).map_err(|e| Error::io(&path, e))? {
            let mut holder = String::new();
            // The holder's note is informative only; an unreadable one still refuses the lock.
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        if kind == LockKind::Exclusive {
            // Only the exclusive holder rewrites the note; shared holders leave the last writer's note alone.
            let note = format!(
                "peftspace run, pid {} on host {}, since {}\n",
                std::process::id(),
                hostname(),
                utc_timestamp(std::time::SystemTime::now())
            );
            let write = |file: &mut File| -> std::io::Result<()> {
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                file.write_all(note.as_bytes())?;
                file.sync_data()
            };
            write(&mut file).map_err(|e| Error::io(&path, e))?;
        }
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `Ok(false)` when another open file holds a conflicting lock.
#[cfg(unix)]
fn try_lock(file: &File, kind: LockKind) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    let operation = match kind {
        LockKind::Exclusive => libc::LOCK_EX,
        LockKind::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on a descriptor this function borrows for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// Without `flock` (non-Unix targets) results directories are not locked; the documentation says so.
#[cfg(not(unix))]
fn try_lock(_file: &File, _kind: LockKind) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates when the name fits.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".into())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path(), LockKind::Exclusive).expect("first");
        let err = DirLock::acquire(dir.path(), LockKind::Exclusive)
            .expect_err("second")
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(DirLock::acquire(dir.path(), LockKind::Shared).is_err());
        drop(first);
        let shared = DirLock::acquire(dir.path(), LockKind::Shared).expect("shared");
        let _also = DirLock::acquire(dir.path(), LockKind::Shared).expect("two readers");
        assert!(DirLock::acquire(dir.path(), LockKind::Exclusive).is_err());
        drop(shared);
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a lock note a person reads (days to a civil date by the proleptic Gregorian
/// calendar: eras of 400 years, years starting in March so the leap day comes last).
pub fn utc_timestamp(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod timestamp_tests {
    use super::utc_timestamp;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lock_notes_show_a_calendar_time() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        // `date -u -d @951782400`: the leap day of 2000, and the day after.
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(951_868_800 + 3_661), "2000-03-01 01:01:01 UTC");
        assert_eq!(at(1_796_601_600), "2026-12-07 00:00:00 UTC");
    }
}
