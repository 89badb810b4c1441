//! Text-to-text tasks in the user's files, declared in the experiment (`generation: (train: "…", eval: "…")`).
//!
//! `.jsonl` (one JSON object per line), `.tsv` (tabs, no quoting) and `.csv` (RFC 4180 quoting). Besides the
//! columns the task names (`source`, `target` by default), the layouts of two Hugging Face datasets are recognised
//! by name, so their exported files read as they are: XSum's `{"document": …, "summary": …}` (when the task keeps
//! the default names and the file has no `source`/`target`), and WMT's `{"translation": {"en": …, "ro": …}}`
//! (JSONL only), where `source` and `target` name the two languages.

use std::path::Path;

use serde_json::{Map, Value};

use super::table::{
    check_has_rows, check_not_empty, json_objects, line_error, read_csv, read_text, read_tsv_text,
    FileType, Row, Table,
};
use super::{Example, TaskData, TaskKind};
use crate::spec::GenerationTaskSpec;
use crate::{Error, Result};

/// XSum's column names (source, reference summary), recognised when the defaults are absent from a file.
const XSUM: (&str, &str) = ("document", "summary");

/// WMT's key holding one object with a text per language.
const TRANSLATION: &str = "translation";

/// Reads a generation task; relative file paths are taken from `spec_dir` (the experiment file's folder).
pub fn load_generation(id: &str, spec: &GenerationTaskSpec, spec_dir: &Path) -> Result<TaskData> {
    let train_path = spec_dir.join(&spec.train);
    let eval_path = spec_dir.join(&spec.eval);
    let train = read_examples(spec, &train_path)?;
    let eval = read_examples(spec, &eval_path)?;
    Ok(TaskData {
        id: id.to_string(),
        kind: TaskKind::Generation {
            max_source_tokens: spec.max_source_tokens,
            max_target_tokens: spec.max_target_tokens,
            decoding: spec.decoding,
        },
        evaluator: spec.metric_name().to_string(),
        train,
        eval,
        sources: vec![train_path, eval_path],
    })
}

/// The examples of one file: the source (after the task's prefix) as the text, the reference as the target.
fn read_examples(spec: &GenerationTaskSpec, path: &Path) -> Result<Vec<Example>> {
    let table = read_table(spec, path)?;
    let prefix = spec.source_prefix.as_deref().unwrap_or("");
    table
        .rows
        .iter()
        .map(|row| {
            let [source, target] = [0, 1].map(|i| row.fields.get(i).map(String::as_str));
            let (Some(source), Some(target)) = (source, target) else {
                return Err(table.error(row, "the row has no source or no target field"));
            };
            if source.trim().is_empty() {
                return Err(table.error(
                    row,
                    "empty source: every example needs a text to start from; fill it in or remove the row",
                ));
            }
            if target.trim().is_empty() {
                return Err(table.error(
                    row,
                    "empty target: every example needs a reference output (the text the model should \
                     generate); fill it in or remove the row",
                ));
            }
            Ok(Example {
                text: format!("{prefix}{source}"),
                pair: None,
                label: 0.0,
                target: Some(target.to_string()),
            })
        })
        .collect()
}

/// A file read into a table of two fields per row, source then target, whatever its layout.
fn read_table(spec: &GenerationTaskSpec, path: &Path) -> Result<Table> {
    let file_type = FileType::of(path, "generation task files")?;
    let text = read_text(path)?;
    let needs = file_type.needs(spec.header);
    check_not_empty(path, &text, needs)?;
    let table = match file_type {
        FileType::Jsonl => read_jsonl(spec, path, &text)?,
        FileType::Tsv => select_columns(spec, read_tsv_text(path, &text, spec.header, None)?)?,
        FileType::Csv => select_columns(spec, read_csv(path, &text, spec.header)?)?,
    };
    check_has_rows(&table, needs)?;
    Ok(table)
}

/// The recognised layouts, for messages.
fn layouts(spec: &GenerationTaskSpec) -> String {
    let (source, target) = (&spec.source, &spec.target);
    format!(
        "recognised layouts: `{source}` and `{target}` (the task's `source` and `target`), XSum's `{}` and `{}` \
         (with the default names), WMT's `{TRANSLATION}: {{\"{source}\": …, \"{target}\": …}}` (JSONL, `source` \
         and `target` naming the languages)",
        XSUM.0, XSUM.1
    )
}

