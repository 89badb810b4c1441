//! What code produced a results directory: the peftspace version and a hash of every plugin library.
//!
//! Recorded in `manifest.json` under `code`, with a `history` of every run that changed it. Trial ids do not hold
//! it (results stored before it existed keep their ids); instead a run with different code is refused unless the
//! person asks for it (`peftspace run --allow-code-change`), and then the change is written into the history.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Result;

/// The code behind a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeProvenance {
    /// `peftspace X.Y.Z`, plus `(git DESCRIBE)` when the binary was built from a checkout.
    pub version: String,
    /// Every dynamic plugin library loaded, sorted by file name.
    pub plugins: Vec<PluginHash>,
}

/// One plugin library: its file name and the SHA-256 of its bytes. The folder is left out, so moving a plugin
/// does not count as a change of code; rebuilding it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PluginHash {
    pub file: String,
    pub sha256: String,
}

/// One entry of the manifest's `history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `created`, or `code changed (--allow-code-change)`.
    pub event: String,
    pub code: CodeProvenance,
}

impl CodeProvenance {
    /// Hashes each plugin library.
    pub fn new(version: impl Into<String>, plugins: &[impl AsRef<Path>]) -> Result<Self> {
        let mut hashes = plugins
            .iter()
            .map(|p| {
                let p = p.as_ref();
                Ok(PluginHash {
                    file: p.file_name().map_or_else(
                        || p.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                    sha256: sha256_file(p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        hashes.sort();
        Ok(CodeProvenance {
            version: version.into(),
            plugins: hashes,
        })
    }
}

/// SHA-256 of a file, as lowercase hex, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    crate::trial::hash_file(&mut hasher, path)?;
    Ok(crate::trial::hex_digest(hasher))
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
