//! `manifest.json` (what trial ids and the plan depend on) and the provenance copies next to the results.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::provenance::{now, CodeProvenance, HistoryEntry};
use super::{write_atomically, ResultStore, EXPERIMENT_COPY, MANIFEST_FILE, VERSION_FILE};
use crate::{Error, Result};

/// Keys of `manifest.json` that describe the code rather than the experiment.
const CODE_KEY: &str = "code";
const HISTORY_KEY: &str = "history";

/// What [`ResultStore::check_manifest`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestCheck {
    /// No manifest yet: this one was written.
    Created,
    /// Same experiment, same code.
    Same,
    /// Same experiment, different code, allowed: the differences (`field: stored → now`), now in the history.
    CodeChanged(Vec<String>),
}

impl ResultStore {
    /// Writes `manifest` (with `code` and a first history entry) to `manifest.json` if there is none; otherwise
    /// compares. A different experiment is refused with the fields that differ. Different code (version or plugin
    /// hashes) is refused too, unless `allow_code_change`, which records the change in the manifest's history.
    /// A method of the open store, so it runs under the directory's lock.
    pub fn check_manifest(
        &self,
        manifest: &Value,
        code: &CodeProvenance,
        allow_code_change: bool,
    ) -> Result<ManifestCheck> {
        check_manifest(self.dir(), manifest, code, allow_code_change)
    }

    /// Saves the experiment file's text and the code version of this run next to the results (overwriting older
    /// copies; the manifest's history keeps every version).
    pub fn save_provenance(&self, experiment_text: &str, version: &str) -> Result<()> {
        save_provenance(self.dir(), experiment_text, version)
    }
}

fn to_value(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::msg(format!("cannot serialise: {e}")))
}

fn check_manifest(
    dir: &Path,
    manifest: &Value,
    code: &CodeProvenance,
    allow_code_change: bool,
) -> Result<ManifestCheck> {
    let path = dir.join(MANIFEST_FILE);
    let mut experiment = manifest.clone();
    if let Value::Object(map) = &mut experiment {
        map.remove(CODE_KEY);
        map.remove(HISTORY_KEY);
    }
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut full = experiment;
            if let Value::Object(map) = &mut full {
                map.insert(CODE_KEY.into(), to_value(code)?);
                let created = HistoryEntry {
                    at: now(),
                    event: "created".into(),
                    code: code.clone(),
                };
                map.insert(HISTORY_KEY.into(), Value::Array(vec![to_value(&created)?]));
            }
            write_atomically(&path, &pretty(&full)?)?;
            return Ok(ManifestCheck::Created);
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut stored: Value = serde_json::from_str(&text).map_err(|e| Error::Data {
        path: path.clone(),
        line: e.line(),
        message: format!("unreadable manifest ({e}); delete the directory or choose another --out"),
    })?;
    let Value::Object(stored_map) = &mut stored else {
        return Err(Error::Data {
            path,
            line: 1,
            message:
                "the manifest is not a JSON object; delete the directory or choose another --out"
                    .into(),
        });
    };
    // Manifests written before provenance was recorded have neither key: their code is unknown (null).
    let stored_code = stored_map.remove(CODE_KEY).unwrap_or(Value::Null);
    let history = stored_map
        .remove(HISTORY_KEY)
        .unwrap_or(Value::Array(Vec::new()));
    let stored_experiment = Value::Object(stored_map.clone());

    if let Some(reason) = earlier_protocol(&stored_experiment, &experiment) {
        return Err(Error::Refused(format!(
            "{} holds results of an earlier protocol: {reason}. They cannot be continued or mixed with new ones. \
             Choose a new --out directory, or delete {} to start afresh; `peftspace report {}` still rebuilds its \
             tables.",
            dir.display(),
            dir.display(),
            dir.display()
        )));
    }
    let mut differences = Vec::new();
    diff_values("", &stored_experiment, &experiment, &mut differences);
    if !differences.is_empty() {
        return Err(Error::Refused(format!(
            "{} holds results of a different experiment; these settings changed since:\n  {}\n\
             They change trial ids or the plan, so the stored trials would not be reused. \
             Choose a new --out directory, or delete {} to start afresh.",
            dir.display(),
            differences.join("\n  "),
            dir.display()
        )));
    }
    let code_now = to_value(code)?;
    let mut code_differences = Vec::new();
    diff_values(CODE_KEY, &stored_code, &code_now, &mut code_differences);
    if code_differences.is_empty() {
        return Ok(ManifestCheck::Same);
    }
    if !allow_code_change {
        let unknown = if stored_code.is_null() {
            " (the stored results predate code provenance, so the code that made them is unknown)"
        } else {
            ""
        };
        return Err(Error::Refused(format!(
            "{} holds results of different code{unknown}:\n  {}\n\
             Results of different code would be mixed in one analysis. Rerun with the code that made them, choose a \
             new --out directory, or pass --allow-code-change to continue here (the change is recorded in the \
             manifest's history).",
            dir.display(),
            code_differences.join("\n  ")
        )));
    }
    let mut history = match history {
        Value::Array(items) => items,
        other => vec![other],
    };
    history.push(to_value(&HistoryEntry {
        at: now(),
        event: "code changed (--allow-code-change)".into(),
        code: code.clone(),
    })?);
    if let Value::Object(map) = &mut stored {
        map.insert(CODE_KEY.into(), code_now);
        map.insert(HISTORY_KEY.into(), Value::Array(history));
    }
    write_atomically(&path, &pretty(&stored)?)?;
    Ok(ManifestCheck::CodeChanged(code_differences))
}

