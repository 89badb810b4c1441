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
                };
                row.extend([
                    opt(r.outcome.primary),
                    r.outcome.status.label().to_string(),
                    detail,
                    r.outcome.head_params.to_string(),
                    num(r.outcome.seconds),
                    opt(r.outcome.reference),
                    r.outcome
                        .learned()
                        .map_or(String::new(), |l| l.to_string()),
                ]);
            }
            None => row.extend([
                String::new(),
                "pending".into(),
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
        "designs_planned",
        "draws",
        "rejection_rate",
        "n",
        "trials_ok",
        "trials_diverged",
        "trials_failed",
        "trials_missing",
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
        "diff_ci_low",
        "diff_ci_high",
        "reference",
        "designs_learned",
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
                c.trials_missing.to_string(),
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
                v.and_then(|v| v.diff_ci)
                    .map_or(String::new(), |ci| num(ci.low)),
                v.and_then(|v| v.diff_ci)
                    .map_or(String::new(), |ci| num(ci.high)),
                num(c.reference),
                c.designs_learned.map_or(String::new(), |n| n.to_string()),
                c.note.clone(),
            ];
            write_row(&mut w, &row)?;
        }
    }
    finish(w)
}

/// Paper-style table: one row per method, one column per task plus the average, `mean ± std` over seeds of the
/// primary score ×100; the average is taken over tasks within each seed first. Trainable % is relative to the
/// backbone's parameters.
pub fn final_csv(plan: &SearchPlan, store: &ResultStore) -> Result<String> {
    let Some(final_runs) = &plan.final_runs else {
        return Err(Error::msg("the experiment has no final runs"));
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "method".to_string(),
        "design".into(),
        "trainable_params".into(),
        "trainable_pct".into(),
    ];
    header.extend(final_runs.tasks.iter().cloned());
    header.extend([
        "average".to_string(),
        "runs_ok".into(),
        "runs_not_ok".into(),
    ]);
    write_row(&mut w, &header)?;
    for method in &final_runs.methods {
        let mut not_ok = 0;
        let mut ok = 0;
        let mut trainable = method.design.planned_params;
        let score = |task: &str, seed: u64| -> Option<f64> {
            let t = method
                .trials
                .iter()
                .find(|t| t.task == task && t.seed == seed)?;
            let r = store.get(&t.id)?;
            r.outcome
                .status
                .is_ok()
                .then_some(r.outcome.primary)
                .flatten()
        };
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
        let mut row = vec![
            method.name.clone(),
            method.design.text.clone(),
            trainable.to_string(),
            pct,
        ];
        for task in &final_runs.tasks {
            let values: Vec<f64> = final_runs
                .seeds
                .iter()
                .filter_map(|&s| score(task, s))
                .collect();
            row.push(mean_std(&values));
        }
        let averages: Vec<f64> = final_runs
            .seeds
            .iter()
            .filter_map(|&s| {
                let per_task: Option<Vec<f64>> =
                    final_runs.tasks.iter().map(|t| score(t, s)).collect();
                per_task.map(|v| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect();
        row.push(mean_std(&averages));
        row.push(ok.to_string());
        row.push(not_ok.to_string());
        write_row(&mut w, &row)?;
    }
    finish(w)
}

/// `mean ± std` of scores ×100 with two decimals (std with ddof = 1; `mean` alone for one value).
fn mean_std(values: &[f64]) -> String {
    let s = crate::stats::summary(values);
    match s.n {
        0 => String::new(),
        1 => format!("{:.2}", 100.0 * s.mean),
        _ => format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * s.std),
    }
}
