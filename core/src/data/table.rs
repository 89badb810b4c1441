//! Reading delimited text files row by row, with the file and line of every row kept for error messages.
//!
//! Shared by the GLUE, custom and generation task readers: file types by extension, TSV and CSV readers, and the
//! errors for a file without examples.

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

/// The error of line `line` of the file at `path`.
pub(crate) fn line_error(path: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The objects of a JSON-lines file with their 1-based line numbers, blank lines skipped; a line that is not one
/// JSON object is an error naming the file and line.
pub(crate) fn json_objects(
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, serde_json::Map<String, serde_json::Value>)>> {
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| line_error(path, line_no, format!("not a JSON object: {e}")))?;
        match value {
            serde_json::Value::Object(object) => objects.push((line_no, object)),
            _ => {
                return Err(line_error(
                    path,
                    line_no,
                    "each line must be one JSON object",
                ))
            }
        }
    }
    Ok(objects)
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

/// Reads a comma-separated file with RFC 4180 quoting; with `header`, the first record names the columns and every
/// row must have as many fields.
pub(crate) fn read_csv(path: &Path, text: &str, header: bool) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::Data {
            path: path.to_path_buf(),
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            message: format!("malformed CSV: {e}"),
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        rows.push(Row {
            line,
            fields: record.iter().map(str::to_string).collect(),
        });
    }
    let mut table = Table {
        path: path.to_path_buf(),
        header: None,
        rows,
    };
    if header && !table.rows.is_empty() {
        let first = table.rows.remove(0);
        table.header = Some(first.fields.iter().map(|s| s.trim().to_string()).collect());
    }
    if let Some(expected) = table.header.as_ref().map(Vec::len) {
        if let Some(bad) = table.rows.iter().find(|r| r.fields.len() != expected) {
            return Err(table.error(
                bad,
                format!(
                    "expected {expected} comma-separated fields, found {}",
                    bad.fields.len()
                ),
            ));
        }
    }
    Ok(table)
}

/// The kinds of task files a user may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileType {
    /// Tab-separated, no quoting (`.tsv`, `.txt`).
    Tsv,
    /// Comma-separated, RFC 4180 quoting (`.csv`).
    Csv,
    /// One JSON object per line (`.jsonl`, `.json`).
    Jsonl,
}

impl FileType {
    /// The type of `path` from its extension; `what` names the files in the error (`custom task files`).
    pub fn of(path: &Path, what: &str) -> Result<FileType> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("tsv") | Some("txt") => Ok(FileType::Tsv),
            Some("csv") => Ok(FileType::Csv),
            Some("jsonl") | Some("json") => Ok(FileType::Jsonl),
            _ => Err(Error::msg(format!(
                "{}: unknown file type; {what} must end in .tsv, .csv or .jsonl",
                path.display()
            ))),
        }
    }

    /// What a file of this type holds, for messages about an empty one.
    pub fn needs(self, header: bool) -> &'static str {
        match (self, header) {
            (FileType::Jsonl, _) => "one JSON object per example",
            (_, true) => "a header row naming the columns, then one example per line",
            (_, false) => "one example per line",
        }
    }
}

/// Refuses a file whose text is empty or blank; `needs` says what it should hold ([`FileType::needs`]).
pub(crate) fn check_not_empty(path: &Path, text: &str, needs: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Data {
            path: path.to_path_buf(),
            line: 1,
            message: format!("the file is empty; it needs {needs}"),
        });
    }
    Ok(())
}

/// Refuses a table without rows (a header row alone).
pub(crate) fn check_has_rows(table: &Table, needs: &str) -> Result<()> {
    if table.rows.is_empty() {
        return Err(Error::Data {
            path: table.path.clone(),
            line: 2,
            message: format!(
                "no examples after the header row; the file needs {needs} (or `header: false` if line 1 is an example)"
            ),
        });
    }
    Ok(())
}
