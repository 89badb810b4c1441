//! Parallel trials in worker processes: the parent sends one population (a JSON array of trials, usually of one) per
//! line, a worker trains it and answers one line per trial.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use peftspace_core::refine::{population_span, populations, TrialPool, INTERRUPTED};
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use serde::{Deserialize, Serialize};

use crate::cmd::Global;

/// A worker's answer to one trial.
#[derive(Serialize, Deserialize)]
struct Answer {
    id: String,
    outcome: Option<TrialOutcome>,
    /// Set when the executor could not run the trial at all; the run stops.
    error: Option<String>,
    /// The trial was stopped on request (Ctrl-C) after a step; nothing of it is kept.
    #[serde(default)]
    interrupted: bool,
}

/// Worker side: reads populations from stdin until it closes, answers each of their trials on stdout.
pub fn serve_trials(executor: &dyn TrialExecutor) -> anyhow::Result<()> {
    super::signals::install_worker_handler();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading a population from the parent")?;
        if line.trim().is_empty() {
            continue;
        }
        let trials: Vec<TrialSpec> =
            serde_json::from_str(&line).context("parsing a population sent by the parent")?;
        let results = population_span(&trials).in_scope(|| executor.run_population(&trials));
        let answers: Vec<Answer> = match results {
            Ok(results) => trials
                .into_iter()
                .zip(results)
                .map(|(trial, result)| answer(trial, result))
                .collect(),
            Err(e) => {
                let interrupted = matches!(e, peftspace_core::Error::Interrupted);
                trials
                    .into_iter()
                    .map(|trial| Answer {
                        id: trial.id,
                        outcome: None,
                        interrupted,
                        error: Some(e.to_string()),
                    })
                    .collect()
            }
        };
        for answer in answers {
            serde_json::to_writer(&mut stdout, &answer)?;
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
    }
    Ok(())
}

fn answer(trial: TrialSpec, result: peftspace_core::Result<TrialOutcome>) -> Answer {
    match result {
        Ok(outcome) => Answer {
            id: trial.id,
            outcome: Some(outcome),
            error: None,
            interrupted: false,
        },
        Err(e) => Answer {
            id: trial.id,
            outcome: None,
            interrupted: matches!(e, peftspace_core::Error::Interrupted),
            error: Some(e.to_string()),
        },
    }
}

struct Worker {
    child: Child,
    input: Option<BufWriter<ChildStdin>>,
    /// The trials of the population it trains that it has not answered yet (empty: idle).
    busy: Vec<TrialSpec>,
}

/// Parent side: N worker processes, each fed one population at a time.
pub struct ProcessPool<'a> {
    /// Groups trials into populations ([`populations`]) of at most `population`.
    executor: &'a dyn TrialExecutor,
    population: usize,
    workers: Vec<Worker>,
    answers: mpsc::Receiver<(usize, Option<String>)>,
    /// Whether any worker runs on a GPU (then `gpu_memory` is refreshed after each trial).
    on_cuda: bool,
    gpu_memory: Arc<Mutex<String>>,
}

impl<'a> ProcessPool<'a> {
    /// Starts one copy of this program in worker mode per entry of `devices` (its `--device`, or the global one
    /// when `None`), with `threads` compute threads each; they train populations of up to `population` trials that
    /// `executor` groups.
    pub fn start(
        executor: &'a dyn TrialExecutor,
        population: usize,
        experiment: &Path,
        global: &Global,
        devices: &[Option<String>],
        threads: usize,
        gpu_memory: Arc<Mutex<String>>,
    ) -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().context("finding the peftspace executable to start workers")?;
        let (sender, answers) = mpsc::channel();
        let mut workers = Vec::with_capacity(devices.len());
        let on_cuda = devices
            .iter()
            .any(|d| d.as_deref().is_some_and(|d| d.starts_with("cuda")));
        for (index, device) in devices.iter().enumerate() {
            let mut command = Command::new(&exe);
            if let Some(model) = &global.model {
                command.arg("--model").arg(model);
            }
            if let Some(data) = &global.data_dir {
                command.arg("--data-dir").arg(data);
            }
            for plugin in &global.plugins {
                command.arg("--plugin").arg(plugin);
            }
            if global.offline {
                command.arg("--offline");
            }
            if let Some(device) = device.as_ref().or(global.device.as_ref()) {
                command.arg("--device").arg(device);
            }
            // Workers log like the parent (to the stderr they share with it); `RUST_LOG` reaches them as inherited.
            for _ in 0..global.verbose {
                command.arg("--verbose");
            }
            command
                .arg("--log-format")
                .arg(global.log_format.flag_value());
            command
                .arg("run")
                .arg(experiment)
                .arg("--worker")
                .env("RAYON_NUM_THREADS", threads.to_string())
                .env("OMP_NUM_THREADS", threads.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            super::signals::prepare_worker(&mut command);
            let mut child = command
                .spawn()
                .with_context(|| format!("starting worker {index} ({})", exe.display()))?;
            super::signals::joined_group(child.id());
            let stdout = child.stdout.take().context("worker stdout")?;
            let input = child.stdin.take().map(BufWriter::new);
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if sender.send((index, Some(l))).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                // End of output: the worker exited.
                let _ = sender.send((index, None));
            });
            workers.push(Worker {
                child,
                input,
                busy: Vec::new(),
            });
        }
        Ok(ProcessPool {
            executor,
            population,
            workers,
            answers,
            on_cuda,
            gpu_memory,
        })
    }

    fn send(&mut self, index: usize, population: Vec<TrialSpec>) -> peftspace_core::Result<()> {
        let worker = &mut self.workers[index];
        let fail = |e: std::io::Error| {
            peftspace_core::Error::msg(format!("sending trials to worker {index}: {e}"))
        };
        let input = worker
            .input
            .as_mut()
            .ok_or_else(|| peftspace_core::Error::msg("worker input closed"))?;
        let line = serde_json::to_string(&population).map_err(|e| {
            peftspace_core::Error::msg(format!("serialising a population of trials: {e}"))
        })?;
        input.write_all(line.as_bytes()).map_err(fail)?;
        input.write_all(b"\n").map_err(fail)?;
        input.flush().map_err(fail)?;
        worker.busy = population;
        Ok(())
    }
}

