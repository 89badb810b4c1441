//! The GLUE benchmark's files as GLUE ships them: one folder per task with `train.tsv` and `dev.tsv`.
//!
//! Columns are found by header name, so MNLI's train (12 columns) and dev (16 columns) files read alike; CoLA has no
//! header and is read by position. Test files carry no labels and are never read.

use std::path::Path;

use super::table::{read_tsv, Row, Table};
use super::{Example, TaskData, TaskKind};
use crate::{Error, Result};

/// Where a field is: a header name, or a 0-based position in files without a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Name(&'static str),
    Index(usize),
}

/// How one GLUE task is laid out and scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlueTask {
    /// Task id used in experiment files.
    pub id: &'static str,
    /// Folder name inside the GLUE data folder.
    pub folder: &'static str,
    pub train_file: &'static str,
    pub eval_file: &'static str,
    /// `Some(n)`: the files have no header and exactly `n` columns.
    pub headerless_columns: Option<usize>,
    pub text: Column,
    pub pair: Option<Column>,
    pub label: Column,
    /// Label strings in class order; empty for regression (STS-B).
    pub labels: &'static [&'static str],
    /// Evaluator (registered by the task's name) that gives GLUE's primary score for the task.
    pub evaluator: &'static str,
}

const BINARY: &[&str] = &["0", "1"];
const ENTAILMENT: &[&str] = &["entailment", "not_entailment"];

/// Every GLUE task (MNLI twice: matched and mismatched evaluation sets).
pub const GLUE_TASKS: &[GlueTask] = &[
    GlueTask {
        id: "cola",
        folder: "CoLA",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: Some(4),
        text: Column::Index(3),
        pair: None,
        label: Column::Index(1),
        labels: BINARY,
        evaluator: "cola",
    },
    GlueTask {
        id: "sst2",
        folder: "SST-2",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("sentence"),
        pair: None,
        label: Column::Name("label"),
        labels: BINARY,
        evaluator: "sst2",
    },
    GlueTask {
        id: "mrpc",
        folder: "MRPC",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("#1 String"),
        pair: Some(Column::Name("#2 String")),
        label: Column::Name("Quality"),
        labels: BINARY,
        evaluator: "mrpc",
    },
    GlueTask {
        id: "qqp",
        folder: "QQP",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("question1"),
        pair: Some(Column::Name("question2")),
        label: Column::Name("is_duplicate"),
        labels: BINARY,
        evaluator: "qqp",
    },
    GlueTask {
        id: "stsb",
        folder: "STS-B",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("sentence1"),
        pair: Some(Column::Name("sentence2")),
        label: Column::Name("score"),
        labels: &[],
        evaluator: "stsb",
    },
    GlueTask {
        id: "mnli",
        folder: "MNLI",
        train_file: "train.tsv",
        eval_file: "dev_matched.tsv",
        headerless_columns: None,
        text: Column::Name("sentence1"),
        pair: Some(Column::Name("sentence2")),
        label: Column::Name("gold_label"),
        labels: &["contradiction", "entailment", "neutral"],
        evaluator: "mnli",
    },
    GlueTask {
        id: "mnli_mm",
        folder: "MNLI",
        train_file: "train.tsv",
        eval_file: "dev_mismatched.tsv",
        headerless_columns: None,
        text: Column::Name("sentence1"),
        pair: Some(Column::Name("sentence2")),
        label: Column::Name("gold_label"),
        labels: &["contradiction", "entailment", "neutral"],
        evaluator: "mnli",
    },
    GlueTask {
        id: "qnli",
        folder: "QNLI",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("question"),
        pair: Some(Column::Name("sentence")),
        label: Column::Name("label"),
        labels: ENTAILMENT,
        evaluator: "qnli",
    },
    GlueTask {
        id: "rte",
        folder: "RTE",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("sentence1"),
        pair: Some(Column::Name("sentence2")),
        label: Column::Name("label"),
        labels: ENTAILMENT,
        evaluator: "rte",
    },
    GlueTask {
        id: "wnli",
        folder: "WNLI",
        train_file: "train.tsv",
        eval_file: "dev.tsv",
        headerless_columns: None,
        text: Column::Name("sentence1"),
        pair: Some(Column::Name("sentence2")),
        label: Column::Name("label"),
        labels: BINARY,
        evaluator: "wnli",
    },
];

