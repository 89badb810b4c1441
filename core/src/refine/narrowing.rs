//! What a decided stage hands to the next one. A `significant` stage hands on its winner. An `undecided` or
//! `equivalent` one follows `on_undecided`: the union of the candidates still in the running (`KeepAll`, the
//! default; a candidate the winner beats significantly, or a race dropped, is out),
//! a named candidate (`Keep`), or the best mean whatever its significance (`Best`, the rule before stages had
//! outcomes: a noise-chosen winner then constrained every later stage).

use std::path::Path;

use crate::spec::{Dimension, OnUndecided};
use crate::Result;

use super::decision::StageDecision;
use super::outcome::Outcome;
use super::search_space::{SearchSpace, UnionSpace};

/// The candidates `decision` hands on under `policy`, in the stage's candidate order.
pub fn handed_on<'a>(decision: &'a StageDecision, policy: &OnUndecided) -> Vec<&'a str> {
    let Some(winner) = decision.winner_name() else {
        return Vec::new();
    };
    // Still in the running: scored, and not significantly worse than the winner (in a race: not dropped by it).
    let survivors: Vec<&str> = decision
        .candidates
        .iter()
        .filter(|c| c.n > 0 && (c.candidate == winner || !c.significant))
        .map(|c| c.candidate.as_str())
        .collect();
    let outcome = decision.outcome.as_ref().map(|o| o.outcome);
    match (outcome, policy) {
        (None | Some(Outcome::Significant), _) | (_, OnUndecided::Best) => vec![winner],
        (_, OnUndecided::Keep(name)) if survivors.contains(&name.as_str()) => {
            survivors.into_iter().filter(|s| s == name).collect()
        }
        _ => survivors,
    }
}

/// `current` narrowed for the stage after `decision`, and a line saying what was handed on and why.
pub fn narrow(
    current: &dyn SearchSpace,
    dimension: Dimension,
    decision: &StageDecision,
    policy: &OnUndecided,
) -> Result<(Box<dyn SearchSpace>, String)> {
    let kept = handed_on(decision, policy);
    let mut members = Vec::new();
    for name in &kept {
        members.push((name.to_string(), current.constrain(dimension, name)?));
    }
    let outcome = decision
        .outcome
        .as_ref()
        .map_or("decided", |o| o.outcome.as_str());
    let note = if kept.len() == 1 {
        format!(
            "{} ({outcome}): the next stage samples under `{}`",
            decision.stage, kept[0]
        )
    } else {
        format!(
            "{} ({outcome}, on_undecided: {policy:?}): the next stage samples equally from {}",
            decision.stage,
            kept.join(", ")
        )
    };
    Ok((UnionSpace::of(members)?, note))
}

/// Whether the results folder `dir` holds a plan written before `on_undecided` existed: such a run resumes with
/// `Best`, the rule its later stages were sampled under, so its stored trials keep their designs.
pub fn plan_predates_on_undecided(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(crate::store::PLAN_FILE)) else {
        return false;
    };
    let Ok(plan) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    plan.get("on_undecided").is_none()
        && plan
            .get("stages")
            .and_then(|s| s.as_array())
            .is_some_and(|s| !s.is_empty())
}