/// A TSV/CSV table narrowed to its source and target columns, found by name (the task's, else XSum's) or, without
/// a header, by position.
fn select_columns(spec: &GenerationTaskSpec, table: Table) -> Result<Table> {
    let (source, target) = match &table.header {
        None => (
            position(spec, &table, &spec.source, 0)?,
            position(spec, &table, &spec.target, 1)?,
        ),
        Some(header) => {
            let find = |name: &str| header.iter().position(|h| h == name);
            let xsum = || match (spec.default_names(), find(XSUM.0), find(XSUM.1)) {
                (true, Some(document), Some(summary)) => Some((document, summary)),
                _ => None,
            };
            match (find(&spec.source), find(&spec.target)) {
                (Some(s), Some(t)) => (s, t),
                (s, _) => match xsum() {
                    Some(columns) => columns,
                    None => {
                        let (role, name) = if s.is_none() {
                            ("source", &spec.source)
                        } else {
                            ("target", &spec.target)
                        };
                        return Err(Error::Data {
                            path: table.path.clone(),
                            line: 1,
                            message: format!(
                                "no column `{name}` (the task's `{role}`) in the header; columns: {}; set `{role}` \
                                 to the column holding the {}; {}",
                                header.join(", "),
                                if role == "source" { "input text" } else { "reference output" },
                                layouts(spec)
                            ),
                        });
                    }
                },
            }
        }
    };
    let rows = table
        .rows
        .iter()
        .map(|row| {
            let field = |i: usize| {
                row.fields.get(i).cloned().ok_or_else(|| {
                    table.error(
                        row,
                        format!(
                            "the row has {} fields, needs field {}",
                            row.fields.len(),
                            i + 1
                        ),
                    )
                })
            };
            Ok(Row {
                line: row.line,
                fields: vec![field(source)?, field(target)?],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table {
        path: table.path.clone(),
        header: Some(vec![spec.source.clone(), spec.target.clone()]),
        rows,
    })
}

/// A column named by its 0-based position in a file without a header; the default names stand for `default`
/// (0 for the source, 1 for the target).
fn position(spec: &GenerationTaskSpec, table: &Table, name: &str, default: usize) -> Result<usize> {
    if spec.default_names() {
        return Ok(default);
    }
    name.parse::<usize>().map_err(|_| Error::Data {
        path: table.path.clone(),
        line: 1,
        message: format!(
            "the task says `header: false`, so columns are named by position (\"0\", \"1\", …), not `{name}`"
        ),
    })
}

/// Where a JSON object keeps its source and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonLayout {
    /// Top-level keys named by the task's `source` and `target`.
    Named,
    /// XSum's top-level `document` and `summary`.
    Xsum,
    /// WMT: the task's `source` and `target` inside the `translation` object.
    Translation,
}

/// The layout of a file, from its first object: the task's keys, else XSum's (with the default names), else WMT's.
fn detect_layout(spec: &GenerationTaskSpec, object: &Map<String, Value>) -> Option<JsonLayout> {
    if object.contains_key(&spec.source) || object.contains_key(&spec.target) {
        return Some(JsonLayout::Named);
    }
    if spec.default_names() && object.contains_key(XSUM.0) && object.contains_key(XSUM.1) {
        return Some(JsonLayout::Xsum);
    }
    object
        .get(TRANSLATION)
        .and_then(Value::as_object)
        .is_some_and(|t| t.contains_key(&spec.source) || t.contains_key(&spec.target))
        .then_some(JsonLayout::Translation)
}

/// The keys of an object (and of its `translation` object), for messages.
fn keys_found(object: &Map<String, Value>) -> String {
    let mut keys: Vec<String> = Vec::new();
    for (key, value) in object {
        match value.as_object() {
            Some(inner) if key == TRANSLATION => {
                let inner: Vec<&str> = inner.keys().map(String::as_str).collect();
                keys.push(format!("{key}: {{{}}}", inner.join(", ")));
            }
            _ => keys.push(key.clone()),
        }
    }
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

/// JSON lines become a table of source and target; the layout is that of the first object, and every line must
/// follow it.
fn read_jsonl(spec: &GenerationTaskSpec, path: &Path, text: &str) -> Result<Table> {
    let mut layout = None;
    let mut rows = Vec::new();
    for (line_no, object) in json_objects(path, text)? {
        let object = &object;
        let error = |message: String| line_error(path, line_no, message);
        let layout = match layout {
            Some(known) => known,
            None => {
                let found = detect_layout(spec, object).ok_or_else(|| {
                    error(format!(
                        "no key `{}` or `{}` (the task's `source` and `target`); keys found: {}; set `source` and \
                         `target` to the keys holding the input and the reference output; {}",
                        spec.source,
                        spec.target,
                        keys_found(object),
                        layouts(spec)
                    ))
                })?;
                *layout.insert(found)
            }
        };
        let (holder, source_key, target_key, within) = match layout {
            JsonLayout::Named => (Some(object), spec.source.as_str(), spec.target.as_str(), ""),
            JsonLayout::Xsum => (Some(object), XSUM.0, XSUM.1, ""),
            JsonLayout::Translation => (
                object.get(TRANSLATION).and_then(Value::as_object),
                spec.source.as_str(),
                spec.target.as_str(),
                " in `translation`",
            ),
        };
        let Some(holder) = holder else {
            return Err(error(format!(
                "no `{TRANSLATION}` object, though the file's first example has one; keys found: {}",
                keys_found(object)
            )));
        };
        let text_of = |key: &str, role: &str| {
            match holder.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(error(format!(
                "key `{key}`{within} (the {role}) holds {}, expected a string",
                shorten(&other.to_string())
            ))),
            None => Err(error(format!(
                "key `{key}`{within} (the {role}) is missing; keys found: {}; set the task's `{role}` to the key \
                 holding the {}; {}",
                keys_found(object),
                if role == "source" { "input text" } else { "reference output" },
                layouts(spec)
            ))),
        }
        };
        rows.push(Row {
            line: line_no,
            fields: vec![
                text_of(source_key, "source")?,
                text_of(target_key, "target")?,
            ],
        });
    }
    Ok(Table {
        path: path.to_path_buf(),
        header: Some(vec![spec.source.clone(), spec.target.clone()]),
        rows,
    })
}

/// A value cut for a message.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
#[path = "generation_tests.rs"]
mod tests;
