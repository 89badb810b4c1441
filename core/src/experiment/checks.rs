//! The pass-2 checks of an experiment file. Each failure is placed at the field it concerns.

use std::collections::BTreeSet;

use super::Parsed;
use crate::data::{glue_task, GLUE_TASKS};
use crate::design::{is_design_text, Design, StrategyCodes};
use crate::registry::Registries;
use crate::space::{parse_strategy_set, parse_tuned_pattern};
use crate::spec::{Dimension, TaskSpec};
use crate::Result;

/// Largest number of groups (tuned-group subsets are drawn as bit masks).
const MAX_GROUPS: usize = 30;

fn known(list: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    list.into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name the file uses that no registry holds, reported instead of refused when the file's plugins were not
/// loaded (`validate --no-plugins`): they may well provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Where the file uses it (`strategies[2].name`).
    pub at: String,
    /// What kind of name: `strategy`, `grouping rule`, `allocation rule`, `evaluator`, or `design text` (a
    /// baseline whose strategy codes no registry knows).
    pub kind: &'static str,
    pub name: String,
}

/// Pass 2. With `unresolved`, names no registry knows are collected there instead of refused.
pub(super) fn check(
    p: &Parsed,
    reg: &Registries,
    mut unresolved: Option<&mut Vec<Unresolved>>,
) -> Result<()> {
    let s = &p.spec;
    let err = |path: &str, msg: String| Err(p.error_at(path, msg));

    if let Err(reason) = crate::spec::check_results_name(&s.name) {
        return err("name", reason);
    }
    if s.backbone.path.is_none() && s.backbone.hub_id.is_none() {
        return err(
            "backbone",
            "needs `path` (a local model folder) or `hub_id` (e.g. \"bert-base-uncased\")".into(),
        );
    }
    if !(s.budget.is_finite() && s.budget > 0.0 && s.budget <= 1.0) {
        return err(
            "budget",
            format!(
                "{} is not a fraction of the backbone's parameters in (0, 1]; e.g. 0.005 for 0.5 %",
                s.budget
            ),
        );
    }
    if let Some(margin) = s.equivalence_margin {
        if !(margin.is_finite() && margin > 0.0 && margin < 1.0) {
            return err(
                "equivalence_margin",
                format!(
                    "{margin} is not a margin on the primary score in (0, 1); e.g. 0.01 for one point of accuracy"
                ),
            );
        }
    }
    if s.groups == 0 || s.groups > MAX_GROUPS {
        return err(
            "groups",
            format!("{} groups: need between 1 and {MAX_GROUPS}", s.groups),
        );
    }
    if let Some(ratio) = s.max_group_ratio.filter(|r| !(r.is_finite() && *r >= 1.0)) {
        return err(
            "max_group_ratio",
            format!("{ratio}: the largest group over the smallest is at least 1; e.g. Some(3.0), or leave it out"),
        );
    }
    if s.group_stacks == crate::spec::GroupStacks::Separate && s.groups % 2 != 0 {
        return err("group_stacks", format!("`Separate` splits the groups between encoder and decoder: `groups` ({}) must be even", s.groups));
    }

    check_tasks(p, reg, &s.tasks, "tasks", unresolved.as_deref_mut())?;

    if s.strategies.is_empty() {
        return err("strategies", "needs at least one strategy".into());
    }
    let mut names = BTreeSet::new();
    for (i, st) in s.strategies.iter().enumerate() {
        let path = format!("strategies[{i}]");
        if !reg.strategies.contains_key(&st.name) {
            if let Some(list) = unresolved.as_deref_mut() {
                list.push(Unresolved {
                    at: format!("{path}.name"),
                    kind: "strategy",
                    name: st.name.clone(),
                });
                names.insert(st.name.as_str());
                continue;
            }
            return err(
                &format!("{path}.name"),
                format!(
                    "unknown strategy `{}`; known: {}",
                    st.name,
                    known(reg.strategies.keys())
                ),
            );
        }
        if !names.insert(st.name.as_str()) {
            return err(
                &format!("{path}.name"),
                format!("strategy `{}` is listed twice", st.name),
            );
        }
        if let Err(e) = reg.strategy(&st.name, &st.options) {
            return err(&format!("{path}.options"), e.to_string());
        }
        if let Some(lr) = st.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return err(
                    &format!("{path}.learning_rate"),
                    format!("{lr} must be a positive number"),
                );
            }
        }
    }
    let strategy_names: Vec<String> = s.strategies.iter().map(|x| x.name.clone()).collect();

    check_training(p)?;

    if s.seeds.is_empty() {
        return err("seeds", "needs at least one training seed".into());
    }
    if s.samples == 0 {
        return err("samples", "must be at least 1 design per candidate".into());
    }
    if !(s.validation_fraction.is_finite()
        && s.validation_fraction > 0.0
        && s.validation_fraction < 1.0)
    {
        return err(
            "validation_fraction",
            format!(
                "{} is not a share of the training set in (0, 1); search trials are scored on this share held \
                 out of each training set, e.g. 0.1",
                s.validation_fraction
            ),
        );
    }
    if let Some(v) = s.validation {
        if v.rows == 0 {
            return err(
                "validation.rows",
                "must be at least 1 row (e.g. 1000)".into(),
            );
        }
        // Spare rows exist only outside a `max_train` subset.
        if let Some(i) = s.tasks.iter().position(|t| t.max_train.is_none()) {
            return err(
                &format!("tasks[{i}]"),
                format!(
                    "`validation: (rows: {})` scores search trials on training rows outside `max_train`: task `{}` \
                     needs a `max_train` below its training set size (or leave `validation` out to use \
                     `validation_fraction`)",
                    v.rows, s.tasks[i].id
                ),
            );
        }
    }

    if let Some(race) = &s.race {
        if let Some((field, reason)) = race.problem() {
            return err(&format!("race.{field}"), reason);
        }
        let smallest = s
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, st)| Some((format!("stages[{i}].samples"), st.samples?)))
            // The experiment's `samples` counts where a stage does not set its own (and for S0 alone).
            .chain(
                (s.stages.is_empty() || s.stages.iter().any(|st| st.samples.is_none()))
                    .then(|| ("samples".to_string(), s.samples)),
            )
            .filter(|(_, n)| *n < race.min_samples)
            .min_by_key(|(_, n)| *n);
        if let Some((place, n)) = smallest {
            return err(
                "race.min_samples",
                format!(
                    "{} exceeds `{place}` ({n}), the most designs a candidate may get; lower `min_samples` or raise \
                     `{place}`",
                    race.min_samples
                ),
            );
        }
    }

    let mut stage_names = BTreeSet::new();
    for (i, stage) in s.stages.iter().enumerate() {
        let path = format!("stages[{i}]");
        if stage.name.trim().is_empty() {
            return err(&format!("{path}.name"), "must not be empty".into());
        }
        if !stage_names.insert(stage.name.as_str()) {
            return err(
                &format!("{path}.name"),
                format!("stage name `{}` is used twice", stage.name),
            );
        }
        if stage.samples == Some(0) {
            return err(
                &format!("{path}.samples"),
                "must be at least 1 design per candidate".into(),
            );
        }
        if stage.candidates.is_empty() {
            return err(
                &format!("{path}.candidates"),
                "needs at least one candidate".into(),
            );
        }
        // A `Keep` names a candidate of the stage it applies to: its own, or the experiment's when it has none.
        let (keep_path, policy) = match &stage.on_undecided {
            Some(policy) => (format!("{path}.on_undecided"), policy),
            None => ("on_undecided".to_string(), &s.on_undecided),
        };
        if let crate::spec::OnUndecided::Keep(name) = policy {
            if !stage.candidates.contains(name) {
                return err(
                    &keep_path,
                    format!(
                        "Keep(\"{name}\") is not a candidate of stage `{}` ({}); name one of them, or set                          `on_undecided` on the stage",
                        stage.name,
                        stage.candidates.join(", ")
                    ),
                );
            }
        }
        if let Dimension::Strategies(g) = stage.dimension {
            if g >= s.groups {
                return err(
                    &format!("{path}.dimension"),
                    format!(
                        "Strategies({g}) names group {g} (0-based) but there are {} groups",
                        s.groups
                    ),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (j, c) in stage.candidates.iter().enumerate() {
            let cpath = format!("{path}.candidates[{j}]");
            if !seen.insert(c.as_str()) {
                return err(&cpath, format!("candidate `{c}` is listed twice"));
            }
            let problem = match stage.dimension {
                Dimension::Grouping => (!reg.groupings.contains_key(c)).then(|| {
                    format!(
                        "unknown grouping rule `{c}`; known: {}",
                        known(reg.groupings.keys())
                    )
                }),
                Dimension::Allocation => (!reg.allocations.contains_key(c)).then(|| {
                    format!(
                        "unknown allocation rule `{c}`; known: {}",
                        known(reg.allocations.keys())
                    )
                }),
                Dimension::TunedGroups => parse_tuned_pattern(c, s.groups)
                    .err()
                    .map(|e| e.to_string()),
                Dimension::Strategies(_) => parse_strategy_set(c, &strategy_names)
                    .err()
                    .map(|e| e.to_string()),
            };
            let kind = match stage.dimension {
                Dimension::Grouping => Some("grouping rule"),
                Dimension::Allocation => Some("allocation rule"),
                _ => None,
            };
            if let (Some(_), Some(kind), Some(list)) = (&problem, kind, unresolved.as_deref_mut()) {
                list.push(Unresolved {
                    at: cpath,
                    kind,
                    name: c.clone(),
                });
                continue;
            }
            if let Some(message) = problem {
                return err(&cpath, message);
            }
        }
    }

    if let Some(f) = &s.final_runs {
        if f.top == 0 {
            return err("final_runs.top", "must be at least 1".into());
        }
        if let Some(seeds) = &f.seeds {
            if seeds.is_empty() {
                return err(
                    "final_runs.seeds",
                    "needs at least one seed (or leave it out for three seeds the search does not use)".into(),
                );
            }
            if let Some((i, seed)) = seeds.iter().enumerate().find(|(_, x)| s.seeds.contains(x)) {
                let suggestion: Vec<String> = crate::spec::FinalRunsSpec {
                    seeds: None,
                    ..f.clone()
                }
                .seeds_after(&s.seeds)
                .iter()
                .map(u64::to_string)
                .collect();
                return err(
                    &format!("final_runs.seeds[{i}]"),
                    format!(
                        "seed {seed} is also a search seed (`seeds`); final runs must train with seeds the search \
                         never used, since the designs were chosen with those: e.g. [{}], or leave `seeds` out",
                        suggestion.join(", ")
                    ),
                );
            }
        }
        if f.epochs == Some(0) {
            return err("final_runs.epochs", "must be at least 1".into());
        }
        let codes = StrategyCodes::from_registries(reg);
        for (i, b) in f.baselines.iter().enumerate() {
            let at = format!("final_runs.baselines[{i}]");
            if is_design_text(b) {
                let design = match Design::parse(b, &codes) {
                    Ok(d) => d,
                    // Its strategy codes may be a plugin's, which `validate --no-plugins` has not loaded.
                    Err(_) if unresolved.is_some() => {
                        if let Some(list) = unresolved.as_deref_mut() {
                            list.push(Unresolved {
                                at,
                                kind: "design text",
                                name: b.clone(),
                            });
                        }
                        continue;
                    }
                    Err(e) => return err(&at, e.to_string()),
                };
                if let Some(name) = design
                    .strategies
                    .iter()
                    .flatten()
                    .find(|n| !strategy_names.contains(n))
                {
                    return err(
                        &at,
                        format!(
                            "the design uses strategy `{name}`, which is not one of the experiment's ({}); add it \
                             to `strategies`",
                            known(&strategy_names)
                        ),
                    );
                }
                continue;
            }
            if b != "full" && !strategy_names.contains(b) {
                return err(
                    &at,
                    format!(
                        "unknown baseline `{b}`; known: full, {}, or a design text (`g=… a=… t=… s=…`)",
                        known(&strategy_names)
                    ),
                );
            }
        }
        if let Some(tasks) = &f.tasks {
            check_tasks(p, reg, tasks, "final_runs.tasks", unresolved.as_deref_mut())?;
        }
    }
    Ok(())
}

fn check_tasks(
    p: &Parsed,
    reg: &Registries,
    tasks: &[TaskSpec],
    at: &str,
    mut unresolved: Option<&mut Vec<Unresolved>>,
) -> Result<()> {
    if tasks.is_empty() {
        return Err(p.error_at(
            at,
            format!(
                "needs at least one task; GLUE ids: {}",
                known(GLUE_TASKS.iter().map(|t| t.id))
            ),
        ));
    }
    let mut ids = BTreeSet::new();
    for (i, t) in tasks.iter().enumerate() {
        let path = format!("{at}[{i}]");
        if !ids.insert(t.id.as_str()) {
            return Err(p.error_at(
                &format!("{path}.id"),
                format!("task `{}` is listed twice", t.id),
            ));
        }
        super::generation::check_generation_task(p, reg, t, &path, unresolved.as_deref_mut())?;
        match &t.custom {
            None if t.generation.is_none() && glue_task(&t.id).is_err() => {
                return Err(p.error_at(
                    &format!("{path}.id"),
                    format!(
                        "unknown GLUE task `{}`; known: {} (or describe your own files with `custom`, or \
                         `generation` for a text-to-text task)",
                        t.id,
                        known(GLUE_TASKS.iter().map(|t| t.id))
                    ),
                ));
            }
            Some(c) => {
                if let Some(m) = &c.metric {
                    if !reg.evaluators.contains_key(m) {
                        if let Some(list) = unresolved.as_deref_mut() {
                            list.push(Unresolved {
                                at: format!("{path}.custom.metric"),
                                kind: "evaluator",
                                name: m.clone(),
                            });
                        } else {
                            return Err(p.error_at(
                                &format!("{path}.custom.metric"),
                                format!(
                                    "unknown evaluator `{m}`; known: {}",
                                    known(reg.evaluators.keys())
                                ),
                            ));
                        }
                    } else if reg.evaluator(m).is_ok_and(|e| e.scores_texts()) {
                        return Err(p.error_at(
                            &format!("{path}.custom.metric"),
                            format!(
                                "evaluator `{m}` scores generated text, but this task predicts labels or values; \
                                 use accuracy, f1, mcc, pearson, … (known: {})",
                                known(reg.evaluators.keys())
                            ),
                        ));
                    }
                }
                if let Err(problem) = crate::data::custom_kind(c) {
                    let found =
                        crate::data::label_values(c, &super::base_dir(&p.file)).unwrap_or_default();
                    let field = match problem {
                        crate::data::KindProblem::MissingLabels => "custom",
                        crate::data::KindProblem::RegressionWithLabels
                        | crate::data::KindProblem::ClassificationWithoutLabels => "custom.kind",
                        _ => "custom.labels",
                    };
                    return Err(p.error_at(
                        &format!("{path}.{field}"),
                        crate::data::kind_problem_message(c, &problem, &found),
                    ));
                }
            }
            None => {}
        }
        if t.max_train == Some(0) {
            return Err(p.error_at(
                &format!("{path}.max_train"),
                "must be at least 1 (leave it out for all)",
            ));
        }
        if t.max_eval == Some(0) {
            return Err(p.error_at(
                &format!("{path}.max_eval"),
                "must be at least 1 (leave it out for all)",
            ));
        }
    }
    Ok(())
}

fn check_training(p: &Parsed) -> Result<()> {
    let t = &p.spec.training;
    let bad = |field: &str, msg: String| Err(p.error_at(&format!("training.{field}"), msg));
    if t.epochs == 0 {
        return bad("epochs", "must be at least 1".into());
    }
    if t.batch_size == 0 {
        return bad("batch_size", "must be at least 1".into());
    }
    if t.eval_batch_size == 0 {
        return bad("eval_batch_size", "must be at least 1".into());
    }
    if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
        return bad(
            "learning_rate",
            format!("{} must be a positive number", t.learning_rate),
        );
    }
    if let Some(lr) = t.head_learning_rate {
        if !(lr.is_finite() && lr > 0.0) {
            return bad(
                "head_learning_rate",
                format!("{lr} must be a positive number"),
            );
        }
    }
    if !(t.full_learning_rate.is_finite() && t.full_learning_rate > 0.0) {
        return bad(
            "full_learning_rate",
            format!("{} must be a positive number", t.full_learning_rate),
        );
    }
    if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
        return bad(
            "weight_decay",
            format!("{} must be 0 or more", t.weight_decay),
        );
    }
    if !(0.0..1.0).contains(&t.warmup) {
        return bad(
            "warmup",
            format!("{} must be a fraction of the steps in [0, 1)", t.warmup),
        );
    }
    if !(0.0..1.0).contains(&t.dropout) {
        return bad(
            "dropout",
            format!("{} must be a probability in [0, 1)", t.dropout),
        );
    }
    if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
        return bad(
            "grad_clip",
            format!("{} must be 0 (off) or more", t.grad_clip),
        );
    }
    if t.max_seq_len < 8 {
        return bad(
            "max_seq_len",
            format!("{} is too short; use at least 8 tokens", t.max_seq_len),
        );
    }
    if let Some(rule) = &t.prune {
        if rule.after_epoch == 0 || rule.after_epoch >= t.epochs {
            return bad(
                "prune.after_epoch",
                format!(
                    "{} must name an epoch before the last one (1 to {}): pruning after the last epoch saves \
                     nothing{}",
                    rule.after_epoch,
                    t.epochs.saturating_sub(1),
                    if t.epochs < 2 {
                        "; pruning needs `epochs: 2` or more"
                    } else {
                        ""
                    }
                ),
            );
        }
        let value = match rule.below {
            crate::spec::PruneThreshold::Score(v)
            | crate::spec::PruneThreshold::ReferencePlus(v) => v,
        };
        if !value.is_finite() {
            return bad(
                "prune.below",
                format!("{value} is not a number; e.g. `Score(0.6)` or `ReferencePlus(0.02)`"),
            );
        }
    }
    Ok(())
}
