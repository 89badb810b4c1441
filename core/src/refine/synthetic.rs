//! A synthetic design space and trial executor: deterministic fake scores computed from the design text in
//! microseconds. They let the refinement runner, the result store and the reports be tested end to end without a
//! model; `peftspace run` uses them when `PEFTSPACE_EXECUTOR=synthetic` is set (a documented development mode).
//!
//! The fake scores favour spindle grouping, uniform allocation, more tuned groups and mixed strategy sets, with
//! seeded noise, and a small fraction of trials "diverge", so every branch of the statistics is exercised.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::spec::{Dimension, TaskSpec};
use crate::{Error, Result};

use super::search_space::{DesignRecord, SearchSpace};
use crate::trial::TrialExecutor;
use crate::trial::{child_seed, Split, TrialOutcome, TrialSpec, TrialStatus};

const GROUPINGS: [&str; 5] = [
    "increasing",
    "uniform",
    "decreasing",
    "spindle",
    "bottleneck",
];
const ALLOCATIONS: [&str; 3] = ["increasing", "uniform", "decreasing"];
/// The synthetic backbone: 12 layers of 1,000,000 parameters each.
const BACKBONE_PARAMS: u64 = 12_000_000;
/// The reference score of every synthetic task: a balanced binary task's majority class. Synthetic scores sit
/// near 0.7, so synthetic designs learn.
const SYNTHETIC_REFERENCE: f64 = 0.5;

/// A space over named patterns; constraints fix a dimension to one candidate.
#[derive(Debug, Clone)]
pub struct SyntheticSpace {
    groups: usize,
    strategies: Vec<String>,
    budget: f64,
    grouping: Option<String>,
    allocation: Option<String>,
    tuned: Option<String>,
    sets: BTreeMap<usize, String>,
}

impl SyntheticSpace {
    pub fn new(groups: usize, strategies: Vec<String>, budget: f64) -> Self {
        SyntheticSpace {
            groups: groups.max(1),
            strategies,
            budget,
            grouping: None,
            allocation: None,
            tuned: None,
            sets: BTreeMap::new(),
        }
    }

    fn target(&self) -> u64 {
        (BACKBONE_PARAMS as f64 * self.budget).round() as u64
    }
}

impl SearchSpace for SyntheticSpace {
    fn constrain(&self, dimension: Dimension, candidate: &str) -> Result<Box<dyn SearchSpace>> {
        let mut next = self.clone();
        match dimension {
            Dimension::Grouping => next.grouping = Some(candidate.to_string()),
            Dimension::Allocation => next.allocation = Some(candidate.to_string()),
            Dimension::TunedGroups => {
                if candidate.len() != self.groups
                    || !candidate.chars().all(|c| c == '0' || c == '1')
                {
                    return Err(Error::msg(format!(
                        "tuned-groups candidate `{candidate}` must be {} characters of 0 and 1",
                        self.groups
                    )));
                }
                if !candidate.contains('1') {
                    return Err(Error::msg(format!(
                        "tuned-groups candidate `{candidate}` tunes no group"
                    )));
                }
                next.tuned = Some(candidate.to_string());
            }
            Dimension::Strategies(group) => {
                if group >= self.groups {
                    return Err(Error::msg(format!(
                        "strategy stage names group {group}, but there are {}",
                        self.groups
                    )));
                }
                if let Some(tuned) = &self.tuned {
                    if tuned.as_bytes().get(group) == Some(&b'0') {
                        return Err(Error::msg(format!(
                            "group {group} is not tuned (tuned groups {tuned})"
                        )));
                    }
                }
                next.sets.insert(group, candidate.to_string());
            }
        }
        Ok(Box::new(next))
    }

