//! Grouping a batch of trials into populations: trials the executor says may train together
//! ([`TrialExecutor::population_key`]: same task, training settings, seed, split and backbone, and the same prefix
//! length at every layer) are cut into populations of at most K, in the order they come; the others train alone.

use std::collections::BTreeMap;

use crate::trial::{TrialExecutor, TrialSpec};
use crate::Result;

/// The populations of at most `size` trials that `trials` form; every trial is in exactly one, and a population
/// keeps the trials' order. `size` ≤ 1: every trial alone (no key is computed).
pub fn populations(
    trials: Vec<TrialSpec>,
    executor: &dyn TrialExecutor,
    size: usize,
) -> Result<Vec<Vec<TrialSpec>>> {
    if size <= 1 {
        return Ok(trials.into_iter().map(|t| vec![t]).collect());
    }
    let mut out: Vec<Vec<TrialSpec>> = Vec::new();
    // The population still filling for each key, by its position in `out`.
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for trial in trials {
        let Some(key) = executor.population_key(&trial)? else {
            out.push(vec![trial]);
            continue;
        };
        match open.get(&key) {
            Some(&at) if out[at].len() < size => out[at].push(trial),
            _ => {
                open.insert(key, out.len());
                out.push(vec![trial]);
            }
        }
    }
    Ok(out)
}

/// The span a population's training runs in: the `trial` span when it holds one trial.
pub fn population_span(trials: &[TrialSpec]) -> tracing::Span {
    match trials {
        [one] => super::trial_span(one),
        _ => tracing::info_span!(
            "population",
            designs = trials.len(),
            first = trials
                .first()
                .map_or("", |t| t.id.get(..12).unwrap_or(&t.id)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskSpec;
    use crate::test_doubles::sst2_trial as trial;
    use crate::trial::TrialOutcome;

    /// Keys by the design text's first letter; designs starting with `x` train alone.
    struct ByLetter;

    impl TrialExecutor for ByLetter {
        fn backbone_identity(&self) -> Result<String> {
            Ok("bb".into())
        }
        fn data_fingerprint(&self, _: &TaskSpec) -> Result<String> {
            Ok("data".into())
        }
        fn run(&self, _: &TrialSpec) -> Result<TrialOutcome> {
            Err(crate::Error::msg("not used"))
        }
        fn population_key(&self, trial: &TrialSpec) -> Result<Option<String>> {
            Ok(Some(trial.design[..1].to_string()).filter(|k| k != "x"))
        }
    }

    fn designs(groups: &[Vec<TrialSpec>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|t| t.design.as_str()).collect())
            .collect()
    }

    #[test]
    fn trials_group_by_key_in_order_up_to_the_size() -> Result<()> {
        let trials: Vec<TrialSpec> = ["a1", "b1", "a2", "x1", "a3", "b2", "a4"]
            .iter()
            .map(|d| trial(d))
            .collect();
        let groups = populations(trials.clone(), &ByLetter, 3)?;
        assert_eq!(
            designs(&groups),
            vec![
                vec!["a1", "a2", "a3"],
                vec!["b1", "b2"],
                vec!["x1"],
                vec!["a4"]
            ]
        );
        let alone = populations(trials, &ByLetter, 1)?;
        assert_eq!(alone.len(), 7);
        assert!(alone.iter().all(|g| g.len() == 1));
        Ok(())
    }
}
