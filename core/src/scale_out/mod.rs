//! Running trials on other machines. A *task file* holds everything one scheduled task needs — the experiment
//! file, the resolved model and data folders, the plugin libraries with their hashes, the device, and the trials
//! (one, or several run one after another) — and `peftspace trial TASK_FILE` runs it anywhere that sees the same
//! file system, writing each trial's outcome to its own result file (temporary, fsync, rename). The coordinator
//! collects result files into the store, so the store alone decides what is missing: a search can move between
//! `local` and a scheduler and back. [`slurm`] submits task files as Slurm job arrays; `docs/SCALE_OUT.md` shows
//! how to drive `peftspace trial` from any other scheduler.

mod scontrol;
pub mod slurm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::sync::atomic::AtomicBool;

use crate::refine::TrialPool;
use crate::store::{sha256_file, write_atomically};
use crate::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use crate::{Error, Result};

/// Layout version of task and result files.
pub const TASK_FORMAT: u32 = 1;

/// A plugin library a task must load, with the hash of the bytes the coordinator loaded (a task refuses a library
/// that changed since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlugin {
    pub path: PathBuf,
    pub sha256: String,
}

/// What `peftspace trial` needs to run trials away from the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub format: u32,
    /// The experiment file (absolute).
    pub experiment: PathBuf,
    /// The resolved backbone folder; `None` in the synthetic development mode.
    pub model: Option<PathBuf>,
    /// The resolved GLUE folder, when the experiment has GLUE tasks.
    pub data_dir: Option<PathBuf>,
    pub plugins: Vec<TaskPlugin>,
    pub offline: bool,
    /// `--device` for the task (`None`: the build's default, e.g. the GPU Slurm assigned).
    pub device: Option<String>,
    /// Folder of the result files, one `<trial id>.json` per trial.
    pub results: PathBuf,
    /// The trials, run in this order (a population may later run them together).
    pub trials: Vec<TrialSpec>,
}

/// One trial's outcome, as a task writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub format: u32,
    pub id: String,
    pub outcome: TrialOutcome,
}

