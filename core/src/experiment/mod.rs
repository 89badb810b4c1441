//! Experiment files, pass 2: a parsed [`ExperimentSpec`] checked against the registries, with every error placed
//! at `file:line:col` and named by its path in the spec (`stages[2].candidates[1]`).
//!
//! Paths written in an experiment file (backbone, data, plugins, custom and generation task files) are relative to
//! the folder of that file.

mod checks;
mod generation;
pub mod locate;

pub use checks::Unresolved;

use std::path::{Path, PathBuf};

use crate::budget::Strategies;
use crate::registry::Registries;
use crate::shapes::BackboneInfo;
use crate::space::{DesignSpace, SampleContext};
use crate::spec::{ExperimentSpec, GroupStacks, StageSpec, TaskSpec};
use crate::{Error, Result};

/// A parsed experiment file (pass 1 done: syntax, field names and types are right).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub spec: ExperimentSpec,
    /// The file as the user named it (used in messages).
    pub file: PathBuf,
    /// Its text, to place pass-2 errors.
    pub source: String,
}

/// A checked experiment: every name resolves and every value is in range.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub spec: ExperimentSpec,
    pub file: PathBuf,
    pub source: String,
}

/// The RON options experiment files are read with: `Some(…)` may be left out around optional values.
fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

/// Pass 1 on text: syntax errors, unknown fields and wrong types come back as `file:line:col: message`.
pub fn parse_str(text: &str, file: impl Into<PathBuf>) -> Result<Parsed> {
    let file = file.into();
    match ron_options().from_str::<ExperimentSpec>(text) {
        Ok(spec) => Ok(Parsed {
            spec,
            file,
            source: text.to_string(),
        }),
        Err(e) => Err(Error::Spec {
            file: file.display().to_string(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        }),
    }
}

/// Pass 1 on a file.
pub fn parse(path: impl AsRef<Path>) -> Result<Parsed> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_str(&text, path)
}

/// Pass 1 and pass 2 with the registries as they are now (load the file's plugins first: [`Parsed::plugin_paths`]).
pub fn load(path: impl AsRef<Path>) -> Result<Experiment> {
    let parsed = parse(path)?;
    let registries = crate::registry::registries()?;
    parsed.validate(&registries)
}

/// The folder paths in the file are relative to.
fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Parsed {
    /// The dynamic plugins the file lists, resolved against its folder.
    pub fn plugin_paths(&self) -> Vec<PathBuf> {
        self.spec
            .plugins
            .iter()
            .map(|p| base_dir(&self.file).join(p))
            .collect()
    }

    /// Pass 2: names through `registries`, ranges, consistency. The first problem found is returned.
    pub fn validate(self, registries: &Registries) -> Result<Experiment> {
        checks::check(&self, registries, None)?;
        Ok(Experiment {
            spec: self.spec,
            file: self.file,
            source: self.source,
        })
    }

    /// Pass 2 without the file's plugins: every other check as in [`Parsed::validate`], but names no registry
    /// holds (which the plugins may provide) are returned instead of refused.
    pub fn validate_without_plugins(self, registries: &Registries) -> Result<Vec<Unresolved>> {
        let mut unresolved = Vec::new();
        checks::check(&self, registries, Some(&mut unresolved))?;
        Ok(unresolved)
    }

    /// An error placed at `path` (`stages[1].candidates[0]`) of this file.
    pub fn error_at(&self, path: &str, message: impl std::fmt::Display) -> Error {
        error_at(&self.file, &self.source, path, message)
    }
}

/// An error placed at a spec path of a file's text (the file's start when the path is not written there).
pub fn error_at(file: &Path, source: &str, path: &str, message: impl std::fmt::Display) -> Error {
    let pos = locate::locate(source, path).unwrap_or(locate::Position { line: 1, col: 1 });
    let message = if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    };
    Error::Spec {
        file: file.display().to_string(),
        line: pos.line,
        col: pos.col,
        message,
    }
}