impl ProcessPool<'_> {
    /// GPU memory each worker holds, from `nvidia-smi` (which reports it per process), as `GPU MiB w0 1234, w1 …`.
    /// Left as it was when `nvidia-smi` is not there or fails.
    fn refresh_gpu_memory(&self) {
        let Ok(out) = Command::new("nvidia-smi")
            .args([
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ])
            .stderr(Stdio::null())
            .output()
        else {
            return;
        };
        if !out.status.success() {
            return;
        }
        let used = gpu_memory_by_pid(&String::from_utf8_lossy(&out.stdout));
        let parts: Vec<String> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| match used.get(&w.child.id()) {
                Some(mib) => format!("w{i} {mib}"),
                None => format!("w{i} -"),
            })
            .collect();
        if let Ok(mut text) = self.gpu_memory.lock() {
            *text = format!("GPU MiB {}", parts.join(", "));
        }
    }
}

/// `pid, used MiB` lines of `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`, summed
/// per process (a process may hold memory on several GPUs).
fn gpu_memory_by_pid(csv: &str) -> HashMap<u32, u64> {
    let mut used = HashMap::new();
    for line in csv.lines() {
        let mut fields = line.split(',').map(str::trim);
        if let (Some(Ok(pid)), Some(Ok(mib))) = (
            fields.next().map(str::parse::<u32>),
            fields.next().map(str::parse::<u64>),
        ) {
            *used.entry(pid).or_insert(0) += mib;
        }
    }
    used
}

impl TrialPool for ProcessPool<'_> {
    fn run_batch(
        &mut self,
        trials: Vec<TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> peftspace_core::Result<()>,
    ) -> peftspace_core::Result<()> {
        let mut queue = populations(trials, self.executor, self.population)?.into_iter();
        for index in 0..self.workers.len() {
            if let Some(population) = queue.next() {
                self.send(index, population)?;
            }
        }
        let mut stopped = false;
        // A trial that could not run, per worker, reported once the rest of its population is in.
        let mut failures: HashMap<usize, peftspace_core::Error> = HashMap::new();
        while self.workers.iter().any(|w| !w.busy.is_empty()) {
            let (index, line) = self
                .answers
                .recv()
                .map_err(|_| peftspace_core::Error::msg("all workers are gone"))?;
            let Some(line) = line else {
                let pending = std::mem::take(&mut self.workers[index].busy);
                return Err(peftspace_core::Error::msg(format!(
                    "worker {index} exited unexpectedly{}",
                    match pending.as_slice() {
                        [] => String::new(),
                        [t] => format!(" while running trial {} ({})", t.id, t.design),
                        [t, ..] => format!(
                            " while running {} trials of a population, trial {} ({}) among them",
                            pending.len(),
                            t.id,
                            t.design
                        ),
                    }
                )));
            };
            let answer: Answer = serde_json::from_str(&line).map_err(|e| {
                peftspace_core::Error::msg(format!("worker {index} sent an unreadable answer: {e}"))
            })?;
            let busy = &mut self.workers[index].busy;
            let trial = busy
                .iter()
                .position(|t| t.id == answer.id)
                .map(|at| busy.remove(at))
                .ok_or_else(|| {
                    peftspace_core::Error::msg(format!(
                        "worker {index} answered an unexpected trial"
                    ))
                })?;
            let idle = busy.is_empty();
            if self.on_cuda && idle {
                self.refresh_gpu_memory();
            }
            match (answer.outcome, answer.error) {
                (Some(outcome), _) => done(&trial, outcome)?,
                // Stopped on request after a step: not stored; the rerun trains it again.
                (None, _) if answer.interrupted => stopped = true,
                (None, error) => {
                    let error = peftspace_core::Error::msg(format!(
                        "trial {} could not run: {}",
                        trial.id,
                        error.unwrap_or_else(|| "no reason given".into())
                    ));
                    // The rest of its population has finished too: store those before the run stops.
                    if idle {
                        return Err(error);
                    }
                    failures.entry(index).or_insert(error);
                }
            }
            if idle {
                if let Some(error) = failures.remove(&index) {
                    return Err(error);
                }
            }
            if stop.load(Ordering::SeqCst) {
                stopped = true;
                continue;
            }
            if idle {
                if let Some(next) = queue.next() {
                    self.send(index, next)?;
                }
            }
        }
        if stopped {
            return Err(peftspace_core::Error::msg(INTERRUPTED));
        }
        Ok(())
    }
}

impl Drop for ProcessPool<'_> {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing its input ends a worker after its current trial.
            worker.input.take();
        }
        for worker in &mut self.workers {
            if !worker.busy.is_empty() {
                let _ = worker.child.kill();
            }
            let _ = worker.child.wait();
        }
        super::signals::workers_gone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_lines_are_summed_per_process() {
        let used = gpu_memory_by_pid("101, 1200\n102, 800\n101, 300\nnot a line\n");
        assert_eq!(used.get(&101), Some(&1500));
        assert_eq!(used.get(&102), Some(&800));
        assert_eq!(used.len(), 2);
    }
}
