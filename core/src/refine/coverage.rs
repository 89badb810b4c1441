//! How many distinct designs each candidate of a grouping stage admits on the experiment's backbone, and where
//! candidates overlap: a stage compares populations, so two candidates that admit the same splits, or a candidate
//! that admits one split only (a point against a spread), make its comparison weaker than it looks. `validate`
//! prints this from `config.json` alone, and flags strategy-stage candidates whose strategies are all fixed-size.

use serde::Serialize;

use crate::experiment::Experiment;
use crate::registry::Registries;
use crate::shapes::BackboneInfo;
use crate::spec::Dimension;
use crate::Result;

/// Compositions looked at per candidate at most; a larger space is reported as not counted.
pub const COUNT_LIMIT: u64 = 200_000;

/// One candidate of a grouping stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateCoverage {
    pub candidate: String,
    /// The splits (group sizes) it admits; `None` when the space is too large to count.
    pub splits: Option<Vec<Vec<usize>>>,
}

/// One grouping stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCoverage {
    pub stage: String,
    pub layers: usize,
    pub groups: usize,
    pub candidates: Vec<CandidateCoverage>,
    /// For people: candidates that admit one split or none, and pairs of candidates that admit common splits.
    pub warnings: Vec<String>,
}

fn show(split: &[usize]) -> String {
    split
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The coverage of every grouping stage of `experiment` on a backbone described by `info`.
pub fn grouping_coverage(
    experiment: &Experiment,
    info: &BackboneInfo,
    registries: &Registries,
) -> Result<Vec<StageCoverage>> {
    let space = experiment.space(info)?;
    let mut out = Vec::new();
    for stage in &experiment.spec.stages {
        if stage.dimension != Dimension::Grouping {
            continue;
        }
        let candidates: Vec<CandidateCoverage> = stage
            .candidates
            .iter()
            .map(|c| {
                Ok(CandidateCoverage {
                    candidate: c.clone(),
                    splits: space.admitted_splits(c, registries, COUNT_LIMIT)?,
                })
            })
            .collect::<Result<_>>()?;
        let mut warnings = Vec::new();
        for c in &candidates {
            match c.splits.as_deref() {
                Some([]) => warnings.push(format!(
                    "`{}` admits no split of {} layers into {} groups: the stage cannot sample it",
                    c.candidate,
                    info.num_layers(),
                    experiment.spec.groups
                )),
                Some([only]) => warnings.push(format!(
                    "`{}` admits a single split ({}): its population varies only in allocation and strategies, \
                     not in grouping",
                    c.candidate,
                    show(only)
                )),
                _ => {}
            }
        }
        for (i, a) in candidates.iter().enumerate() {
            for b in &candidates[i + 1..] {
                let (Some(sa), Some(sb)) = (&a.splits, &b.splits) else {
                    continue;
                };
                let common: Vec<&Vec<usize>> = sa.iter().filter(|s| sb.contains(s)).collect();
                if let Some(first) = common.first() {
                    warnings.push(format!(
                        "`{}` and `{}` overlap: {} split(s) admitted by both (e.g. {})",
                        a.candidate,
                        b.candidate,
                        common.len(),
                        show(first)
                    ));
                }
            }
        }
        out.push(StageCoverage {
            stage: stage.name.clone(),
            layers: info.num_layers(),
            groups: experiment.spec.groups,
            candidates,
            warnings,
        });
    }
    Ok(out)
}

/// Strategy-stage candidates whose strategies are all fixed-size (BitFit): such a group cannot use its budget
/// share, so the solver gives it its exact count and passes the difference to the groups with a sized strategy
/// (`docs/DESIGN_SPACE.md`, budget solver step 3). The allocation an earlier stage chose then no longer holds for
/// that group; the candidate is kept (the paper's strategy sets include BitFit alone) and flagged.
pub fn fixed_size_warnings(
    experiment: &Experiment,
    registries: &Registries,
) -> Result<Vec<String>> {
    let strategies = experiment.strategies(registries)?;
    let mut out = Vec::new();
    for stage in &experiment.spec.stages {
        let Dimension::Strategies(group) = stage.dimension else {
            continue;
        };
        for candidate in &stage.candidates {
            let all_fixed = candidate
                .split('+')
                .all(|name| strategies.get(name).is_some_and(|s| s.fixed_size()));
            if all_fixed {
                out.push(format!(
                    "{}: `{candidate}` has only fixed-size strategies: group {} then takes their exact parameter \
                     count and its budget share goes to the other tuned groups, so the stage's allocation does not \
                     hold for it",
                    stage.name,
                    group + 1
                ));
            }
        }
    }
    Ok(out)
}