    fn sample(&self, seed: u64) -> Result<DesignRecord> {
        let mut state = seed;
        let mut pick = |n: usize| {
            state = child_seed(state, &["pick"]);
            (state % n as u64) as usize
        };
        let grouping = self
            .grouping
            .clone()
            .unwrap_or_else(|| GROUPINGS[pick(GROUPINGS.len())].to_string());
        let allocation = self
            .allocation
            .clone()
            .unwrap_or_else(|| ALLOCATIONS[pick(ALLOCATIONS.len())].to_string());
        let tuned = match &self.tuned {
            Some(t) => t.clone(),
            None => loop {
                let bits: String = (0..self.groups)
                    .map(|_| if pick(2) == 1 { '1' } else { '0' })
                    .collect();
                if bits.contains('1') {
                    break bits;
                }
            },
        };
        let sets: Vec<String> = (0..self.groups)
            .map(|g| {
                if tuned.as_bytes()[g] == b'0' {
                    return "-".to_string();
                }
                if let Some(set) = self.sets.get(&g) {
                    return set.clone();
                }
                loop {
                    let chosen: Vec<&str> = self
                        .strategies
                        .iter()
                        .filter(|_| pick(2) == 1)
                        .map(String::as_str)
                        .collect();
                    if !chosen.is_empty() {
                        break chosen.join("+");
                    }
                }
            })
            .collect();
        let variant = pick(1_000_000);
        let strategy_sets = sets.join("|");
        let target = self.target();
        Ok(DesignRecord {
            text: format!("grouping={grouping} allocation={allocation} tuned={tuned} strategies={strategy_sets} variant={variant}"),
            group_sizes: grouping,
            allocation,
            tuned_groups: tuned,
            strategy_sets,
            target_params: target,
            planned_params: target,
            backbone_params: BACKBONE_PARAMS,
            draws: 1,
            rejected: 0,
        })
    }

    fn baseline(&self, name: &str) -> Result<DesignRecord> {
        let all_ones = "1".repeat(self.groups);
        if crate::design::is_design_text(name) {
            // A design text: scored like a sampled design from whatever fields it names.
            return Ok(DesignRecord {
                text: name.to_string(),
                group_sizes: "given".into(),
                allocation: "given".into(),
                tuned_groups: all_ones,
                strategy_sets: "given".into(),
                target_params: self.target(),
                planned_params: self.target(),
                backbone_params: BACKBONE_PARAMS,
                draws: 0,
                rejected: 0,
            });
        }
        let (sets, planned) = if name == "full" {
            ("full".to_string(), BACKBONE_PARAMS)
        } else if self.strategies.iter().any(|s| s == name) {
            (vec![name; self.groups].join("|"), self.target())
        } else {
            return Err(Error::msg(format!(
                "unknown baseline `{name}`; known: full, {}",
                self.strategies.join(", ")
            )));
        };
        Ok(DesignRecord {
            text: format!("baseline={name}"),
            group_sizes: "uniform".into(),
            allocation: "uniform".into(),
            tuned_groups: all_ones,
            strategy_sets: sets,
            target_params: self.target(),
            planned_params: planned,
            backbone_params: BACKBONE_PARAMS,
            draws: 0,
            rejected: 0,
        })
    }

    fn inapplicable(&self, dimension: Dimension) -> Option<String> {
        match (dimension, &self.tuned) {
            (Dimension::Strategies(group), Some(tuned))
                if tuned.as_bytes().get(group) == Some(&b'0') =>
            {
                Some(format!("group {group} is not tuned (tuned groups {tuned})"))
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        format!(
            "synthetic: grouping={} allocation={} tuned={} sets={:?}",
            self.grouping.as_deref().unwrap_or("any"),
            self.allocation.as_deref().unwrap_or("any"),
            self.tuned.as_deref().unwrap_or("any"),
            self.sets
        )
    }
}

/// Scores trials from their design text; optionally sleeps to mimic training time.
#[derive(Debug, Clone, Default)]
pub struct SyntheticExecutor {
    /// Pause per trial (to test progress, parallelism and killing mid-stage).
    pub sleep: Duration,
    /// Designs whose text contains this string always diverge (to test empty populations).
    pub diverge_when_contains: Option<String>,
    /// Designs whose text contains this string fail (to test `--retry-failed`).
    pub fail_when_contains: Option<String>,
    /// A file that gets one line with the trial id each time a trial completes (to prove none runs twice).
    pub log: Option<std::path::PathBuf>,
    /// The device name recorded in each outcome (nothing runs on it: this tests which worker got which device).
    pub device: Option<String>,
    /// A marker file: the first trial to find it missing creates it and ends the whole process with exit code 3,
    /// as a crashing trial would (to test how schedulers' failed tasks are recorded and retried).
    pub crash_once: Option<std::path::PathBuf>,
    /// Scores with a known truth (true candidate means and a within-candidate sd), for simulating how stages decide;
    /// designs it does not match keep the default model.
    pub scores: Option<SyntheticScores>,
}

/// Known true means and a within-candidate sd: a design whose text contains one of `means`' patterns (the first
/// that matches) scores that mean plus normal noise of sd `sd`, drawn from the trial's seed and text. Read from
/// `PEFTSPACE_SYNTHETIC_MEANS` (`PATTERN:MEAN,…`, e.g. `grouping=spindle:0.72,grouping=uniform:0.70`) and
/// `PEFTSPACE_SYNTHETIC_SD` (default 0.01).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticScores {
    pub means: Vec<(String, f64)>,
    pub sd: f64,
}

impl SyntheticScores {
    /// Parses `PATTERN:MEAN,…` and an sd.
    pub fn parse(means: &str, sd: f64) -> Result<Self> {
        let mut parsed = Vec::new();
        for item in means.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (pattern, mean) = item.rsplit_once(':').ok_or_else(|| {
                Error::msg(format!(
                    "PEFTSPACE_SYNTHETIC_MEANS: `{item}` is not PATTERN:MEAN (e.g. grouping=spindle:0.72)"
                ))
            })?;
            let mean: f64 = mean.trim().parse().map_err(|_| {
                Error::msg(format!(
                    "PEFTSPACE_SYNTHETIC_MEANS: `{mean}` in `{item}` is not a number"
                ))
            })?;
            parsed.push((pattern.trim().to_string(), mean));
        }
        if !(sd.is_finite() && sd >= 0.0) {
            return Err(Error::msg(format!(
                "PEFTSPACE_SYNTHETIC_SD: {sd} is not a standard deviation (a number ≥ 0, e.g. 0.01)"
            )));
        }
        Ok(SyntheticScores { means: parsed, sd })
    }

