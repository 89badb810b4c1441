//! Tasks in the user's own files, declared in the experiment (`custom: (train: "…", eval: "…", text: "…", …)`).
//!
//! `.tsv` (tabs, no quoting), `.csv` (RFC 4180 quoting) and `.jsonl` (one JSON object per line). Without a header
//! row, columns are named by their 0-based position (`text: "0"`).

use std::path::Path;

use super::glue::parse_label;
use super::table::{
    check_has_rows, check_not_empty, json_objects, line_error, read_csv, read_text, read_tsv_text,
    FileType, Row, Table,
};
use super::{Example, TaskData, TaskKind};
use crate::spec::{CustomKind, CustomTaskSpec};
use crate::{Error, Result};

/// Most distinct label values quoted in a message.
const QUOTED_VALUES: usize = 12;

/// Why a custom task's `labels` and `kind` do not say what it predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindProblem {
    /// No `labels` and no `kind`: the classes are unknown.
    MissingLabels,
    /// `labels` has one value.
    OneLabel,
    /// A value is listed twice.
    DuplicateLabel(String),
    /// `kind: Regression` with classes listed.
    RegressionWithLabels,
    /// `kind: Classification` with `labels: []`.
    ClassificationWithoutLabels,
}

/// What a custom task predicts, from its `labels` and `kind` alone (no file is read).
pub fn custom_kind(spec: &CustomTaskSpec) -> std::result::Result<TaskKind, KindProblem> {
    match (&spec.labels, spec.kind) {
        (None, None | Some(CustomKind::Classification)) => Err(KindProblem::MissingLabels),
        (None, Some(CustomKind::Regression)) => Ok(TaskKind::Regression),
        (Some(l), Some(CustomKind::Regression)) if !l.is_empty() => {
            Err(KindProblem::RegressionWithLabels)
        }
        (Some(l), Some(CustomKind::Classification)) if l.is_empty() => {
            Err(KindProblem::ClassificationWithoutLabels)
        }
        (Some(l), _) if l.is_empty() => Ok(TaskKind::Regression),
        (Some(l), _) if l.len() == 1 => Err(KindProblem::OneLabel),
        (Some(l), _) => {
            for (i, label) in l.iter().enumerate() {
                if l[..i].contains(label) {
                    return Err(KindProblem::DuplicateLabel(label.clone()));
                }
            }
            Ok(TaskKind::Classification { labels: l.clone() })
        }
    }
}

