//! Tasks in the user's own files, declared in the experiment (`custom: (train: "…", eval: "…", text: "…", …)`).
//!
//! `.tsv` (tabs, no quoting), `.csv` (RFC 4180 quoting) and `.jsonl` (one JSON object per line). Without a header
//! row, columns are named by their 0-based position (`text: "0"`).

use std::path::{Path, PathBuf};

use super::glue::parse_label;
use super::table::{read_text, read_tsv, Row, Table};
use super::{Example, TaskData, TaskKind};
use crate::spec::CustomTaskSpec;
use crate::{Error, Result};

/// Reads a custom task; relative file paths are taken from `spec_dir` (the experiment file's folder).
pub fn load_custom(id: &str, spec: &CustomTaskSpec, spec_dir: &Path) -> Result<TaskData> {
    let kind = if spec.labels.is_empty() {
        TaskKind::Regression
    } else {
        TaskKind::Classification {
            labels: spec.labels.clone(),
        }
    };
    let evaluator = spec.metric.clone().unwrap_or_else(|| match kind {
        TaskKind::Regression => "pearson_spearman".to_string(),
        TaskKind::Classification { .. } => "accuracy".to_string(),
    });
    let train_path = spec_dir.join(&spec.train);
    let eval_path = spec_dir.join(&spec.eval);
    let train = read_custom(spec, &train_path, &kind)?;
    let eval = read_custom(spec, &eval_path, &kind)?;
    Ok(TaskData {
        id: id.to_string(),
        kind,
        evaluator,
        train,
        eval,
        sources: vec![train_path, eval_path],
    })
}

fn read_custom(spec: &CustomTaskSpec, path: &Path, kind: &TaskKind) -> Result<Vec<Example>> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let table = match extension.as_deref() {
        Some("tsv") | Some("txt") => read_tsv(path, spec.header, None)?,
        Some("csv") => read_csv(path, spec.header)?,
        Some("jsonl") | Some("json") => read_jsonl(path, spec)?,
        _ => {
            return Err(Error::msg(format!(
                "{}: unknown file type; custom task files must end in .tsv, .csv or .jsonl",
                path.display()
            )))
        }
    };
    let text = column(&table, &spec.text)?;
    let pair = spec
        .text_pair
        .as_deref()
        .map(|c| column(&table, c))
        .transpose()?;
    let label = column(&table, &spec.label)?;
    table
        .rows
        .iter()
        .map(|row| {
            Ok(Example {
                text: field(&table, row, text)?.to_string(),
                pair: pair
                    .map(|p| field(&table, row, p).map(str::to_string))
                    .transpose()?,
                label: parse_label(&table, row, field(&table, row, label)?, kind)?,
            })
        })
        .collect()
}

/// A column by header name, or by 0-based position when the file has no header.
fn column(table: &Table, name: &str) -> Result<usize> {
    match &table.header {
        Some(_) => table.column(name),
        None => name.parse::<usize>().map_err(|_| Error::Data {
            path: table.path.clone(),
            line: 1,
            message: format!(
                "the task says `header: false`, so columns are named by position (\"0\", \"1\", …), not `{name}`"
            ),
        }),
    }
}

fn field<'a>(table: &Table, row: &'a Row, index: usize) -> Result<&'a str> {
    row.fields.get(index).map(String::as_str).ok_or_else(|| {
        table.error(
            row,
            format!(
                "row has {} fields, needs field {}",
                row.fields.len(),
                index + 1
            ),
        )
    })
}

fn read_csv(path: &Path, header: bool) -> Result<Table> {
    let text = read_text(path)?;
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

/// JSON lines become a table whose columns are the keys the task names (text, pair, label).
fn read_jsonl(path: &Path, spec: &CustomTaskSpec) -> Result<Table> {
    let text = read_text(path)?;
    let mut keys = vec![spec.text.clone()];
    keys.extend(spec.text_pair.clone());
    keys.push(spec.label.clone());
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| Error::Data {
            path: PathBuf::from(path),
            line: line_no,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| error(format!("not a JSON object: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| error("each line must be one JSON object".into()))?;
        let fields = keys
            .iter()
            .map(|k| match object.get(k) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Ok(v.to_string())
                }
                Some(other) => Err(error(format!(
                    "key `{k}` holds {other}, expected a string or a number"
                ))),
                None => Err(error(format!("key `{k}` is missing"))),
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(Row {
            line: line_no,
            fields,
        });
    }
    Ok(Table {
        path: path.to_path_buf(),
        header: Some(keys),
        rows,
    })
}
