//! The three CSV tables. Numbers are written in Rust's shortest round-trip form, so a reader gets back exactly
//! the values the statistics used; a missing value (NaN, no comparison) is an empty cell.

use std::collections::BTreeSet;

use crate::refine::{SearchPlan, StageDecision};
use crate::store::ResultStore;
use crate::trial::TrialStatus;
use crate::{Error, Result};

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or(String::new(), num)
}

fn finish(writer: csv::Writer<Vec<u8>>) -> Result<String> {
    let bytes = writer
        .into_inner()
        .map_err(|e| Error::msg(format!("cannot write CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::msg(format!("CSV is not UTF-8: {e}")))
}

fn write_row(writer: &mut csv::Writer<Vec<u8>>, row: &[String]) -> Result<()> {
    writer
        .write_record(row)
        .map_err(|e| Error::msg(format!("cannot write CSV: {e}")))
}

/// One row per planned trial (search stages, then final runs); trials not yet run have status `pending`.
pub fn trials_csv(plan: &SearchPlan, store: &ResultStore) -> Result<String> {
    let metric_names: BTreeSet<&str> = store
        .records()
        .iter()
        .flat_map(|r| r.outcome.metrics.keys().map(String::as_str))
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "trial_id",
        "stage",
        "candidate",
        "design_index",
        "design_seed",
        "design",
        "group_sizes",
        "allocation",
        "tuned_groups",
        "strategy_sets",
        "trainable_params",
        "target_params",
        "task",
        "seed",
        "scored_on",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(metric_names.iter().map(|m| format!("metric_{m}")));
    header.extend(
        [
            "primary",
            "status",
            "status_detail",
            "head_params",
            "seconds",
            "device",
            "reference",
            "learned",
        ]
        .map(String::from),
    );
    write_row(&mut w, &header)?;
    let mut rows: Vec<(
        String,
        String,
        String,
        String,
        &crate::refine::DesignRecord,
        &crate::refine::PlannedTrial,
    )> = Vec::new();
    for stage in &plan.stages {
        for candidate in &stage.candidates {
            for design in &candidate.designs {
                for trial in &design.trials {
                    rows.push((
                        stage.name.clone(),
                        candidate.name.clone(),
                        design.index.to_string(),
                        design.seed.to_string(),
                        &design.design,
                        trial,
                    ));
                }
            }
        }
    }
    if let Some(final_runs) = &plan.final_runs {
        for method in &final_runs.methods {
            for trial in &method.trials {
                rows.push((
                    "final".into(),
                    method.name.clone(),
                    String::new(),
                    String::new(),
                    &method.design,
                    trial,
                ));
            }
        }
    }
    for (stage, candidate, index, design_seed, design, trial) in rows {
        let record = store.get(&trial.id);
        let scored_on = plan.scored_on(&stage).to_string();
        let mut row = vec![
            trial.id.clone(),
            stage,
            candidate,
            index,
            design_seed,
            design.text.clone(),
            design.group_sizes.clone(),
            design.allocation.clone(),
            design.tuned_groups.clone(),
            design.strategy_sets.clone(),
            record
                .map_or(design.planned_params, |r| r.outcome.trainable_params)
                .to_string(),
            design.target_params.to_string(),
            trial.task.clone(),
            trial.seed.to_string(),
            scored_on,
        ];
        for m in &metric_names {
            row.push(
                record
                    .and_then(|r| r.outcome.metrics.get(*m).copied())
                    .map_or(String::new(), num),
            );
        }
        match record {
            Some(r) => {
                let detail = match &r.outcome.status {
                    TrialStatus::Ok => String::new(),
                    TrialStatus::Diverged { step } => format!("step {step}"),
                    TrialStatus::Failed { message } => message.clone(),
                    TrialStatus::Pruned { epoch } => format!("epoch {epoch}"),
                };
                row.extend([
                    opt(r.outcome.primary),
                    r.outcome.status.label().to_string(),
                    detail,
                    r.outcome.head_params.to_string(),
                    num(r.outcome.seconds),
                    r.outcome.device.clone().unwrap_or_default(),
                    opt(r.outcome.reference),
                    r.outcome.learned().map_or(String::new(), |l| l.to_string()),
                ]);
            }
            // primary, status, then detail, head_params, seconds, device, reference, learned.
            None => row.extend([
                String::new(),
                "pending".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
        write_row(&mut w, &row)?;
    }
    finish(w)
}

/// One row per candidate per stage with the population statistics and the comparison with the winner.
pub fn stages_csv(plan: &SearchPlan, decisions: &[StageDecision]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "stage",
        "dimension",
        "candidate",
        "chosen",
        "significant",
        "outcome",
        "designs_planned",
        "draws",
        "rejection_rate",
        "n",
        "trials_ok",
        "trials_diverged",
        "trials_failed",
        "trials_pruned",
        "trials_missing",
        "designs_run",
        "designs_diverged",
        "diverged_rate",
        "designs_failed",
        "failed_rate",
        "designs_at_chance",
        "mean",
        "median",
        "std",
        "ci_low",
        "ci_high",
        "ks_d",
        "ks_p",
        "ks_p_holm",
        "u",
        "u_p",
        "u_p_holm",
        "welch_t",
        "welch_p",
        "welch_p_holm",
        "u_p_all_pairs",
        "pairs_tested",
        "diff_ci_low",
        "diff_ci_high",
        "mean_diff",
        "p",
        "p_equivalence",
        "equivalence_margin",
        "mde",
        "designs_needed",
        "reference",
        "designs_learned",
        "dropped_in_round",
        "drop_p",
        "race_rounds",
        "race_trials",
        "race_trials_full",
        "pruning",
        "note",
    ];
    write_row(&mut w, &header.map(String::from))?;
    for (stage, decision) in plan.stages.iter().zip(decisions) {
        if let Some(reason) = &stage.skipped {
            let mut row = vec![String::new(); header.len()];
            row[0] = stage.name.clone();
            row[1] = stage.dimension.clone();
            row[3] = "false".into();
            row[4] = "false".into();
            row[header.len() - 1] = format!("stage skipped: {reason}");
            write_row(&mut w, &row)?;
            continue;
        }
        for c in &decision.candidates {
            let v = c.versus_winner.as_ref();
            let pick =
                |f: fn(&crate::refine::Comparison) -> f64| v.map_or(String::new(), |v| num(f(v)));
            let row = vec![
                stage.name.clone(),
                stage.dimension.clone(),
                c.candidate.clone(),
                c.chosen.to_string(),
                c.significant.to_string(),
                decision
                    .outcome
                    .as_ref()
                    .map_or("none".to_string(), |o| o.outcome.as_str().to_string()),
                c.designs_planned.to_string(),
                c.draws.to_string(),
                if c.draws == 0 {
                    String::new()
                } else {
                    num(c.rejected as f64 / c.draws as f64)
                },
                c.n.to_string(),
                c.trials_ok.to_string(),
                c.trials_diverged.to_string(),
                c.trials_failed.to_string(),
                c.trials_pruned.to_string(),
                c.trials_missing.to_string(),
                c.designs_run.to_string(),
                c.designs_diverged.to_string(),
                num(c.diverged_rate()),
                c.designs_failed.to_string(),
                num(c.failed_rate()),
                c.designs_at_chance.to_string(),
                num(c.mean),
                num(c.median),
                num(c.std),
                c.ci.map_or(String::new(), |ci| num(ci.low)),
                c.ci.map_or(String::new(), |ci| num(ci.high)),
                pick(|v| v.ks_d),
                pick(|v| v.ks_p),
                pick(|v| v.ks_p_holm),
                pick(|v| v.u),
                pick(|v| v.u_p),
                pick(|v| v.u_p_holm),
                pick(|v| v.welch_t),
                pick(|v| v.welch_p),
                pick(|v| v.welch_p_holm),
                pick(|v| v.u_p_all_pairs),
                decision.pairs_tested.to_string(),
                v.and_then(|v| v.diff_ci)
                    .map_or(String::new(), |ci| num(ci.low)),
                v.and_then(|v| v.diff_ci)
                    .map_or(String::new(), |ci| num(ci.high)),
                pick(|v| v.means.mean_diff),
                pick(|v| v.means.p),
                pick(|v| v.means.p_equivalence),
                decision
                    .outcome
                    .as_ref()
                    .map_or(String::new(), |o| num(o.margin)),
                decision
                    .outcome
                    .as_ref()
                    .map_or(String::new(), |o| num(o.mde)),
                decision
                    .outcome
                    .as_ref()
                    .and_then(|o| o.designs_needed)
                    .map_or(String::new(), |n| n.to_string()),
                num(c.reference),
                c.designs_learned.map_or(String::new(), |n| n.to_string()),
            ];
            let mut row = row;
            // Race columns: empty in a stage that did not race; `-` for a candidate the race kept.
            match (c.race, decision.race) {
                (Some(r), Some(stage_race)) => row.extend([
                    r.dropped_in.map_or("-".to_string(), |l| l.to_string()),
                    r.drop_p.map_or(String::new(), num),
                    format!("{}/{}", stage_race.looks_done, stage_race.looks_planned),
                    stage_race.trials_used.to_string(),
                    stage_race.trials_full.to_string(),
                ]),
                _ => row.extend(std::iter::repeat_n(String::new(), 5)),
            }
            row.push(plan.pruning.clone().unwrap_or_else(|| "-".into()));
            row.push(c.note.clone());
            write_row(&mut w, &row)?;
        }
    }
    finish(w)
}

/// One method of the final runs: per task and for the average over tasks, the scores over seeds.
struct FinalRow {
    method: String,
    design: String,
    trainable: u64,
    trainable_pct: String,
    /// Per task, then the average: the seeds' scores (the average is taken over tasks within each seed first).
    columns: Vec<Vec<f64>>,
    /// Per task, then the average: the mean reference score of the runs (NaN when unknown).
    references: Vec<f64>,
    ok: usize,
    not_ok: usize,
    /// The method's trials (task × seed, in plan order): a saved final design lives in `final/<trial id>/`.
    trial_ids: Vec<String>,
}

fn final_rows(plan: &SearchPlan, store: &ResultStore) -> Result<(Vec<String>, Vec<FinalRow>)> {
    let Some(final_runs) = &plan.final_runs else {
        return Err(Error::msg("the experiment has no final runs"));
    };
    let mut rows = Vec::new();
    for method in &final_runs.methods {
        let mut not_ok = 0;
        let mut ok = 0;
        let mut trainable = method.design.planned_params;
        let record = |task: &str, seed: u64| {
            let t = method
                .trials
                .iter()
                .find(|t| t.task == task && t.seed == seed)?;
            store.get(&t.id).filter(|r| r.outcome.status.is_ok())
        };
        let score = |task: &str, seed: u64| record(task, seed).and_then(|r| r.outcome.primary);
        for t in &method.trials {
            match store.get(&t.id) {
                Some(r) if r.outcome.status.is_ok() => {
                    ok += 1;
                    trainable = r.outcome.trainable_params;
                }
                Some(_) => not_ok += 1,
                None => {}
            }
        }
        let pct = if method.design.backbone_params > 0 {
            format!(
                "{:.4}",
                100.0 * trainable as f64 / method.design.backbone_params as f64
            )
        } else {
            String::new()
        };
        let mut columns = Vec::new();
        let mut references = Vec::new();
        for task in &final_runs.tasks {
            columns.push(
                final_runs
                    .seeds
                    .iter()
                    .filter_map(|&s| score(task, s))
                    .collect(),
            );
            let refs: Vec<f64> = final_runs
                .seeds
                .iter()
                .filter_map(|&s| record(task, s).and_then(|r| r.outcome.reference))
                .collect();
            references.push(crate::stats::summary(&refs).mean);
        }
        columns.push(
            final_runs
                .seeds
                .iter()
                .filter_map(|&s| {
                    let per_task: Option<Vec<f64>> =
                        final_runs.tasks.iter().map(|t| score(t, s)).collect();
                    per_task.map(|v| v.iter().sum::<f64>() / v.len() as f64)
                })
                .collect(),
        );
        let task_refs = &references[..];
        let average_ref = if task_refs.is_empty() {
            f64::NAN
        } else {
            task_refs.iter().sum::<f64>() / task_refs.len() as f64
        };
        references.push(average_ref);
        rows.push(FinalRow {
            method: method.name.clone(),
            design: method.design.text.clone(),
            trainable,
            trainable_pct: pct,
            columns,
            references,
            ok,
            not_ok,
            trial_ids: method.trials.iter().map(|t| t.id.clone()).collect(),
        });
    }
    let mut names = final_runs.tasks.clone();
    names.push("average".into());
    Ok((names, rows))
}

/// The tasks (and the average) on which a method's mean score does not beat the reference.
fn not_learned(row: &FinalRow, names: &[String]) -> Vec<String> {
    names
        .iter()
        .zip(row.columns.iter().zip(&row.references))
        .filter(|(_, (scores, reference))| {
            let mean = crate::stats::summary(scores).mean;
            !scores.is_empty()
                && crate::trial::beats_reference(Some(mean), Some(**reference)) == Some(false)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Paper-style table: one row per method, for each task and the average over tasks the mean primary score over
/// seeds (a fraction, as in every CSV), its standard deviation (ddof = 1) and the number of seeds; the average is
/// taken over tasks within each seed first. Trainable % is relative to the backbone's parameters. A last row,
/// `reference`, holds the tasks' reference scores (majority class or mean predictor); `note` names the tasks on
/// which a method did not beat them. `diff`, `diff_ci_low`, `diff_ci_high` and `p` compare `best1` with the row's
/// method, paired by (seed, task) (`super::final_comparison`; p Holm-adjusted over the methods compared).
pub fn final_csv(plan: &SearchPlan, store: &ResultStore) -> Result<String> {
    let (names, rows) = final_rows(plan, store)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "method".to_string(),
        "design".into(),
        "trainable_params".into(),
        "trainable_pct".into(),
    ];
    for name in &names {
        header.extend([name.clone(), format!("{name}_std"), format!("{name}_n")]);
    }
    header.extend([
        "diff".to_string(),
        "diff_ci_low".into(),
        "diff_ci_high".into(),
        "p".into(),
        "runs_ok".into(),
        "runs_not_ok".into(),
        "note".into(),
        "trial_ids".into(),
    ]);
    write_row(&mut w, &header)?;
    let comparisons = super::final_comparison::compare_final(plan, store);
    for row in &rows {
        let mut out = vec![
            row.method.clone(),
            row.design.clone(),
            row.trainable.to_string(),
            row.trainable_pct.clone(),
        ];
        for scores in &row.columns {
            let s = crate::stats::summary(scores);
            out.extend([
                if s.n == 0 { String::new() } else { num(s.mean) },
                if s.n < 2 { String::new() } else { num(s.std) },
                s.n.to_string(),
            ]);
        }
        // best1 − this method over (seed, task) pairs; empty on best1's own row.
        match comparisons.iter().find(|c| c.method == row.method) {
            Some(c) => out.extend([c.diff, c.ci_low, c.ci_high, c.p].map(|v| {
                if v.is_finite() {
                    num(v)
                } else {
                    String::new()
                }
            })),
            None => out.extend([String::new(), String::new(), String::new(), String::new()]),
        }
        let missed = not_learned(row, &names);
        out.extend([
            row.ok.to_string(),
            row.not_ok.to_string(),
            if missed.is_empty() {
                String::new()
            } else {
                format!("did not learn: {}", missed.join(", "))
            },
            row.trial_ids.join(" "),
        ]);
        write_row(&mut w, &out)?;
    }
    if let Some(first) = rows.first() {
        let mut out = vec![
            "reference".to_string(),
            "majority class / mean predictor".into(),
            "0".into(),
            "0.0000".into(),
        ];
        for reference in &first.references {
            out.extend([num(*reference), String::new(), String::new()]);
        }
        out.extend(std::iter::repeat_n(String::new(), 8));
        write_row(&mut w, &out)?;
    }
    finish(w)
}

/// The final runs for the terminal: `mean ± std (n)` per task and on average, in percent (labelled), then the
/// reference row.
pub fn final_table(plan: &SearchPlan, store: &ResultStore) -> Result<String> {
    let (names, rows) = final_rows(plan, store)?;
    let mut out = format!(
        "final runs (primary score, % — mean ± std over seeds (n)):\n{:<12}",
        "method"
    );
    for name in &names {
        out.push_str(&format!(" {name:>22}"));
    }
    out.push('\n');
    for row in &rows {
        out.push_str(&format!("{:<12}", row.method));
        for scores in &row.columns {
            out.push_str(&format!(" {:>22}", mean_std(scores)));
        }
        let missed = not_learned(row, &names);
        if !missed.is_empty() {
            out.push_str(&format!("  did not learn: {}", missed.join(", ")));
        }
        out.push('\n');
    }
    if let Some(first) = rows.first() {
        out.push_str(&format!("{:<12}", "reference"));
        for r in &first.references {
            let cell = if r.is_finite() {
                format!("{:.2}", 100.0 * r)
            } else {
                "-".into()
            };
            out.push_str(&format!(" {cell:>22}"));
        }
        out.push('\n');
    }
    out.push_str(&super::final_comparison::describe(
        &super::final_comparison::compare_final(plan, store),
    ));
    Ok(out)
}

/// `mean ± std (n)` of scores ×100 with two decimals (std with ddof = 1; no std for one value).
fn mean_std(values: &[f64]) -> String {
    let s = crate::stats::summary(values);
    match s.n {
        0 => "-".into(),
        1 => format!("{:.2} (1)", 100.0 * s.mean),
        n => format!("{:.2} ± {:.2} ({n})", 100.0 * s.mean, 100.0 * s.std),
    }
}
