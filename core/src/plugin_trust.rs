//! Which plugin libraries the user trusts. A plugin is native code that runs with the user's full rights the moment
//! it is loaded (its constructors run inside `dlopen`), so a plugin named only *inside an experiment file* — a file
//! that may come from someone else — is loaded only when the user also named it on the command line (`--plugin`) or
//! listed it in the trust file.
//!
//! The trust file has the layout `sha256sum` prints: one `<sha256 hex>  <absolute path>` per line; `#` starts a
//! comment. An entry trusts exactly those bytes at that path: a rebuilt or replaced library is untrusted until
//! trusted again (`peftspace trust PATH`).

use std::path::{Path, PathBuf};

use crate::store::{sha256_file, write_atomically};
use crate::{Error, Result};

/// Environment variable naming the trust file (default: `$XDG_CONFIG_HOME/peftspace/trusted-plugins`, else
/// `~/.config/peftspace/trusted-plugins`).
pub const TRUST_FILE_ENV: &str = "PEFTSPACE_TRUSTED_PLUGINS";

/// One trusted library: the hash of its bytes and its canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustEntry {
    pub sha256: String,
    pub path: PathBuf,
}

/// What the trust file says about one library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// No entry for this path.
    Unknown,
    /// An entry for this path, but the file's bytes changed since it was trusted.
    Changed {
        trusted: String,
        found: String,
    },
}

/// The trust file's entries, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustList {
    pub file: PathBuf,
    pub entries: Vec<TrustEntry>,
}

/// The trust file's location: [`TRUST_FILE_ENV`], else the user's configuration folder; `None` when neither
/// `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn default_trust_file() -> Option<PathBuf> {
    let non_empty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(file) = non_empty(TRUST_FILE_ENV) {
        return Some(file);
    }
    let config =
        non_empty("XDG_CONFIG_HOME").or_else(|| non_empty("HOME").map(|h| h.join(".config")))?;
    Some(config.join("peftspace").join("trusted-plugins"))
}

fn canonical(path: &Path) -> Result<PathBuf> {
    path.canonicalize().map_err(|e| Error::Plugin {
        path: path.to_path_buf(),
        message: format!("cannot read the plugin library: {e}"),
    })
}

impl TrustList {
    /// Reads a trust file; a file that does not exist is an empty list. A malformed line is an error naming the
    /// file and line.
    pub fn load(file: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(file, e)),
        };
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |why: &str| {
                Error::Data {
                path: file.to_path_buf(),
                line: index + 1,
                message: format!(
                    "{why}; each line is `<sha256>  <absolute path>` (as `sha256sum` prints it; `peftspace trust PATH` \
                     writes it)"
                ),
            }
            };
            let (hash, path) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| malformed("no path after the hash"))?;
            // `sha256sum` marks binary mode with `*` before the name.
            let path = path.trim_start().trim_start_matches('*');
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed(
                    "the first field is not a SHA-256 (64 hex digits)",
                ));
            }
            if !Path::new(path).is_absolute() {
                return Err(malformed("the path is not absolute"));
            }
            entries.push(TrustEntry {
                sha256: hash.to_ascii_lowercase(),
                path: PathBuf::from(path),
            });
        }
        Ok(TrustList {
            file: file.to_path_buf(),
            entries,
        })
    }

    /// What the list says about the library at `plugin` (compared by canonical path, then by hash).
    pub fn verdict(&self, plugin: &Path) -> Result<Verdict> {
        let path = canonical(plugin)?;
        let Some(entry) = self.entries.iter().rev().find(|e| e.path == path) else {
            return Ok(Verdict::Unknown);
        };
        let found = sha256_file(&path)?;
        Ok(if found == entry.sha256 {
            Verdict::Trusted
        } else {
            Verdict::Changed {
                trusted: entry.sha256.clone(),
                found,
            }
        })
    }

    /// Trusts the library at `plugin` as it is now (replacing an older entry for the same path).
    pub fn add(&mut self, plugin: &Path) -> Result<TrustEntry> {
        let path = canonical(plugin)?;
        if !path.is_file() {
            return Err(Error::Plugin {
                path,
                message: "not a file; give the path of the plugin's shared library".into(),
            });
        }
        let entry = TrustEntry {
            sha256: sha256_file(&path)?,
            path,
        };
        self.entries.retain(|e| e.path != entry.path);
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// Writes the list (atomically; the folder is created when missing).
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut text = String::from(
            "# Plugin libraries peftspace may load when an experiment file names them.\n",
        );
        for e in &self.entries {
            text.push_str(&format!("{}  {}\n", e.sha256, e.path.display()));
        }
        write_atomically(&self.file, &text)
    }
}

/// The error for a plugin an experiment file names that the user has not trusted: what to do about it.
pub fn untrusted_error(plugin: &Path, verdict: &Verdict, trust_file: Option<&Path>) -> Error {
    let file = trust_file.map_or_else(
        || format!("the trust file (set {TRUST_FILE_ENV})"),
        |f| f.display().to_string(),
    );
    let why = match verdict {
        Verdict::Changed { trusted, found } => format!(
            "the library changed since it was trusted (sha256 {trusted} in {file}, now {found})"
        ),
        _ => format!("it is neither given with --plugin nor listed in {file}"),
    };
    Error::Plugin {
        path: plugin.to_path_buf(),
        message: format!(
            "named by the experiment file but not trusted: {why}. A plugin is native code that runs with your \
             rights; if you trust this library, pass `--plugin {}` or run `peftspace trust {}` (`validate \
             --no-plugins` checks the file without loading it)",
            plugin.display(),
            plugin.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_unknown_and_changed_libraries_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, b"first build").unwrap();
        let file = dir.path().join("config").join("trusted-plugins");
        let mut list = TrustList::load(&file).unwrap();
        assert!(list.entries.is_empty());
        assert_eq!(list.verdict(&lib).unwrap(), Verdict::Unknown);
        list.add(&lib).unwrap();
        list.add(&lib).unwrap();
        list.save().unwrap();
        let list = TrustList::load(&file).unwrap();
        assert_eq!(list.entries.len(), 1, "re-trusting replaces the entry");
        assert_eq!(list.verdict(&lib).unwrap(), Verdict::Trusted);
        std::fs::write(&lib, b"rebuilt").unwrap();
        assert!(matches!(
            list.verdict(&lib).unwrap(),
            Verdict::Changed { .. }
        ));
        let message = untrusted_error(&lib, &list.verdict(&lib).unwrap(), Some(&file)).to_string();
        assert!(
            message.contains("changed since it was trusted") && message.contains("peftspace trust"),
            "{message}"
        );
    }

    #[test]
    fn sha256sum_lines_are_read_and_malformed_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trusted");
        let hash = "ab".repeat(32);
        std::fs::write(&file, format!("# comment\n\n{hash} */opt/p/libx.so\n")).unwrap();
        let list = TrustList::load(&file).unwrap();
        assert_eq!(list.entries[0].path, PathBuf::from("/opt/p/libx.so"));
        std::fs::write(&file, format!("{hash}  relative/libx.so\n")).unwrap();
        let e = TrustList::load(&file).unwrap_err().to_string();
        assert!(e.contains(":1") && e.contains("not absolute"), "{e}");
        std::fs::write(&file, "# ok\nnothex  /opt/libx.so\n").unwrap();
        let e = TrustList::load(&file).unwrap_err().to_string();
        assert!(e.contains(":2") && e.contains("SHA-256"), "{e}");
    }
}
