//! Effects across all search trials (`peftspace report DIR --effects`): an OLS of each design's score, and of each
//! task's score, on interpretable design features, with stage fixed effects and HC3 standard errors
//! ([`stats::ols_hc3`]). Exploratory: the stages were planned to compare candidates, not these regressions.
//!
//! Features of a design, from its record in `plan.json`:
//! - `grouping`: the shape of its group sizes (uniform, increasing, decreasing, spindle, bottleneck, other), a
//!   categorical with `uniform` (or the first level present) as reference;
//! - `allocation`: each group's share of the per-layer budget weights (they sum to one), group 1's dropped;
//! - `tuned_groups`: how many groups are tuned;
//! - `strategies`: each strategy's share of the tuned groups (a group's share split evenly among its strategies;
//!   they sum to one), the first strategy's dropped;
//! - `stage`: the stage fixed effect, the first stage as reference.
//!
//! A feature constant over all designs carries no information and is left out (it would be collinear with the
//! intercept); which ones, and which references were dropped, is printed with the table.

use std::collections::{BTreeMap, BTreeSet};

use crate::refine::{DesignRecord, SearchPlan};
use crate::stats::{self, OlsFit, Term};
use crate::store::ResultStore;

/// One search design with its scores.
struct Row<'a> {
    stage: &'a str,
    design: &'a DesignRecord,
    /// Task → mean primary score over the design's ok trials on it.
    tasks: BTreeMap<&'a str, f64>,
}

/// The fits: the design score (mean over tasks) and each task's score.
pub struct Effects {
    pub designs: usize,
    /// (response, fit or why it could not be fitted).
    pub fits: Vec<(String, Result<OlsFit, String>)>,
    /// What was dropped and why, one line each.
    pub notes: Vec<String>,
}

/// The shape of group sizes `2,4,4,2` (`spindle`); a space that records a rule name instead of sizes gives the
/// name.
fn grouping_shape(sizes: &str) -> String {
    let parsed: Option<Vec<i64>> = sizes.split(',').map(|v| v.trim().parse().ok()).collect();
    let Some(s) = parsed else {
        return sizes.trim().to_string();
    };
    let shape = if s.len() < 2 || s.windows(2).all(|w| w[0] == w[1]) {
        "uniform"
    } else {
        let steps: Vec<i64> = s
            .windows(2)
            .map(|w| (w[1] - w[0]).signum())
            .filter(|d| *d != 0)
            .collect();
        // One change of direction: up then down is a spindle, down then up a bottleneck.
        let changes = steps.windows(2).filter(|w| w[0] != w[1]).count();
        match (changes, steps.first()) {
            (0, Some(1)) => "increasing",
            (0, _) => "decreasing",
            (1, Some(1)) => "spindle",
            (1, _) => "bottleneck",
            _ => "other",
        }
    };
    shape.to_string()
}

/// Per group, its share of the allocation weights.
fn allocation_shares(weights: &str) -> Vec<f64> {
    let w: Vec<f64> = weights
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let total: f64 = w.iter().sum();
    if total > 0.0 {
        w.iter().map(|x| x / total).collect()
    } else {
        w
    }
}

/// The strategies of one group's set: names joined by `+` (`adapter+lora`), or a design text's one-letter codes
/// (`AL`); none for an untuned group (`-` or empty).
fn set_members(set: &str) -> Vec<String> {
    let set = set.trim();
    if set.is_empty() || set == "-" {
        Vec::new()
    } else if set.contains('+') || !set.chars().all(|c| c.is_ascii_uppercase()) {
        set.split('+')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        set.chars().map(String::from).collect()
    }
}

/// Per strategy, its share of the tuned groups (each tuned group's share split evenly among its strategies).
fn strategy_shares(sets: &str, strategies: &[String]) -> Vec<f64> {
    let groups: Vec<Vec<String>> = sets.split('|').map(set_members).collect();
    let tuned = groups.iter().filter(|g| !g.is_empty()).count().max(1) as f64;
    strategies
        .iter()
        .map(|s| {
            groups
                .iter()
                .filter(|g| g.contains(s))
                .map(|g| 1.0 / g.len() as f64)
                .sum::<f64>()
                / tuned
        })
        .collect()
}