/// A person's explanation of a [`KindProblem`], with the fix; `found` are values of the label column of the
/// training file (quoted in the suggestion when known).
pub fn kind_problem_message(
    spec: &CustomTaskSpec,
    problem: &KindProblem,
    found: &[String],
) -> String {
    let quoted = |values: &[String]| {
        values
            .iter()
            .take(QUOTED_VALUES)
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match problem {
        KindProblem::MissingLabels => {
            let example = if found.is_empty() {
                "[\"neg\", \"pos\"]".to_string()
            } else {
                format!("[{}]", quoted(found))
            };
            let seen = if found.is_empty() {
                String::new()
            } else {
                format!(
                    " (the values of column `{}` in {})",
                    spec.label,
                    spec.train.display()
                )
            };
            let numeric = found.len() > QUOTED_VALUES
                && found.iter().all(|v| v.trim().parse::<f64>().is_ok());
            if numeric {
                format!(
                    "`labels` is missing and column `{}` holds many numbers: for a regression task write \
                     `kind: Regression` (or `labels: []`); for classification list the classes in order, \
                     e.g. `labels: {example}`",
                    spec.label
                )
            } else {
                format!(
                    "`labels` is missing: a classification task lists its classes in order, e.g. \
                     `labels: {example}`{seen}; for a regression task write `labels: []` or `kind: Regression`"
                )
            }
        }
        KindProblem::OneLabel => {
            "a classification task needs at least two labels (`labels: []` makes it a regression)".into()
        }
        KindProblem::DuplicateLabel(l) => format!("label `{l}` is listed twice"),
        KindProblem::RegressionWithLabels => {
            "`kind: Regression` but `labels` lists classes; remove one of them".into()
        }
        KindProblem::ClassificationWithoutLabels => {
            "`kind: Classification` needs `labels`, the classes in order (e.g. `labels: [\"neg\", \"pos\"]`)"
                .into()
        }
    }
}

/// Distinct values of the label column of the task's training file, in order of first appearance (at most a few
/// more than a message quotes).
pub fn label_values(spec: &CustomTaskSpec, spec_dir: &Path) -> Result<Vec<String>> {
    let table = read_table(spec, &spec_dir.join(&spec.train))?;
    let label = column(&table, &spec.label, "label", spec)?;
    let mut values: Vec<String> = Vec::new();
    for row in &table.rows {
        let value = field(&table, row, label)?.trim();
        if !values.iter().any(|v| v == value) {
            values.push(value.to_string());
            if values.len() > QUOTED_VALUES {
                break;
            }
        }
    }
    Ok(values)
}

/// Reads a custom task; relative file paths are taken from `spec_dir` (the experiment file's folder).
pub fn load_custom(id: &str, spec: &CustomTaskSpec, spec_dir: &Path) -> Result<TaskData> {
    let kind = match custom_kind(spec) {
        Ok(kind) => kind,
        Err(problem) => {
            // The suggestion quotes the file's values when the file can be read; its own error comes later.
            let found = label_values(spec, spec_dir).unwrap_or_default();
            return Err(Error::msg(format!(
                "task `{id}`: {}",
                kind_problem_message(spec, &problem, &found)
            )));
        }
    };
    let evaluator = spec.metric.clone().unwrap_or_else(|| match kind {
        TaskKind::Regression => "pearson_spearman".to_string(),
        TaskKind::Classification { .. } => "accuracy".to_string(),
        TaskKind::Generation { .. } => "rouge".to_string(),
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

/// A custom file read into a table: its type from the extension; an empty file, or a header without examples,
/// is an error.
fn read_table(spec: &CustomTaskSpec, path: &Path) -> Result<Table> {
    let file_type = FileType::of(path, "custom task files")?;
    let text = read_text(path)?;
    let needs = file_type.needs(spec.header);
    check_not_empty(path, &text, needs)?;
    let table = match file_type {
        FileType::Tsv => read_tsv_text(path, &text, spec.header, None)?,
        FileType::Csv => read_csv(path, &text, spec.header)?,
        FileType::Jsonl => read_jsonl(path, &text, spec)?,
    };
    check_has_rows(&table, needs)?;
    Ok(table)
}

fn read_custom(spec: &CustomTaskSpec, path: &Path, kind: &TaskKind) -> Result<Vec<Example>> {
    let table = read_table(spec, path)?;
    let text = column(&table, &spec.text, "text", spec)?;
    let pair = spec
        .text_pair
        .as_deref()
        .map(|c| column(&table, c, "text_pair", spec))
        .transpose()?;
    let label = column(&table, &spec.label, "label", spec)?;
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
                target: None,
            })
        })
        .collect()
}

/// A column by header name, or by 0-based position when the file has no header. `role` is the task field that
/// names it (`text`, `label`, …).
fn column(table: &Table, name: &str, role: &str, spec: &CustomTaskSpec) -> Result<usize> {
    let Some(header) = &table.header else {
        return name.parse::<usize>().map_err(|_| Error::Data {
            path: table.path.clone(),
            line: 1,
            message: format!(
                "the task says `header: false`, so columns are named by position (\"0\", \"1\", …), not `{name}`"
            ),
        });
    };
    if let Some(i) = header.iter().position(|h| h == name) {
        return Ok(i);
    }
    let message = if looks_like_data(header, spec) {
        format!(
            "no column `{name}` (the task's `{role}`): line 1 looks like an example, not a header ({}); add a \
             header row naming the columns, or set `header: false` and name columns by position (\"0\", \"1\", …)",
            header
                .iter()
                .map(|h| format!("`{}`", shorten(h)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "no column `{name}` (the task's `{role}`) in the header; columns: {}",
            header.join(", ")
        )
    };
    Err(Error::Data {
        path: table.path.clone(),
        line: 1,
        message,
    })
}

/// Whether a header row is more likely an example: a name that is one of the task's labels, a number, or a
/// sentence (column names are short words).
fn looks_like_data(header: &[String], spec: &CustomTaskSpec) -> bool {
    let labels = spec.labels.as_deref().unwrap_or(&[]);
    header.iter().any(|h| {
        let h = h.trim();
        labels.iter().any(|l| l == h)
            || h.parse::<f64>().is_ok()
            || h.split_whitespace().count() >= 3
    })
}

fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(30).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
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

/// JSON lines become a table whose columns are the keys the task names (text, pair, label).
fn read_jsonl(path: &Path, text: &str, spec: &CustomTaskSpec) -> Result<Table> {
    let mut keys = vec![spec.text.clone()];
    keys.extend(spec.text_pair.clone());
    keys.push(spec.label.clone());
    let mut rows = Vec::new();
    for (line_no, object) in json_objects(path, text)? {
        let error = |message: String| line_error(path, line_no, message);
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
