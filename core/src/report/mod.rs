//! Outputs of a results directory, rebuilt from `plan.json` and the trial store alone:
//! `trials.csv`, `stages.csv`, `final.csv` and one `edf_<stage>.svg` per stage.
//!
//! Every file is written through a temporary file and a rename, so a kill never leaves a torn CSV row.

mod edf_plot;
pub mod effects;
pub mod final_comparison;
mod tables;

use std::fs;
use std::path::{Path, PathBuf};

use crate::refine::{decide_stage, SearchPlan, StageDecision};
use crate::spec::DecisionRule;
use crate::store::{self, ResultStore};
use crate::{Error, Result};

pub use tables::{final_csv, final_table, stages_csv, trials_csv};

/// What `write_reports` produced.
#[derive(Debug)]
pub struct Report {
    pub decisions: Vec<StageDecision>,
    pub files: Vec<PathBuf>,
    /// The final runs for the terminal ([`final_table`]), when the experiment has them.
    pub final_table: Option<String>,
    /// The search's learning-curve pruning rule in words, when it was on.
    pub pruning: Option<String>,
}

impl Report {
    /// What `run` and `report` print: the stage table, each stage's summary, the final runs, the files written.
    pub fn to_terminal(&self) -> String {
        let mut out = decisions_table(&self.decisions);
        out.push('\n');
        if let Some(rule) = &self.pruning {
            let pruned: usize = self
                .decisions
                .iter()
                .flat_map(|d| &d.candidates)
                .map(|c| c.trials_pruned)
                .sum();
            out.push_str(&format!(
                "learning-curve pruning was on ({rule}): {pruned} search trials pruned; their partial scores \
                 count in their populations\n"
            ));
        }
        for d in &self.decisions {
            out.push_str(&d.summary);
            out.push('\n');
        }
        if let Some(table) = &self.final_table {
            out.push('\n');
            out.push_str(table);
        }
        out.push_str("wrote:\n");
        for f in &self.files {
            out.push_str(&format!("  {}\n", f.display()));
        }
        out
    }
}