impl TaskFile {
    /// Reads a task file; a missing, unreadable or foreign file is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |message: String| Error::Data {
            path: path.to_path_buf(),
            line: 1,
            message,
        };
        let task: TaskFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a peftspace task file: {e}")))?;
        if task.format != TASK_FORMAT {
            return Err(bad(format!(
                "task file format {} (this peftspace reads {TASK_FORMAT}); write it again with this version",
                task.format
            )));
        }
        if task.trials.is_empty() {
            return Err(bad("the task has no trials".into()));
        }
        Ok(task)
    }

    /// Writes the task file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::msg(format!("serialising a task file: {e}")))?;
        write_atomically(path, &text)
    }

    /// Where the outcome of trial `id` goes.
    pub fn result_path(&self, id: &str) -> PathBuf {
        result_path(&self.results, id)
    }

    /// Refuses the task when a plugin library's bytes differ from those the coordinator loaded.
    pub fn check_plugins(&self) -> Result<()> {
        for plugin in &self.plugins {
            let found = sha256_file(&plugin.path)?;
            if found != plugin.sha256 {
                return Err(Error::Plugin {
                    path: plugin.path.clone(),
                    message: format!(
                        "changed since the search loaded it (sha256 {} then, {found} now); every task of a search \
                         must run the same plugin code",
                        plugin.sha256
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs every trial of the task with `executor` and writes each outcome as soon as it is known. Returns the
    /// number of trials run. A trial the executor cannot run at all stops the task with that error.
    pub fn run(&self, executor: &dyn TrialExecutor) -> Result<usize> {
        std::fs::create_dir_all(&self.results).map_err(|e| Error::io(&self.results, e))?;
        for trial in &self.trials {
            let outcome = crate::refine::trial_span(trial).in_scope(|| executor.run(trial))?;
            write_result(&self.results, trial, &outcome)?;
        }
        Ok(self.trials.len())
    }
}

/// `<dir>/<trial id>.json`.
pub fn result_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes a trial's outcome into `dir` atomically.
pub fn write_result(dir: &Path, trial: &TrialSpec, outcome: &TrialOutcome) -> Result<()> {
    let result = TaskResult {
        format: TASK_FORMAT,
        id: trial.id.clone(),
        outcome: outcome.clone(),
    };
    let text = serde_json::to_string(&result)
        .map_err(|e| Error::msg(format!("serialising the result of trial {}: {e}", trial.id)))?;
    write_atomically(&result_path(dir, &trial.id), &text)
}

/// The outcome stored for trial `id` in `dir`, if a task wrote one. A file that does not parse (it cannot be
/// half-written; it may be foreign) is an error naming it.
pub fn read_result(dir: &Path, id: &str) -> Result<Option<TrialOutcome>> {
    let path = result_path(dir, id);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let result: TaskResult = serde_json::from_str(&text).map_err(|e| Error::Data {
        path: path.clone(),
        line: 1,
        message: format!("not a trial result: {e}"),
    })?;
    if result.id != id {
        return Err(Error::Data {
            path,
            line: 1,
            message: format!("holds trial {}, expected {id}", result.id),
        });
    }
    Ok(Some(result.outcome))
}

/// Hands the result file of `trial` in `dir` (if a task wrote one) to `done`, then removes it, so a later
/// `--retry-failed` cannot pick up a stale outcome. Returns whether there was one.
pub(crate) fn hand_over(
    dir: &Path,
    trial: &TrialSpec,
    done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
) -> Result<bool> {
    let Some(outcome) = read_result(dir, &trial.id)? else {
        return Ok(false);
    };
    done(trial, outcome)?;
    let _ = std::fs::remove_file(result_path(dir, &trial.id));
    Ok(true)
}

/// The folder of result files under a results directory (where `run --executor slurm` points its tasks).
pub fn results_folder(results_dir: &Path) -> PathBuf {
    results_dir.join("slurm").join("results")
}

/// Hands over the trials whose result files exist in `dir` (written by tasks run elsewhere, e.g. by another
/// scheduler, and not yet stored), then lets `inner` run the rest: whatever executor continues a search, it never
/// trains a trial whose result is already on disk.
pub struct CollectResults<'p> {
    pub inner: Box<dyn TrialPool + 'p>,
    pub dir: PathBuf,
}

impl TrialPool for CollectResults<'_> {
    fn run_batch(
        &mut self,
        trials: Vec<TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
    ) -> Result<()> {
        let mut rest = Vec::with_capacity(trials.len());
        for trial in trials {
            if !hand_over(&self.dir, &trial, done)? {
                rest.push(trial);
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.inner.run_batch(rest, stop, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refine::{SerialPool, SyntheticExecutor};
    use crate::test_doubles::sst2_trial as trial;

    #[test]
    fn a_task_file_round_trips_runs_and_its_results_are_collected_before_anything_trains() {
        let dir = tempfile::tempdir().expect("tmp");
        let results = results_folder(dir.path());
        let (a, b) = (trial("grouping=spindle"), trial("grouping=uniform"));
        let task = TaskFile {
            format: TASK_FORMAT,
            experiment: dir.path().join("exp.ron"),
            model: None,
            data_dir: None,
            plugins: Vec::new(),
            offline: true,
            device: None,
            results: results.clone(),
            trials: vec![a.clone()],
        };
        let file = dir.path().join("task.json");
        task.write(&file).expect("write");
        let read = TaskFile::read(&file).expect("read");
        assert_eq!(read, task);
        assert_eq!(read.run(&SyntheticExecutor::default()).expect("runs"), 1);
        let expected = SyntheticExecutor::default().run(&a).expect("outcome");

        // `a` has a result on disk: collected, not run; only `b` reaches the executor (which logs what it runs).
        let log = dir.path().join("ran.log");
        let executor = SyntheticExecutor {
            log: Some(log.clone()),
            ..Default::default()
        };
        let mut pool = CollectResults {
            inner: Box::new(SerialPool {
                executor: &executor,
                population: 1,
            }),
            dir: results.clone(),
        };
        let mut got = Vec::new();
        pool.run_batch(
            vec![a.clone(), b.clone()],
            &AtomicBool::new(false),
            &mut |t, o| {
                got.push((t.id.clone(), o));
                Ok(())
            },
        )
        .expect("batch");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (a.id.clone(), expected));
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            format!("{}\n", b.id)
        );
        assert!(
            !result_path(&results, &a.id).exists(),
            "a collected result stays behind"
        );

        std::fs::write(&file, "{\"format\": 9}").expect("write");
        let e = TaskFile::read(&file).unwrap_err().to_string();
        assert!(
            e.contains("task.json") && e.contains("not a peftspace task file"),
            "{e}"
        );
    }
}
