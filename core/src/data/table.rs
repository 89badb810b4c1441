//! Reading delimited text files row by row, with the file and line of every row kept for error messages.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A file read into rows of fields; `line` numbers are 1-based lines of the file.
pub(crate) struct Table {
    pub path: PathBuf,
    /// Column names when the file has a header row.
    pub header: Option<Vec<String>>,
    /// Line of the header row (for messages about it).
    pub rows: Vec<Row>,
}

pub(crate) struct Row {
    pub line: usize,
    pub fields: Vec<String>,
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::from_utf8(bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        line: line_of_byte(e.as_bytes(), e.utf8_error().valid_up_to()),
        message: "not valid UTF-8; re-save the file as UTF-8".into(),
    })?;
    // MRPC's files (and files saved by some editors) start with a byte-order mark that is not part of the first name.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

fn line_of_byte(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Reads a tab-separated file without quoting (GLUE's layout: a field never contains a tab or a newline).
/// Every row must have as many fields as the header (or as `columns` when there is no header).
pub(crate) fn read_tsv(path: &Path, header: bool, columns: Option<usize>) -> Result<Table> {
    read_tsv_text(path, &read_text(path)?, header, columns)
}

/// [`read_tsv`] on a file's text already read.
pub(crate) fn read_tsv_text(
    path: &Path,
    text: &str,
    header: bool,
    columns: Option<usize>,
) -> Result<Table> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let header = if header {
        match lines.next() {
            Some((_, l)) => Some(
                l.split('\t')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>(),
            ),
            None => None,
        }
    } else {
        None
    };
    let expected = header.as_ref().map(Vec::len).or(columns);
    let mut rows = Vec::new();
    for (line, l) in lines {
        if l.is_empty() {
            continue;
        }
        let fields: Vec<String> = l.split('\t').map(str::to_string).collect();
        if let Some(n) = expected {
            if fields.len() != n {
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    line,
                    message: format!(
                        "expected {n} tab-separated fields, found {}; every row needs one field per column \
                         (a tab inside a text must be removed)",
                        fields.len()
                    ),
                });
            }
        }
        rows.push(Row { line, fields });
    }
    Ok(Table {
        path: path.to_path_buf(),
        header,
        rows,
    })
}

impl Table {
    /// Index of a header column, with an error listing the columns when it is missing.
    pub fn column(&self, name: &str) -> Result<usize> {
        let header = self.header.as_ref().ok_or_else(|| Error::Data {
            path: self.path.clone(),
            line: 1,
            message: format!("column `{name}` is named but the file has no header row"),
        })?;
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::Data {
                path: self.path.clone(),
                line: 1,
                message: format!(
                    "no column `{name}` in the header; columns: {}",
                    header.join(", ")
                ),
            })
    }

    /// A data error at a row.
    pub fn error(&self, row: &Row, message: impl Into<String>) -> Error {
        Error::Data {
            path: self.path.clone(),
            line: row.line,
            message: message.into(),
        }
    }
}