impl Experiment {
    /// The folder the file's relative paths start from.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(&self.file)
    }

    /// A path written in the file, resolved against its folder (absolute paths stay as they are).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir().join(path)
    }

    /// The dynamic plugins the file lists, resolved against its folder.
    pub fn plugin_paths(&self) -> Vec<PathBuf> {
        self.spec.plugins.iter().map(|p| self.resolve(p)).collect()
    }

    /// Reads every custom and generation task's files (search and final-run tasks) and checks them as training
    /// would: the files exist and parse, the named columns exist, every label is one of `labels` (a number for
    /// regression), every generation example has a source and a target, no file is empty. Needs no model. Errors
    /// are `file:line: message` in the data file, or placed in this file.
    pub fn check_data(&self) -> Result<()> {
        self.check_tasks_data(&self.spec.tasks, "tasks")?;
        if let Some(tasks) = self.spec.final_runs.as_ref().and_then(|f| f.tasks.as_ref()) {
            self.check_tasks_data(tasks, "final_runs.tasks")?;
        }
        Ok(())
    }

    /// [`Self::check_data`] for some tasks; `at` is where they are listed (`tasks` or `final_runs.tasks`), to place
    /// errors. GLUE tasks are skipped: their folder is found later.
    pub fn check_tasks_data(&self, tasks: &[TaskSpec], at: &str) -> Result<()> {
        for (i, task) in tasks.iter().enumerate() {
            let (field, train, eval) = match (&task.custom, &task.generation) {
                (Some(custom), _) => ("custom", &custom.train, &custom.eval),
                (None, Some(generation)) => ("generation", &generation.train, &generation.eval),
                (None, None) => continue,
            };
            // A subset of the search tasks (`train --task`) is placed at the task's own line.
            let index = match at {
                "tasks" => self
                    .spec
                    .tasks
                    .iter()
                    .position(|t| t.id == task.id)
                    .unwrap_or(i),
                _ => i,
            };
            let place = format!("{at}[{index}].{field}");
            for (name, file) in [("train", train), ("eval", eval)] {
                let path = self.resolve(file);
                if !path.is_file() {
                    return Err(self.error_at(
                        &format!("{place}.{name}"),
                        format!(
                            "no file {}; paths are relative to the experiment file's folder ({})",
                            path.display(),
                            self.base_dir().display()
                        ),
                    ));
                }
            }
            let loaded = match (&task.custom, &task.generation) {
                (Some(custom), _) => crate::data::load_custom(&task.id, custom, &self.base_dir()),
                (None, Some(generation)) => {
                    crate::data::load_generation(&task.id, generation, &self.base_dir())
                }
                (None, None) => continue,
            };
            loaded.map_err(|e| match e {
                Error::Msg(message) => self.error_at(&place, message),
                other => other,
            })?;
        }
        Ok(())
    }

    /// The experiment's strategy names, in file order.
    pub fn strategy_names(&self) -> Vec<String> {
        self.spec
            .strategies
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The experiment's strategies, built with their options.
    pub fn strategies(&self, registries: &Registries) -> Result<Strategies> {
        let mut out = Strategies::new();
        for (i, s) in self.spec.strategies.iter().enumerate() {
            let built = registries
                .strategy(&s.name, &s.options)
                .map_err(|e| self.error_at(&format!("strategies[{i}]"), e))?;
            out.insert(s.name.clone(), built);
        }
        Ok(out)
    }

    /// An error placed at `path` of this file.
    pub fn error_at(&self, path: &str, message: impl std::fmt::Display) -> Error {
        error_at(&self.file, &self.source, path, message)
    }

    /// The stage called `name`, with its index.
    pub fn stage(&self, name: &str) -> Result<(usize, &StageSpec)> {
        self.spec
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .ok_or_else(|| Error::UnknownName {
                kind: "stage",
                name: name.to_string(),
                known: self.spec.stages.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// S0 for a backbone: its layers in `groups` groups (for `group_stacks: Separate` on an encoder-decoder, half
    /// of the groups cover the encoder and half the decoder). Refused when the backbone does not suit the tasks
    /// ([`Experiment::check_backbone`]): every command that pairs the experiment with its backbone builds S0.
    pub fn space(&self, info: &BackboneInfo) -> Result<DesignSpace> {
        self.check_backbone(info)?;
        let mut space =
            DesignSpace::new(info.num_layers(), self.spec.groups, self.strategy_names()).map_err(
                |e| {
                    self.error_at(
                        "groups",
                        format!("{e} ({} has {} layers)", info.model_type, info.num_layers()),
                    )
                },
            )?;
        if self.spec.group_stacks == GroupStacks::Separate && info.decoder_layers > 0 {
            space = space
                .split_stacks(info.encoder_layers)
                .map_err(|e| self.error_at("group_stacks", e))?;
        }
        Ok(space.with_max_group_ratio(self.spec.max_group_ratio))
    }

    /// The space sampled for stage `index` before its search: S0 narrowed by the *first* candidate of every stage
    /// up to and including `index` (what `peftspace sample --stage` shows; a search narrows by winners instead).
    pub fn stage_space(&self, info: &BackboneInfo, index: usize) -> Result<DesignSpace> {
        let mut space = self.space(info)?;
        for (i, stage) in self.spec.stages.iter().enumerate().take(index + 1) {
            let first = stage
                .candidates
                .first()
                .ok_or_else(|| self.error_at(&format!("stages[{i}]"), "no candidates"))?;
            space = space
                .constrain(stage.dimension, first)
                .map_err(|e| self.error_at(&format!("stages[{i}].candidates[0]"), e))?;
        }
        Ok(space)
    }

    /// What the sampler needs for this experiment and backbone.
    pub fn sample_context(
        &self,
        info: BackboneInfo,
        registries: &Registries,
    ) -> Result<SampleContext> {
        Ok(SampleContext {
            strategies: self.strategies(registries)?,
            info,
            fraction: self.spec.budget,
            registries: registries.clone(),
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