/// Why a stored manifest belongs to a protocol this version no longer runs, if it does. Manifests written before
/// search trials were scored on a validation split have no `validation_fraction`: their designs were chosen on
/// the dev set, which the final runs now report on.
fn earlier_protocol(stored: &Value, now: &Value) -> Option<&'static str> {
    let key = "validation_fraction";
    (stored.get(key).is_none() && now.get(key).is_some()).then_some(
        "its search trials were scored on the dev set, which the final runs report on (search trials are now \
         scored on `validation_fraction` of each training set, and final runs use seeds of their own)",
    )
}

/// Lists `path: stored → now` for every leaf that differs (arrays compared element by element).
fn diff_values(path: &str, stored: &Value, now: &Value, out: &mut Vec<String>) {
    match (stored, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_values(
                    &child,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if stored != now => out.push(format!("{path}: {stored} → {now}")),
        _ => {}
    }
}

/// Saves the experiment file's text and the code version next to the results (overwriting older copies).
pub(super) fn save_provenance(dir: &Path, experiment_text: &str, version: &str) -> Result<()> {
    write_atomically(&dir.join(EXPERIMENT_COPY), experiment_text)?;
    write_atomically(&dir.join(VERSION_FILE), &format!("{version}\n"))
}

pub(crate) fn pretty(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::msg(format!("cannot serialise: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PluginHash;

    fn code(version: &str) -> CodeProvenance {
        CodeProvenance {
            version: version.into(),
            plugins: vec![PluginHash {
                file: "libia3.so".into(),
                sha256: "ab".into(),
            }],
        }
    }

    #[test]
    fn changed_manifest_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ResultStore::open(dir.path()).expect("open");
        let first =
            serde_json::json!({"training": {"epochs": 3}, "samples": 10, "tasks": ["sst2"]});
        let v1 = code("peftspace 0.1.0");
        assert_eq!(
            store
                .check_manifest(&first, &v1, false)
                .expect("first write"),
            ManifestCheck::Created
        );
        assert_eq!(
            store.check_manifest(&first, &v1, false).expect("same"),
            ManifestCheck::Same
        );
        let changed = serde_json::json!({"training": {"epochs": 1}, "samples": 10, "tasks": ["sst2", "mrpc"]});
        let err = store
            .check_manifest(&changed, &v1, true)
            .expect_err("differs")
            .to_string();
        assert!(err.contains("training.epochs: 3 → 1"), "{err}");
        assert!(err.contains("tasks:"), "{err}");
        assert!(err.contains("--out"), "{err}");
    }

    #[test]
    fn results_of_the_dev_set_search_are_refused_as_an_earlier_protocol() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ResultStore::open(dir.path()).expect("open");
        let v1 = code("peftspace 0.1.0");
        let before = serde_json::json!({"samples": 10, "seeds": [1]});
        store.check_manifest(&before, &v1, false).expect("create");
        let now = serde_json::json!({"samples": 10, "seeds": [1], "validation_fraction": 0.1});
        let err = store
            .check_manifest(&now, &v1, true)
            .expect_err("earlier protocol")
            .to_string();
        assert!(err.contains("earlier protocol"), "{err}");
        assert!(err.contains("validation_fraction"), "{err}");
        assert!(err.contains("--out"), "{err}");
        // A folder of the current protocol with another fraction is an ordinary change of settings.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ResultStore::open(dir.path()).expect("open");
        store.check_manifest(&now, &v1, false).expect("create");
        let other = serde_json::json!({"samples": 10, "seeds": [1], "validation_fraction": 0.2});
        let err = store
            .check_manifest(&other, &v1, false)
            .expect_err("changed")
            .to_string();
        assert!(err.contains("validation_fraction: 0.1 → 0.2"), "{err}");
    }

    #[test]
    fn different_code_is_refused_unless_allowed_and_then_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ResultStore::open(dir.path()).expect("open");
        let experiment = serde_json::json!({"samples": 10});
        store
            .check_manifest(&experiment, &code("peftspace 0.1.0"), false)
            .expect("create");
        let mut rebuilt = code("peftspace 0.1.0");
        rebuilt.plugins[0].sha256 = "cd".into();
        let err = store
            .check_manifest(&experiment, &rebuilt, false)
            .expect_err("plugin rebuilt")
            .to_string();
        assert!(
            err.contains("code.plugins[0].sha256: \"ab\" → \"cd\""),
            "{err}"
        );
        assert!(err.contains("--allow-code-change"), "{err}");
        let newer = code("peftspace 0.2.0");
        let err = store
            .check_manifest(&experiment, &newer, false)
            .expect_err("version")
            .to_string();
        assert!(err.contains("code.version"), "{err}");
        match store
            .check_manifest(&experiment, &newer, true)
            .expect("allowed")
        {
            ManifestCheck::CodeChanged(d) => assert!(d[0].starts_with("code.version"), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store
                .check_manifest(&experiment, &newer, false)
                .expect("now the same"),
            ManifestCheck::Same
        );
        let text = fs::read_to_string(dir.path().join(MANIFEST_FILE)).expect("manifest");
        let manifest: Value = serde_json::from_str(&text).expect("json");
        let history = manifest["history"].as_array().expect("history");
        assert_eq!(history.len(), 2);
        assert_eq!(history[1]["code"]["version"], "peftspace 0.2.0");
    }

    #[test]
    fn a_manifest_from_before_provenance_needs_allow_code_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(MANIFEST_FILE), r#"{"samples": 10}"#).expect("old manifest");
        let store = ResultStore::open(dir.path()).expect("open");
        let experiment = serde_json::json!({"samples": 10});
        let err = store
            .check_manifest(&experiment, &code("peftspace 0.1.0"), false)
            .expect_err("unknown code")
            .to_string();
        assert!(err.contains("predate"), "{err}");
        store
            .check_manifest(&experiment, &code("peftspace 0.1.0"), true)
            .expect("allowed");
    }
}
