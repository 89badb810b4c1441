//! The final comparison as a test: the discovered design (`best1`) against every other final method, paired by
//! (seed, task) — both trained with the same seed and data order on the same task — by the paired sign-flip
//! permutation test of the mean difference ([`stats::paired_sign_flip`]), Holm-adjusted over the methods compared.
//!
//! With n pairs the smallest two-sided p is 2/2ⁿ, and after Holm over m comparisons the smallest adjusted p is
//! m·2/2ⁿ: with too few pairs no outcome can reach α, and the comparison is only descriptive ([`reachable`]).

use serde::Serialize;

use crate::refine::{FinalMethod, SearchPlan};
use crate::stats;
use crate::store::ResultStore;

/// Level of the final comparison.
pub const FINAL_ALPHA: f64 = 0.05;
/// Random sign patterns when there are too many pairs to enumerate.
const SIGN_FLIPS: usize = 100_000;

/// `best1` against one other method.
#[derive(Debug, Clone, Serialize)]
pub struct FinalComparison {
    /// The other method.
    pub method: String,
    /// (seed, task) pairs where both runs ended well.
    pub pairs: usize,
    /// Mean over pairs of best1 − method (primary score).
    pub diff: f64,
    /// 95 % t-interval of that mean.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Two-sided sign-flip p, unadjusted; NaN with fewer than two pairs.
    pub p_raw: f64,
    /// Holm-adjusted over the methods compared.
    pub p: f64,
}

/// Whether `comparisons` Holm-adjusted sign-flip tests on `pairs` pairs each can reach `alpha` at all.
pub fn reachable(pairs: usize, comparisons: usize, alpha: f64) -> bool {
    stats::smallest_paired_p(pairs) * (comparisons.max(1) as f64) < alpha
}

/// `best1` against every other method of the final runs; empty without final runs or without a `best1`.
pub fn compare_final(plan: &SearchPlan, store: &ResultStore) -> Vec<FinalComparison> {
    let Some(final_runs) = &plan.final_runs else {
        return Vec::new();
    };
    let Some(best) = final_runs.methods.iter().find(|m| m.name == "best1") else {
        return Vec::new();
    };
    let score = |method: &FinalMethod, task: &str, seed: u64| {
        let trial = method
            .trials
            .iter()
            .find(|t| t.task == task && t.seed == seed)?;
        store
            .get(&trial.id)
            .filter(|r| r.outcome.status.is_ok())
            .and_then(|r| r.outcome.primary)
    };
    let mut out: Vec<FinalComparison> = Vec::new();
    for other in final_runs.methods.iter().filter(|m| m.name != best.name) {
        let mut d = Vec::new();
        for &seed in &final_runs.seeds {
            for task in &final_runs.tasks {
                if let (Some(a), Some(b)) = (score(best, task, seed), score(other, task, seed)) {
                    d.push(a - b);
                }
            }
        }
        let seed = crate::trial::child_seed(plan.root_seed, &["final comparison", &other.name]);
        let test = stats::paired_sign_flip(&d, SIGN_FLIPS, seed);
        out.push(FinalComparison {
            method: other.name.clone(),
            pairs: d.len(),
            diff: test.map_or_else(|| stats::mean(&d), |t| t.mean_diff),
            ci_low: test.map_or(f64::NAN, |t| t.ci_low),
            ci_high: test.map_or(f64::NAN, |t| t.ci_high),
            p_raw: test.map_or(f64::NAN, |t| t.p_value),
            p: f64::NAN,
        });
    }
    let adjusted = stats::holm_adjust(&out.iter().map(|c| c.p_raw).collect::<Vec<_>>());
    for (c, p) in out.iter_mut().zip(adjusted) {
        c.p = p;
    }
    out
}

