//! Progress bars: one per stage with the candidate of the latest trial, trials done/total and ETA.

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peftspace_core::refine::{Progress, StageDecision};
use peftspace_core::trial::TrialRecord;

pub struct Bars {
    bar: Option<ProgressBar>,
    not_ok: usize,
    /// GPU memory per worker (empty unless workers run on CUDA), shown after the candidate.
    gpu_memory: Arc<Mutex<String>>,
    /// `--quiet`: no bars; stage tables and notes are still printed.
    quiet: bool,
}

impl Bars {
    pub fn new(gpu_memory: Arc<Mutex<String>>, quiet: bool) -> Self {
        Bars {
            bar: None,
            not_ok: 0,
            gpu_memory,
            quiet,
        }
    }

    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Bars {
    fn stage_started(&mut self, stage: &str, total: usize, done: usize) {
        self.clear();
        self.not_ok = 0;
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        let style = ProgressStyle::with_template(
            "{prefix:>6} [{elapsed_precise}] {bar:30} {pos}/{len} trials  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        bar.set_position(done as u64);
        // The ETA should come from trials run now, not from ones found in the store.
        bar.reset_eta();
        if done > 0 {
            bar.set_message(format!("({done} already stored)"));
        }
        self.bar = Some(bar);
    }

    fn trial_finished(&mut self, _stage: &str, candidate: &str, record: &TrialRecord) {
        if !record.outcome.status.is_ok() {
            self.not_ok += 1;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let extra = if self.not_ok > 0 {
                format!(", {} not ok", self.not_ok)
            } else {
                String::new()
            };
            let memory = self
                .gpu_memory
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default();
            let memory = if memory.is_empty() {
                memory
            } else {
                format!("  {memory}")
            };
            bar.set_message(format!("candidate {candidate}{extra}{memory}"));
        }
    }

    fn stage_decided(&mut self, decision: &StageDecision) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.print(&decision.summary);
    }

    fn note(&mut self, text: &str) {
        self.print(text);
    }
}