/// The GLUE task with this id (case-insensitive; `sst-2`, `sts-b` and `mnli-mm` are accepted too).
pub fn glue_task(id: &str) -> Result<&'static GlueTask> {
    let key: String = id.to_ascii_lowercase().replace('-', "_");
    let key = match key.as_str() {
        "sst_2" => "sst2",
        "sts_b" => "stsb",
        "mnli_m" | "mnli_matched" => "mnli",
        "mnli_mismatched" => "mnli_mm",
        other => other,
    };
    GLUE_TASKS
        .iter()
        .find(|t| t.id == key)
        .ok_or_else(|| Error::UnknownName {
            kind: "GLUE task (declare a `custom` task for other data)",
            name: id.to_string(),
            known: GLUE_TASKS.iter().map(|t| t.id.to_string()).collect(),
        })
}

/// Reads a GLUE task's training and evaluation files from `data_dir/<folder>/`.
pub fn load_glue(task: &GlueTask, data_dir: &Path) -> Result<TaskData> {
    let folder = data_dir.join(task.folder);
    let train_path = folder.join(task.train_file);
    let eval_path = folder.join(task.eval_file);
    for path in [&train_path, &eval_path] {
        if !path.is_file() {
            return Err(Error::msg(format!(
                "GLUE task `{}`: {} not found; the data folder must hold GLUE's `{}` folder as GLUE ships it \
                 (set --data-dir, PEFTSPACE_DATA or the experiment's `data_dir`)",
                task.id,
                path.display(),
                task.folder
            )));
        }
    }
    let kind = if task.labels.is_empty() {
        TaskKind::Regression
    } else {
        TaskKind::Classification {
            labels: task.labels.iter().map(|s| s.to_string()).collect(),
        }
    };
    let train = read_examples(task, &train_path, &kind)?;
    let eval = read_examples(task, &eval_path, &kind)?;
    Ok(TaskData {
        id: task.id.to_string(),
        kind,
        evaluator: task.evaluator.to_string(),
        train,
        eval,
        sources: vec![train_path, eval_path],
    })
}

fn read_examples(task: &GlueTask, path: &Path, kind: &TaskKind) -> Result<Vec<Example>> {
    let table = read_tsv(
        path,
        task.headerless_columns.is_none(),
        task.headerless_columns,
    )?;
    let text = resolve(&table, task.text)?;
    let pair = task.pair.map(|c| resolve(&table, c)).transpose()?;
    let label = resolve(&table, task.label)?;
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

fn resolve(table: &Table, column: Column) -> Result<usize> {
    match column {
        Column::Index(i) => Ok(i),
        Column::Name(name) => table.column(name),
    }
}

fn field<'a>(table: &Table, row: &'a Row, index: usize) -> Result<&'a str> {
    row.fields.get(index).map(String::as_str).ok_or_else(|| {
        table.error(
            row,
            format!(
                "row has no field {} (it has {})",
                index + 1,
                row.fields.len()
            ),
        )
    })
}

/// A label string → class index or regression target, with an error naming the allowed values.
pub(crate) fn parse_label(table: &Table, row: &Row, raw: &str, kind: &TaskKind) -> Result<f32> {
    let value = raw.trim();
    match kind {
        TaskKind::Classification { labels } => labels
            .iter()
            .position(|l| l == value)
            .map(|i| i as f32)
            .ok_or_else(|| {
                table.error(
                    row,
                    format!(
                        "label `{value}` is not one of: {}; fix the row or the task's label set",
                        labels.join(", ")
                    ),
                )
            }),
        TaskKind::Regression => match value.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(table.error(
                row,
                format!("label `{value}` is not a finite number (regression task)"),
            )),
        },
        TaskKind::Generation { .. } => Err(table.error(
            row,
            "a generation task has target texts, not labels".to_string(),
        )),
    }
}