/// Lines for the terminal and the report: each comparison, and whether the comparison can be a test at all.
pub fn describe(comparisons: &[FinalComparison]) -> String {
    if comparisons.is_empty() {
        return String::new();
    }
    let pairs = comparisons.iter().map(|c| c.pairs).min().unwrap_or(0);
    let mut out = format!(
        "best1 against each method, paired by (seed, task): mean difference in points [95 % CI], sign-flip p, \
         Holm over {}:\n",
        comparisons.len()
    );
    for c in comparisons {
        let ci = if c.ci_low.is_finite() && c.ci_high.is_finite() {
            format!("[{:+.2}, {:+.2}]", 100.0 * c.ci_low, 100.0 * c.ci_high)
        } else {
            "[-]".to_string()
        };
        out.push_str(&format!(
            "  vs {:<10} {:+.2} {ci} over {} pairs, p = {}\n",
            c.method,
            100.0 * c.diff,
            c.pairs,
            if c.p.is_nan() {
                "-".to_string()
            } else {
                format!("{:.3}", c.p)
            }
        ));
    }
    if !reachable(pairs, comparisons.len(), FINAL_ALPHA) {
        out.push_str(&format!(
            "  descriptive only: with {pairs} pairs the smallest p is {:.3}, ×{} comparisons (Holm) ≥ {FINAL_ALPHA}; \
             add final seeds (`final_runs.seeds`) to make it a test\n",
            stats::smallest_paired_p(pairs),
            comparisons.len()
        ));
    }
    out
}

/// `validate`'s warning when an experiment's final comparison cannot reach [`FINAL_ALPHA`]: too few (seed, task)
/// pairs for the number of methods `best1` is compared with. `None` when it can, or has nothing to compare.
pub fn too_few_pairs(spec: &crate::spec::ExperimentSpec) -> Option<String> {
    let final_runs = spec.final_runs.as_ref()?;
    let comparisons = (final_runs.top + final_runs.baselines.len()).checked_sub(1)?;
    if comparisons == 0 {
        return None;
    }
    let seeds = final_runs.seeds_after(&spec.seeds).len();
    let tasks = final_runs.tasks.as_ref().map_or(spec.tasks.len(), Vec::len);
    let pairs = seeds * tasks;
    (!reachable(pairs, comparisons, FINAL_ALPHA)).then(|| {
        format!(
            "final_runs: {seeds} seed(s) × {tasks} task(s) = {pairs} pairs; the smallest sign-flip p, {:.3}, times \
             {comparisons} comparison(s) (Holm) cannot go below {FINAL_ALPHA}, so the final comparison is \
             descriptive only; use more `final_runs.seeds` (8 by default)",
            stats::smallest_paired_p(pairs)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_follows_two_over_two_to_the_n_times_the_comparisons() {
        // 5 pairs: 2/32 = 0.0625 never reaches 0.05; 6 pairs: 0.031 does alone, not after Holm over 2.
        assert!(!reachable(5, 1, 0.05));
        assert!(reachable(6, 1, 0.05));
        assert!(!reachable(6, 2, 0.05));
        assert!(reachable(8, 3, 0.05));
        assert!(!reachable(0, 1, 0.05));
    }

    #[test]
    fn validate_warns_about_a_final_comparison_that_cannot_be_a_test() {
        let spec = |final_runs: &str| -> crate::spec::ExperimentSpec {
            ron::from_str(&format!(
                r#"#![enable(implicit_some)]
                   ExperimentSpec(name: "f", backbone: (path: Some("m")), tasks: [(id: "sst2")], seeds: [1],
                   final_runs: Some({final_runs}))"#
            ))
            .expect("parses")
        };
        let few = too_few_pairs(&spec(
            r#"(top: 1, seeds: [2, 3, 4], baselines: ["lora", "adapter"])"#,
        ));
        assert!(few.is_some_and(|w| w.contains("3 seed(s) × 1 task(s) = 3 pairs")));
        assert_eq!(
            too_few_pairs(&spec(r#"(top: 1, baselines: ["lora", "adapter"])"#)),
            None
        );
        assert_eq!(too_few_pairs(&spec("(top: 1)")), None);
    }
}