/// Reads `plan.json` of a results directory.
pub fn read_plan(dir: &Path) -> Result<SearchPlan> {
    let path = dir.join(store::PLAN_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::msg(format!(
                "{} has no {}: not a peftspace results directory, or its run has not planned a stage yet",
                dir.display(),
                store::PLAN_FILE
            ))
        } else {
            Error::io(&path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Data {
        path,
        line: e.line(),
        message: format!("unreadable plan ({e}); rerun `peftspace run` to rewrite it"),
    })
}

/// Replays a race over a stored run (`peftspace report DIR --replay-race …`): per stage, whether racing reaches the
/// decision of the stored populations and with how many of their trials. Reads the directory under a shared lock
/// and writes nothing.
pub fn race_replay(dir: &Path, race: &crate::spec::RaceSpec) -> Result<String> {
    let _lock = store::DirLock::acquire(dir, store::LockKind::Shared)?;
    let plan = read_plan(dir)?;
    let store = ResultStore::read(dir)?;
    let replays = crate::refine::replay_race(&plan, &store, race, decision_rule(&plan));
    Ok(crate::refine::replay_table(&replays))
}

fn decision_rule(plan: &SearchPlan) -> DecisionRule {
    match plan.decision_rule.as_str() {
        "HighestMedian" => DecisionRule::HighestMedian,
        _ => DecisionRule::HighestMean,
    }
}

/// Decides every planned stage from the stored trials.
pub fn decisions(plan: &SearchPlan, store: &ResultStore) -> Vec<StageDecision> {
    let rule = decision_rule(plan);
    plan.stages
        .iter()
        .map(|s| decide_stage(s, store, rule, plan.diverged, plan.margin()))
        .collect()
}

/// Writes all outputs into `dir` (reading the store in `dir` without modifying it) under a shared lock of the
/// directory: refused with [`Error::Locked`] while a run holds it, since that run rewrites these files when it
/// ends. A run that holds the store open calls [`write_reports_for`] instead.
pub fn write_reports(dir: &Path) -> Result<Report> {
    let _lock = store::DirLock::acquire(dir, store::LockKind::Shared)?;
    let plan = read_plan(dir)?;
    let store = ResultStore::read(dir)?;
    write_reports_from(dir, &plan, &store)
}

/// Writes all outputs of the directory of a store opened for appending (whose lock this process holds, so
/// [`write_reports`] would refuse). The trials are read back from the file rather than taken from memory, so the
/// tables are byte for byte those `peftspace report` writes later (a float parsed from JSON may print shorter than
/// the value that was stored).
pub fn write_reports_for(store: &ResultStore) -> Result<Report> {
    let plan = read_plan(store.dir())?;
    let on_disk = ResultStore::read(store.dir())?;
    write_reports_from(store.dir(), &plan, &on_disk)
}

/// Writes all outputs for a plan and store already in memory.
pub fn write_reports_from(dir: &Path, plan: &SearchPlan, store: &ResultStore) -> Result<Report> {
    let decisions = decisions(plan, store);
    let mut files = Vec::new();
    let mut put = |name: String, text: String| -> Result<()> {
        let path = dir.join(name);
        store::write_atomically(&path, &text)?;
        files.push(path);
        Ok(())
    };
    put("trials.csv".into(), trials_csv(plan, store)?)?;
    put("stages.csv".into(), stages_csv(plan, &decisions)?)?;
    let mut final_text = None;
    if plan.final_runs.is_some() {
        put("final.csv".into(), final_csv(plan, store)?)?;
        final_text = Some(final_table(plan, store)?);
    }
    for decision in decisions.iter().filter(|d| !d.candidates.is_empty()) {
        let svg = edf_plot::edf_svg(decision)?;
        put(format!("edf_{}.svg", file_safe(&decision.stage)), svg)?;
    }
    Ok(Report {
        decisions,
        files,
        final_table: final_text,
        pruning: plan.pruning.clone(),
    })
}

/// Keeps letters, digits, `-` and `_`; anything else becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A plain-text table of the decisions, for the terminal. Scores are fractions, as in the CSVs; `ref` is the
/// reference score (majority class or mean predictor) a population must beat to have learned anything; `MW p` is
/// the winner-vs-candidate Mann–Whitney p and `pairs p` the same after Holm's correction over every pair of
/// candidates (the selection-aware test behind `*`); `div` counts the designs with a diverged trial.
pub fn decisions_table(decisions: &[StageDecision]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<6} {:<22} {:>4} {:>4} {:>8} {:>8} {:>8} {:>8} {:>19} {:>8} {:>8}  {}\n",
        "stage",
        "candidate",
        "n",
        "div",
        "mean",
        "median",
        "std",
        "ref",
        "95% CI",
        "MW p",
        "pairs p",
        "chosen"
    ));
    for decision in decisions {
        for c in &decision.candidates {
            let ci = c.ci.map_or("-".to_string(), |ci| {
                format!("[{:.4}, {:.4}]", ci.low, ci.high)
            });
            let (p, holm) = c
                .versus_winner
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |v| {
                    (format!("{:.3}", v.u_p), format!("{:.3}", v.u_p_all_pairs))
                });
            let mut flags = Vec::new();
            if c.chosen {
                flags.push(
                    if decision.tied {
                        "- (no decision: all populations equal)"
                    } else if c.significant {
                        "*"
                    } else {
                        "* (not significant)"
                    }
                    .to_string(),
                );
            }
            if c.designs_learned == Some(0) {
                flags.push("did not learn".to_string());
            }
            if c.trials_pruned > 0 {
                flags.push(format!("{} pruned", c.trials_pruned));
            }
            if let Some((round, p)) = c.race.and_then(|r| Some((r.dropped_in?, r.drop_p?))) {
                flags.push(format!("dropped in round {round} (p = {p:.1e})"));
            }
            out.push_str(&format!(
                "{:<6} {:<22} {:>4} {:>4} {:>8} {:>8} {:>8} {:>8} {:>19} {:>8} {:>8}  {}\n",
                c.stage,
                c.candidate,
                c.n,
                c.designs_diverged,
                fmt4(c.mean),
                fmt4(c.median),
                fmt4(c.std),
                fmt4(c.reference),
                ci,
                p,
                holm,
                flags.join("; ")
            ));
        }
    }
    out
}

fn fmt4(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.4}")
    }
}
