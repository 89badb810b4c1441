//! The Slurm executor: a [`TrialPool`] that writes one task file per trial (or per group of trials), submits them
//! as one `sbatch --array` whose tasks run `peftspace trial TASK_FILE`, polls `scontrol` until every task has
//! finished, and hands each result file to the store. Tasks that end without a result (FAILED, TIMEOUT, CANCELLED,
//! OUT_OF_MEMORY, …) are written to `slurm/failures.jsonl` with their exit code and log, and resubmitted up to
//! `retries` times; then the trial is stored as failed (`run --retry-failed` tries it again).
//!
//! Everything lives under `<results>/slurm/` on the shared file system: `tasks/` (task files), `results/`, one
//! folder per submission with `tasks.txt`, `array.sh` and `logs/`, and `active.json`, the array in flight. A
//! coordinator that was killed adopts that array when it starts again: finished tasks' results are collected,
//! running and pending ones are waited for, and only the rest is submitted — a finished trial never runs twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::scontrol::{is_finished, parse_show_job, TaskState};
use super::{hand_over, result_path, TaskFile, TaskPlugin, TASK_FORMAT};
use crate::refine::{TrialPool, INTERRUPTED};
use crate::store::write_atomically;
use crate::trial::{TrialOutcome, TrialSpec, TrialStatus};
use crate::{Error, Result};

/// How the arrays are submitted.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// GPUs per array task (`--gres=gpu:G`); 0 = none.
    pub gpus_per_trial: u32,
    /// Time limit per task (`--time`).
    pub time: Option<String>,
    /// At most this many tasks run at once (`--array=…%K`).
    pub max_parallel: Option<usize>,
    /// Further `sbatch` arguments, passed as they are.
    pub sbatch_args: Vec<String>,
    /// Resubmissions of a trial whose task ended without a result.
    pub retries: u32,
    /// Trials per array task (run one after another; a population parameter).
    pub trials_per_task: usize,
    /// Pause between two looks at the array.
    pub poll: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            gpus_per_trial: 0,
            time: None,
            max_parallel: None,
            sbatch_args: Vec::new(),
            retries: 2,
            trials_per_task: 1,
            poll: Duration::from_secs(2),
        }
    }
}

/// What every task file of a search shares (see [`TaskFile`]).
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub experiment: PathBuf,
    pub model: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub plugins: Vec<TaskPlugin>,
    pub offline: bool,
    pub device: Option<String>,
}

/// The array in flight, recorded before `sbatch` runs (with the job name) and completed with its id after.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveArray {
    name: String,
    job_id: Option<String>,
    submission: PathBuf,
    /// Trial ids of each array task, by task index.
    tasks: Vec<Vec<String>>,
}

/// One task that ended without a result.
#[derive(Debug, Serialize)]
struct Failure<'a> {
    trial: &'a str,
    job: &'a str,
    task: usize,
    state: &'a str,
    exit_code: &'a str,
    log: String,
    attempt: u32,
}

/// Runs trials as Slurm array tasks (see the module documentation).
pub struct SlurmPool<'a> {
    options: SlurmOptions,
    context: TaskContext,
    /// The `peftspace` executable the tasks run (on the cluster's shared file system).
    program: PathBuf,
    dir: PathBuf,
    /// Asked (with a question for a person) before cancelling the array on Ctrl-C.
    confirm_cancel: &'a dyn Fn(&str) -> bool,
    /// Told about submissions, adoptions and failures.
    notify: &'a dyn Fn(&str),
    failures: BTreeMap<String, u32>,
}

fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn run_command(command: &mut Command, what: &str) -> Result<String> {
    let out = command.output().map_err(|e| {
        Error::msg(format!(
            "{what}: cannot run it ({e}); is this a Slurm login node (sbatch, scontrol on PATH, SLURM_CONF set)?"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl<'a> SlurmPool<'a> {
    /// A pool keeping its files under `results_dir/slurm`.
    pub fn new(
        options: SlurmOptions,
        context: TaskContext,
        program: PathBuf,
        results_dir: &Path,
        confirm_cancel: &'a dyn Fn(&str) -> bool,
        notify: &'a dyn Fn(&str),
    ) -> Self {
        SlurmPool {
            options,
            context,
            program,
            // Absolute: the paths go into task files and sbatch options read on other machines and folders.
            dir: std::path::absolute(results_dir)
                .unwrap_or_else(|_| results_dir.to_path_buf())
                .join("slurm"),
            confirm_cancel,
            notify,
            failures: BTreeMap::new(),
        }
    }

    fn results_dir(&self) -> PathBuf {
        super::results_folder(self.dir.parent().unwrap_or(&self.dir))
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join("active.json")
    }

    fn read_active(&self) -> Result<Option<ActiveArray>> {
        let path = self.active_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Data {
                    path,
                    line: 1,
                    message: format!(
                        "unreadable record of the array in flight: {e}; delete it if no array runs"
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn write_active(&self, active: &ActiveArray) -> Result<()> {
        let text = serde_json::to_string_pretty(active)
            .map_err(|e| Error::msg(format!("serialising the array record: {e}")))?;
        write_atomically(&self.active_path(), &text)
    }

    fn clear_active(&self) -> Result<()> {
        match std::fs::remove_file(self.active_path()) {
            Ok(()) => crate::store::sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(self.active_path(), e)),
        }
    }

    /// Writes the task files and the array script of a new submission and submits it.
    fn submit(&self, groups: Vec<Vec<TrialSpec>>) -> Result<ActiveArray> {
        let number = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("submission-"))
                    .count()
            })
            .unwrap_or(0);
        let submission = self.dir.join(format!("submission-{:04}", number + 1));
        let logs = submission.join("logs");
        let tasks_dir = self.dir.join("tasks");
        for dir in [&logs, &tasks_dir, &self.results_dir()] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut list = String::new();
        let mut tasks = Vec::new();
        for group in groups {
            let file = tasks_dir.join(format!("{}.json", group[0].id));
            TaskFile {
                format: TASK_FORMAT,
                experiment: self.context.experiment.clone(),
                model: self.context.model.clone(),
                data_dir: self.context.data_dir.clone(),
                plugins: self.context.plugins.clone(),
                offline: self.context.offline,
                device: self.context.device.clone(),
                results: self.results_dir(),
                trials: group.clone(),
            }
            .write(&file)?;
            list.push_str(&format!("{}\n", file.display()));
            tasks.push(group.into_iter().map(|t| t.id).collect::<Vec<_>>());
        }
        let list_file = submission.join("tasks.txt");
        write_atomically(&list_file, &list)?;
        let script = submission.join("array.sh");
        write_atomically(
            &script,
            &format!(
                "#!/bin/sh\n# Array task N runs the task file on line N+1 of tasks.txt.\n\
                 task=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})\n\
                 exec {} trial \"$task\"\n",
                sh_quote(&list_file.display().to_string()),
                sh_quote(&self.program.display().to_string())
            ),
        )?;
        let name = format!(
            "peftspace-{}",
            submission
                .canonicalize()
                .map(|p| crate::trial::hex_sha256(p.display().to_string().as_bytes()))
                .unwrap_or_default()
                .get(..12)
                .unwrap_or("array")
        );
        let mut active = ActiveArray {
            name: name.clone(),
            job_id: None,
            submission: submission.clone(),
            tasks,
        };
        // Recorded before submitting: a coordinator killed right after `sbatch` finds its array by name.
        self.write_active(&active)?;
        let last = active.tasks.len() - 1;
        let array = match self.options.max_parallel {
            Some(k) => format!("0-{last}%{k}"),
            None => format!("0-{last}"),
        };
        let mut command = Command::new("sbatch");
        command
            .arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--array={array}"))
            .arg(format!("--output={}", logs.join("%A_%a.out").display()))
            .arg(format!("--chdir={}", submission.display()));
        if let Some(p) = &self.options.partition {
            command.arg(format!("--partition={p}"));
        }
        if self.options.gpus_per_trial > 0 {
            command.arg(format!("--gres=gpu:{}", self.options.gpus_per_trial));
        }
        if let Some(t) = &self.options.time {
            command.arg(format!("--time={t}"));
        }
        command.args(&self.options.sbatch_args).arg(&script);
        let out = run_command(&mut command, "sbatch")?;
        // `--parsable` prints `jobid` or `jobid;cluster`.
        let job_id = out.trim().split(';').next().unwrap_or("").to_string();
        if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::msg(format!("sbatch printed no job id: {out:?}")));
        }
        active.job_id = Some(job_id.clone());
        self.write_active(&active)?;
        (self.notify)(&format!(
            "submitted Slurm array {job_id} ({} task(s), logs in {})",
            active.tasks.len(),
            logs.display()
        ));
        Ok(active)
    }

    /// The array's tasks as Slurm knows them; `None` when Slurm no longer knows the job.
    fn look(&self, job_id: &str) -> Result<Option<Vec<TaskState>>> {
        let out = Command::new("scontrol")
            .args(["-o", "show", "job", job_id])
            .output()
            .map_err(|e| Error::msg(format!("scontrol: cannot run it ({e})")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(Error::msg(format!(
                "scontrol show job {job_id} failed: {}",
                stderr.trim()
            )));
        }
        Ok(Some(parse_show_job(&String::from_utf8_lossy(&out.stdout))))
    }

    /// The id of the array named `name` (a submission whose id was not recorded), if Slurm knows it.
    fn find_by_name(&self, name: &str) -> Result<Option<String>> {
        let out = run_command(
            Command::new("squeue").args(["-h", "-t", "all", "--name", name, "-o", "%F"]),
            "squeue",
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from))
    }

    /// Records a task that ended without a result; returns the trials to store as failed (retries spent).
    fn task_failed(
        &mut self,
        active: &ActiveArray,
        job: &str,
        index: usize,
        state: &str,
        exit_code: &str,
    ) -> Result<Vec<(String, String)>> {
        let log = active
            .submission
            .join("logs")
            .join(format!("{job}_{index}.out"));
        let mut spent = Vec::new();
        for trial in &active.tasks[index] {
            let attempt = {
                let n = self.failures.entry(trial.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let line = serde_json::to_string(&Failure {
                trial,
                job,
                task: index,
                state,
                exit_code,
                log: log.display().to_string(),
                attempt,
            })
            .map_err(|e| Error::msg(format!("serialising a failure: {e}")))?;
            let path = self.dir.join("failures.jsonl");
            crate::store::append_line(&path, &line)?;
            (self.notify)(&format!(
                "Slurm task {job}_{index} ended {state} (exit {exit_code}) without a result for trial {trial}; log: {}{}",
                log.display(),
                if attempt > self.options.retries { "; no retries left" } else { "; resubmitting" }
            ));
            if attempt > self.options.retries {
                spent.push((
                    trial.clone(),
                    format!(
                        "Slurm task ended {state} (exit {exit_code}) {attempt} time(s); last log {}",
                        log.display()
                    ),
                ));
            }
        }
        Ok(spent)
    }

    /// Waits for `active` to finish, handing over results as they appear. Returns the trials to submit again.
    fn drain(
        &mut self,
        active: &ActiveArray,
        pending: &mut BTreeMap<String, TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
    ) -> Result<()> {
        let job = match &active.job_id {
            Some(id) => Some(id.clone()),
            None => self.find_by_name(&active.name)?,
        };
        let mut settled = vec![false; active.tasks.len()];
        loop {
            // Results first: a task writes its result before Slurm calls it finished.
            for (index, trials) in active.tasks.iter().enumerate() {
                if settled[index] {
                    continue;
                }
                let mut all = true;
                for id in trials {
                    let Some(trial) = pending.get(id).cloned() else {
                        continue;
                    };
                    if hand_over(&self.results_dir(), &trial, done)? {
                        pending.remove(id);
                    } else {
                        all = false;
                    }
                }
                if all {
                    settled[index] = true;
                }
            }
            if settled.iter().all(|&s| s) {
                return Ok(());
            }
            if stop.load(Ordering::SeqCst) {
                self.interrupted(job.as_deref(), &settled)?;
                return Err(Error::msg(INTERRUPTED));
            }
            let states = match &job {
                Some(id) => self.look(id)?,
                None => None,
            };
            let by_index: BTreeMap<usize, TaskState> = states
                .iter()
                .flatten()
                .map(|t| (t.index, t.clone()))
                .collect();
            let job_name = job.clone().unwrap_or_else(|| active.name.clone());
            for index in 0..active.tasks.len() {
                if settled[index] {
                    continue;
                }
                let (state, exit_code) = match (&states, by_index.get(&index)) {
                    (Some(_), Some(task)) if is_finished(&task.state) => {
                        (task.state.clone(), task.exit_code.clone())
                    }
                    (Some(_), Some(_)) => continue,
                    // Known array without this task: a pending task cancelled on its own vanishes.
                    (Some(_), None) => ("CANCELLED".to_string(), "-".to_string()),
                    (None, _) => (
                        "UNKNOWN (Slurm no longer knows the job)".to_string(),
                        "-".to_string(),
                    ),
                };
                // A result may have landed between the two looks.
                if active.tasks[index]
                    .iter()
                    .filter(|id| pending.contains_key(*id))
                    .any(|id| result_path(&self.results_dir(), id).exists())
                {
                    continue;
                }
                settled[index] = true;
                for (id, message) in
                    self.task_failed(active, &job_name, index, &state, &exit_code)?
                {
                    if let Some(trial) = pending.remove(&id) {
                        done(&trial, failed_outcome(message))?;
                    }
                }
            }
            if !settled.iter().all(|&s| s) {
                std::thread::sleep(self.options.poll);
            }
        }
    }

    /// Ctrl-C: asks whether to cancel the array; otherwise leaves it running for the next coordinator to adopt.
    fn interrupted(&self, job: Option<&str>, settled: &[bool]) -> Result<()> {
        let Some(job) = job else { return Ok(()) };
        let open = settled.iter().filter(|s| !**s).count();
        let question = format!("cancel Slurm array {job} ({open} task(s) not finished)?");
        if (self.confirm_cancel)(&question) {
            run_command(Command::new("scancel").arg(job), "scancel")?;
            self.clear_active()?;
            (self.notify)(&format!("cancelled Slurm array {job}"));
        } else {
            (self.notify)(&format!(
                "Slurm array {job} keeps running; rerun the same command to collect its results"
            ));
        }
        Ok(())
    }
}

/// The Slurm array a coordinator of `results_dir` left in flight (its job id, or its job name when the id was never
/// recorded), if any: a local run must not train those trials beside it.
pub fn array_in_flight(results_dir: &Path) -> Result<Option<String>> {
    let path = results_dir.join("slurm").join("active.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let active: ActiveArray = serde_json::from_str(&text).map_err(|e| Error::Data {
                path: path.clone(),
                line: 1,
                message: format!("unreadable record of the array in flight: {e}"),
            })?;
            Ok(Some(active.job_id.unwrap_or(active.name)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The stored outcome of a trial whose tasks never produced a result.
fn failed_outcome(message: String) -> TrialOutcome {
    TrialOutcome {
        status: TrialStatus::Failed { message },
        metrics: BTreeMap::new(),
        primary: None,
        trainable_params: 0,
        head_params: 0,
        seconds: 0.0,
        device: None,
        reference: None,
    }
}

impl TrialPool for SlurmPool<'_> {
    fn run_batch(
        &mut self,
        trials: Vec<TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
    ) -> Result<()> {
        std::fs::create_dir_all(self.results_dir())
            .map_err(|e| Error::io(self.results_dir(), e))?;
        // Results a task wrote while no coordinator was watching are handed over first.
        let mut pending: BTreeMap<String, TrialSpec> = BTreeMap::new();
        for trial in trials {
            if !hand_over(&self.results_dir(), &trial, done)? {
                pending.insert(trial.id.clone(), trial);
            }
        }
        // An array left by an earlier coordinator: wait for what it still runs of ours.
        if let Some(mut active) = self.read_active()? {
            if active.job_id.is_none() {
                // Killed around `sbatch`: the array exists only if Slurm knows its name.
                active.job_id = self.find_by_name(&active.name)?;
            }
            let ours: BTreeSet<&String> = active.tasks.iter().flatten().collect();
            if active.job_id.is_some() && ours.iter().any(|id| pending.contains_key(*id)) {
                (self.notify)(&format!(
                    "adopting Slurm array {} left by an earlier run",
                    active.job_id.as_deref().unwrap_or(&active.name)
                ));
                self.drain(&active, &mut pending, stop, done)?;
            }
            self.clear_active()?;
        }
        while !pending.is_empty() {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::msg(INTERRUPTED));
            }
            let per_task = self.options.trials_per_task.max(1);
            let trials: Vec<TrialSpec> = pending.values().cloned().collect();
            let groups: Vec<Vec<TrialSpec>> =
                trials.chunks(per_task).map(<[TrialSpec]>::to_vec).collect();
            let active = self.submit(groups)?;
            self.drain(&active, &mut pending, stop, done)?;
            self.clear_active()?;
        }
        Ok(())
    }
}
