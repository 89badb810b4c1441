//! Just enough of the zip format to unpack the GLUE archives: stored and deflated entries, no zip64, no encryption.
//!
//! Entries are found through the central directory (sizes in local headers may be deferred to data descriptors).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

const END_OF_DIRECTORY: u32 = 0x0605_4b50;
const DIRECTORY_ENTRY: u32 = 0x0201_4b50;
const LOCAL_HEADER: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
        .ok_or_else(|| "truncated archive".to_string())
}

fn u32_at(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(|| "truncated archive".to_string())
}

/// Unpacks every file of the archive under `dest`, refusing names that would leave it.
pub fn extract(bytes: &[u8], dest: &Path) -> Result<(), String> {
    let end = (0..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(bytes, i).ok() == Some(END_OF_DIRECTORY as usize))
        .ok_or("not a zip archive (no end-of-directory record)")?;
    let entries = u16_at(bytes, end + 10)?;
    let mut at = u32_at(bytes, end + 16)?;
    for _ in 0..entries {
        if u32_at(bytes, at)? != DIRECTORY_ENTRY as usize {
            return Err("corrupt central directory".into());
        }
        let method = u16_at(bytes, at + 10)?;
        let compressed = u32_at(bytes, at + 20)?;
        let size = u32_at(bytes, at + 24)?;
        let (name_len, extra_len, comment_len) = (
            u16_at(bytes, at + 28)?,
            u16_at(bytes, at + 30)?,
            u16_at(bytes, at + 32)?,
        );
        let local = u32_at(bytes, at + 42)?;
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or("truncated archive")?;
        let name = String::from_utf8_lossy(name).into_owned();
        at += 46 + name_len + extra_len + comment_len;

        let relative = safe_path(&name)?;
        let target = dest.join(&relative);
        if name.ends_with('/') {
            std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
            continue;
        }
        if u32_at(bytes, local)? != LOCAL_HEADER as usize {
            return Err(format!("{name}: corrupt local header"));
        }
        let start = local + 30 + u16_at(bytes, local + 26)? + u16_at(bytes, local + 28)?;
        let data = bytes
            .get(start..start + compressed)
            .ok_or("truncated archive")?;
        let content = match method {
            0 => data.to_vec(),
            8 => {
                let mut out = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(data)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("{name}: {e}"))?;
                out
            }
            other => return Err(format!("{name}: unsupported compression method {other}")),
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, content).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

fn safe_path(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    if path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "entry `{name}` would be written outside the target folder"
        ))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A hand-assembled archive with one stored entry (`d/a.txt` = "hi\n") and one deflated entry (`b.txt`).
    fn archive() -> Vec<u8> {
        use flate2::write::DeflateEncoder;
        use std::io::Write;
        let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello hello hello\n").expect("deflate");
        let deflated = enc.finish().expect("deflate");
        assemble(&[
            ("d/a.txt", 0, b"hi\n".to_vec(), 3),
            ("b.txt", 8, deflated, 18),
        ])
    }

    /// An archive of uncompressed entries (name, content): what the download tests serve.
    pub(in crate::resolve) fn stored_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let entries: Vec<(&str, u16, Vec<u8>, usize)> = files
            .iter()
            .map(|(name, data)| (*name, 0, data.to_vec(), data.len()))
            .collect();
        assemble(&entries)
    }

    /// Local headers, central directory and end record for entries (name, method, stored bytes, unpacked size).
    fn assemble(files: &[(&str, u16, Vec<u8>, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut directory = Vec::new();
        for (name, method, data, size) in files {
            let offset = out.len() as u32;
            out.extend(LOCAL_HEADER.to_le_bytes());
            out.extend([20, 0, 0, 0]);
            out.extend(method.to_le_bytes());
            out.extend([0u8; 8]); // time, date, crc (not checked)
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((*size as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(data);
            directory.extend(DIRECTORY_ENTRY.to_le_bytes());
            directory.extend([20, 0, 20, 0, 0, 0]);
            directory.extend(method.to_le_bytes());
            directory.extend([0u8; 8]);
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((*size as u32).to_le_bytes());
            directory.extend((name.len() as u16).to_le_bytes());
            directory.extend([0u8; 12]); // extra, comment, disk, attributes
            directory.extend(offset.to_le_bytes());
            directory.extend(name.as_bytes());
        }
        let count = files.len() as u16;
        let dir_offset = out.len() as u32;
        out.extend(&directory);
        out.extend(END_OF_DIRECTORY.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend(count.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend((directory.len() as u32).to_le_bytes());
        out.extend(dir_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    #[test]
    fn unpacks_stored_and_deflated_entries() {
        let tmp = tempfile::tempdir().expect("tmp");
        extract(&archive(), tmp.path()).expect("extracts");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("d/a.txt")).expect("a"),
            "hi\n"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("b.txt")).expect("b"),
            "hello hello hello\n"
        );
    }

    #[test]
    fn refuses_names_leaving_the_folder_and_garbage() {
        assert!(safe_path("../x").is_err());
        assert!(safe_path("/etc/x").is_err());
        assert!(safe_path("SST-2/train.tsv").is_ok());
        assert!(extract(
            b"not a zip at all, certainly not",
            Path::new("/nonexistent")
        )
        .is_err());
    }
}