fn rows<'a>(plan: &'a SearchPlan, store: &ResultStore) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for stage in &plan.stages {
        for candidate in &stage.candidates {
            for design in &candidate.designs {
                let mut per_task: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
                for trial in &design.trials {
                    if let Some(score) = store
                        .get(&trial.id)
                        .filter(|r| r.outcome.status.is_ok())
                        .and_then(|r| r.outcome.primary)
                    {
                        per_task.entry(trial.task.as_str()).or_default().push(score);
                    }
                }
                // Only designs scored on every task, like a stage's populations.
                let tasks: BTreeSet<&str> = design.trials.iter().map(|t| t.task.as_str()).collect();
                if tasks.is_empty() || tasks.len() != per_task.len() {
                    continue;
                }
                out.push(Row {
                    stage: &stage.name,
                    design: &design.design,
                    tasks: per_task
                        .into_iter()
                        .map(|(t, s)| (t, stats::mean(&s)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// Whether a column varies at all.
fn varies(values: &[f64]) -> bool {
    values.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-12)
}

/// The design-feature terms of `rows`, leaving out constant features (noted in `notes`).
fn terms(rows: &[Row<'_>], notes: &mut Vec<String>) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut add = |term: Result<Term, stats::OlsError>, notes: &mut Vec<String>| match term {
        Ok(t) if t.columns.iter().any(|(_, v)| varies(v)) => {
            let kept: Vec<(String, Vec<f64>)> =
                t.columns.into_iter().filter(|(_, v)| varies(v)).collect();
            terms.push(Term {
                name: t.name,
                columns: kept,
            });
        }
        Ok(t) => notes.push(format!(
            "`{}` is the same for every design: left out",
            t.name
        )),
        Err(e) => notes.push(format!("left out: {e}")),
    };
    // Grouping shape, `uniform` (or the first level present) as reference.
    let shapes: Vec<String> = rows
        .iter()
        .map(|r| grouping_shape(&r.design.group_sizes))
        .collect();
    let levels: BTreeSet<&str> = shapes.iter().map(String::as_str).collect();
    let reference = if levels.contains("uniform") {
        "uniform"
    } else {
        levels.iter().next().copied().unwrap_or("uniform")
    };
    notes.push(format!("grouping: reference level `{reference}`"));
    add(Term::categorical("grouping", &shapes, reference), notes);
    // Allocation shares, group 1 dropped.
    let shares: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| allocation_shares(&r.design.allocation))
        .collect();
    let groups = shares.iter().map(Vec::len).max().unwrap_or(0);
    let parts: Vec<(String, Vec<f64>)> = (0..groups)
        .map(|g| {
            (
                format!("allocation[group {}]", g + 1),
                shares
                    .iter()
                    .map(|s| s.get(g).copied().unwrap_or(0.0))
                    .collect(),
            )
        })
        .collect();
    if groups > 1 {
        notes.push("allocation: shares of the budget weights; group 1 dropped (reference)".into());
        add(
            Term::simplex("allocation", parts, "allocation[group 1]"),
            notes,
        );
    }
    add(
        Ok(Term::numeric(
            "tuned_groups",
            rows.iter()
                .map(|r| r.design.tuned_groups.chars().filter(|c| *c == '1').count() as f64)
                .collect(),
        )),
        notes,
    );
    // Strategy shares, the first strategy dropped.
    let strategies: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.design
                .strategy_sets
                .split('|')
                .flat_map(set_members)
                .collect::<Vec<_>>()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if strategies.len() > 1 {
        let shares: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| strategy_shares(&r.design.strategy_sets, &strategies))
            .collect();
        let parts: Vec<(String, Vec<f64>)> = strategies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("strategies[{s}]"),
                    shares.iter().map(|v| v[i]).collect(),
                )
            })
            .collect();
        notes.push(format!(
            "strategies: each strategy's share of the tuned groups; `{}` dropped (reference)",
            strategies[0]
        ));
        add(
            Term::simplex(
                "strategies",
                parts,
                &format!("strategies[{}]", strategies[0]),
            ),
            notes,
        );
    }
    let stages: Vec<&str> = rows.iter().map(|r| r.stage).collect();
    if let Some(first) = stages.first() {
        notes.push(format!("stage: fixed effects, `{first}` the reference"));
        add(Term::categorical("stage", &stages, first), notes);
    }
    terms
}

/// The fits over every search design of `plan` scored in `store`.
pub fn effects(plan: &SearchPlan, store: &ResultStore) -> Effects {
    let rows = rows(plan, store);
    let mut notes = Vec::new();
    let terms = terms(&rows, &mut notes);
    let mut fits = Vec::new();
    let design_scores: Vec<f64> = rows
        .iter()
        .map(|r| stats::mean(&r.tasks.values().copied().collect::<Vec<_>>()))
        .collect();
    fits.push((
        "design score".to_string(),
        stats::ols_hc3(&design_scores, &terms).map_err(|e| e.to_string()),
    ));
    let tasks: BTreeSet<&str> = rows.iter().flat_map(|r| r.tasks.keys().copied()).collect();
    if tasks.len() > 1 {
        for task in tasks {
            let y: Vec<f64> = rows
                .iter()
                .map(|r| r.tasks.get(task).copied().unwrap_or(f64::NAN))
                .collect();
            fits.push((
                format!("{task} score"),
                stats::ols_hc3(&y, &terms).map_err(|e| e.to_string()),
            ));
        }
    }
    Effects {
        designs: rows.len(),
        fits,
        notes,
    }
}

impl Effects {
    /// The terminal (and report) text: per response, the importance table and the coefficients.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "Effects across all {} scored search designs — EXPLORATORY: the stages were planned to compare their \
             candidates; these regressions were not pre-registered, so read them as hypotheses for a planned stage.\n",
            self.designs
        );
        for note in &self.notes {
            out.push_str(&format!("  {note}\n"));
        }
        for (response, fit) in &self.fits {
            out.push_str(&format!("\n{response}: OLS with HC3 standard errors\n"));
            let fit = match fit {
                Ok(fit) => fit,
                Err(why) => {
                    out.push_str(&format!("  not fitted: {why}\n"));
                    continue;
                }
            };
            out.push_str(&format!(
                "  {} designs, R² {:.3}; importance = type-II sum of squares / total\n",
                fit.rows, fit.r_squared
            ));
            out.push_str(&format!(
                "  {:<14} {:>3} {:>11} {:>10} {:>9}\n",
                "term", "df", "sum_sq", "importance", "F p"
            ));
            for t in &fit.terms {
                out.push_str(&format!(
                    "  {:<14} {:>3} {:>11.3e} {:>9.1} % {:>9.3}\n",
                    t.name,
                    t.df,
                    t.sum_sq,
                    100.0 * t.importance,
                    t.p_value
                ));
            }
            out.push_str(&format!(
                "  {:<28} {:>10} {:>9} {:>9}\n",
                "coefficient", "estimate", "HC3 se", "p"
            ));
            for c in &fit.coefficients {
                out.push_str(&format!(
                    "  {:<28} {:>+10.4} {:>9.4} {:>9.3}\n",
                    c.column, c.estimate, c.hc3_se, c.p_value
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_size_shapes_and_shares() {
        assert_eq!(grouping_shape("3,3,3,3"), "uniform");
        assert_eq!(grouping_shape("1,2,4,5"), "increasing");
        assert_eq!(grouping_shape("5,4,2,1"), "decreasing");
        assert_eq!(grouping_shape("1,5,5,1"), "spindle");
        assert_eq!(grouping_shape("5,1,1,5"), "bottleneck");
        assert_eq!(grouping_shape("1,5,1,5"), "other");
        assert_eq!(grouping_shape("spindle"), "spindle");
        let a = allocation_shares("1,1,2");
        assert!((a[2] - 0.5).abs() < 1e-12 && (a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let names = [
            "adapter".to_string(),
            "lora".to_string(),
            "prefix".to_string(),
        ];
        // Two tuned groups: adapter+lora splits the first, prefix has the second.
        let s = strategy_shares("adapter+lora|-|prefix", &names);
        assert_eq!(s, vec![0.25, 0.25, 0.5]);
        // A design text's codes: A, L, P; B alone in the last group.
        let codes = ["A", "B", "L", "P"].map(String::from);
        assert_eq!(
            strategy_shares("AL|AP|B|BL", &codes),
            vec![0.25, 0.375, 0.25, 0.125]
        );
    }
}