    /// The score of the design `text` under noise key `key`, or `None` when no pattern matches it.
    pub fn score(&self, text: &str, key: &str) -> Option<f64> {
        let (_, mean) = self.means.iter().find(|(p, _)| text.contains(p.as_str()))?;
        Some(mean + self.sd * standard_normal(key))
    }
}

/// A standard normal draw fixed by `key` (Box–Muller on two uniforms in (0, 1)).
fn standard_normal(key: &str) -> f64 {
    let open =
        |part: &str| ((child_seed(0, &[key, part]) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (open("u1"), open("u2"));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SyntheticExecutor {
    /// Reads `PEFTSPACE_SYNTHETIC_SLEEP_MS`, `PEFTSPACE_SYNTHETIC_DIVERGE` and `PEFTSPACE_SYNTHETIC_FAIL` (substrings
    /// of design texts), `PEFTSPACE_SYNTHETIC_LOG` and `PEFTSPACE_SYNTHETIC_CRASH_ONCE` (file paths),
    /// `PEFTSPACE_SYNTHETIC_MEANS` and `PEFTSPACE_SYNTHETIC_SD` ([`SyntheticScores`]).
    pub fn from_env() -> Result<Self> {
        let sleep_ms = std::env::var("PEFTSPACE_SYNTHETIC_SLEEP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let scores = match std::env::var("PEFTSPACE_SYNTHETIC_MEANS") {
            Ok(means) if !means.trim().is_empty() => {
                let sd = match std::env::var("PEFTSPACE_SYNTHETIC_SD") {
                    Ok(v) => v.trim().parse().map_err(|_| {
                        Error::msg(format!(
                            "PEFTSPACE_SYNTHETIC_SD: `{v}` is not a number (e.g. 0.01)"
                        ))
                    })?,
                    Err(_) => 0.01,
                };
                Some(SyntheticScores::parse(&means, sd)?)
            }
            _ => None,
        };
        Ok(SyntheticExecutor {
            sleep: Duration::from_millis(sleep_ms),
            diverge_when_contains: std::env::var("PEFTSPACE_SYNTHETIC_DIVERGE")
                .ok()
                .filter(|s| !s.is_empty()),
            fail_when_contains: std::env::var("PEFTSPACE_SYNTHETIC_FAIL")
                .ok()
                .filter(|s| !s.is_empty()),
            log: std::env::var_os("PEFTSPACE_SYNTHETIC_LOG").map(std::path::PathBuf::from),
            device: None,
            crash_once: std::env::var_os("PEFTSPACE_SYNTHETIC_CRASH_ONCE")
                .map(std::path::PathBuf::from),
            scores,
        })
    }
}

fn uniform(seed: u64, path: &[&str]) -> f64 {
    (child_seed(seed, path) >> 11) as f64 / (1u64 << 53) as f64
}

impl TrialExecutor for SyntheticExecutor {
    fn backbone_identity(&self) -> Result<String> {
        Ok("synthetic-backbone-v1".into())
    }

    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        Ok(format!("synthetic-data:{}", task.id))
    }

    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        if trial.save.is_some() {
            return Err(Error::msg(
                "the synthetic executor trains nothing, so it has no design to save; leave out `final_runs.save`",
            ));
        }
        if let Some(marker) = &self.crash_once {
            // `create_new` makes exactly one process win, however many run at once.
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
                .is_ok()
            {
                std::process::exit(3);
            }
        }
        // The pause is cut into 10 ms "steps" that each honour a stop request, like the trainer's steps.
        let step = Duration::from_millis(10);
        let mut slept = Duration::ZERO;
        while slept < self.sleep {
            crate::interrupt::check()?;
            let nap = step.min(self.sleep - slept);
            std::thread::sleep(nap);
            slept += nap;
        }
        if let Some(path) = &self.log {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            file.write_all(format!("{}\n", trial.id).as_bytes())
                .map_err(|e| Error::io(path, e))?;
        }
        let text = &trial.design;
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .unwrap_or("")
                .to_string()
        };
        let grouping_bonus = match field("grouping").as_str() {
            "spindle" => 0.03,
            "uniform" => 0.02,
            "bottleneck" => 0.0,
            _ => 0.01,
        };
        let allocation_bonus = if field("allocation") == "uniform" {
            0.015
        } else {
            0.0
        };
        let tuned_bonus = 0.008 * field("tuned").chars().filter(|&c| c == '1').count() as f64;
        let sets = field("strategies");
        let distinct: std::collections::BTreeSet<&str> =
            sets.split('|').filter(|s| *s != "-").collect();
        let mix_bonus = 0.004 * distinct.len() as f64;
        let baseline_bonus = match field("baseline").as_str() {
            "full" => 0.06,
            "" => 0.0,
            _ => 0.02,
        };
        // The split is part of the noise: a design scores differently on the validation split and on the dev set.
        let key = match trial.split {
            Split::Dev => format!("{}|{}|{}", text, trial.task.id, trial.seed),
            Split::Validation { fraction, seed } => format!(
                "{}|{}|{}|validation {fraction} {seed}",
                text, trial.task.id, trial.seed
            ),
            Split::SpareRows { rows, seed } => format!(
                "{}|{}|{}|spare rows {rows} {seed}",
                text, trial.task.id, trial.seed
            ),
        };
        let noise = 0.06 * (uniform(0, &[&key, "noise"]) - 0.5);
        let diverged = self
            .diverge_when_contains
            .as_deref()
            .is_some_and(|s| text.contains(s))
            || uniform(0, &[&key, "diverge"]) < 0.03;
        let seconds = 1.0 + (uniform(0, &[&key, "seconds"]) * 100.0).round() / 100.0;
        let trainable_params = if field("baseline") == "full" {
            BACKBONE_PARAMS
        } else {
            (BACKBONE_PARAMS as f64 * trial.budget).round() as u64
        };
        if self
            .fail_when_contains
            .as_deref()
            .is_some_and(|s| text.contains(s))
        {
            return Ok(TrialOutcome {
                status: TrialStatus::Failed {
                    message: "synthetic failure (PEFTSPACE_SYNTHETIC_FAIL)".into(),
                },
                metrics: BTreeMap::new(),
                primary: None,
                trainable_params,
                head_params: 770,
                seconds,
                device: self.device.clone(),
                reference: Some(SYNTHETIC_REFERENCE),
            });
        }
        if diverged {
            return Ok(TrialOutcome {
                status: TrialStatus::Diverged {
                    step: 1 + child_seed(0, &[&key]) % 50,
                },
                metrics: BTreeMap::new(),
                primary: None,
                trainable_params,
                head_params: 770,
                seconds,
                reference: Some(SYNTHETIC_REFERENCE),
                device: self.device.clone(),
            });
        }
        let known = self
            .scores
            .as_ref()
            .and_then(|s| s.score(text, &format!("{key}|score")));
        let primary = known
            .unwrap_or(
                0.7 + grouping_bonus
                    + allocation_bonus
                    + tuned_bonus
                    + mix_bonus
                    + baseline_bonus
                    + noise,
            )
            .clamp(0.0, 1.0);
        // Round like a dev-set accuracy over 1,000 examples, so ties occur as they do with real scores.
        let primary = (primary * 1000.0).round() / 1000.0;
        Ok(TrialOutcome {
            status: TrialStatus::Ok,
            metrics: [("accuracy".to_string(), primary)].into_iter().collect(),
            primary: Some(primary),
            trainable_params,
            head_params: 770,
            seconds,
            reference: Some(SYNTHETIC_REFERENCE),
            device: self.device.clone(),
        })
    }
}
