//! How a stage ends: `significant` (a winner at the stage's α), `equivalent` (every pair of candidates shown to
//! differ by less than the equivalence margin) or `undecided` (neither; with the minimum detectable effect its
//! populations had and the designs per candidate that would decide it).
//!
//! The winner is the candidate with the highest mean, so the primary test is on differences in means: a
//! two-sided permutation test ([`stats::permutation_mean_difference`], exact up to 10⁵ splits, seeded Monte Carlo
//! above) for every pair of scored candidates, Holm-adjusted over all pairs because the winner is the population
//! that looked best. Equivalence is an intersection–union test: every pair's two one-sided Welch tests
//! ([`stats::tost_welch`]) reject at α, which needs no multiplicity correction. The minimum detectable effect is
//! that of a two-sided two-sample t-test at 80 % power ([`stats::mde`]) with the pooled within-candidate standard
//! deviation, the smallest population and α divided by the number of pairs.

use serde::Serialize;

use crate::stats;

/// The margin of practical equality when the experiment sets none: one point of the primary score.
pub const DEFAULT_EQUIVALENCE_MARGIN: f64 = 0.01;
/// Random splits of a permutation test that cannot be exact.
pub const PERMUTATIONS: usize = 10_000;
/// Power at which the minimum detectable effect and the designs needed are given.
pub const POWER: f64 = 0.8;

/// The three ways a stage ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Significant,
    Equivalent,
    Undecided,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Significant => "significant",
            Outcome::Equivalent => "equivalent",
            Outcome::Undecided => "undecided",
        }
    }
}

/// A stage's outcome with what it rests on.
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub outcome: Outcome,
    /// The equivalence margin on the primary score.
    pub margin: f64,
    pub alpha: f64,
    /// Pooled within-candidate standard deviation of the design scores (NaN with fewer than two per candidate).
    pub pooled_sd: f64,
    /// The smallest difference in means the stage had 80 % power to detect at its α (per pair).
    pub mde: f64,
    /// Designs per candidate a stage needs for 80 % power against a difference of `margin` with this sd: with as
    /// many, the stage ends significant or (most likely) equivalent. `None` when the sd is unknown.
    pub designs_needed: Option<usize>,
}

/// The winner against one other candidate on the primary test.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanComparison {
    /// mean(winner) − mean(other).
    pub mean_diff: f64,
    /// Two-sided permutation p of the difference in means, unadjusted.
    pub p_raw: f64,
    /// The same, Holm-adjusted over every pair of scored candidates.
    pub p: f64,
    /// TOST p that |mean difference| < margin (the larger of the two one-sided Welch p-values).
    pub p_equivalence: f64,
}

/// Permutation tests of the difference in means of every pair of populations with two non-empty samples,
/// Holm-adjusted over those pairs; each pair's Monte Carlo splits (when it cannot be exact) are seeded from `seed`
/// and the pair.
pub fn permutation_pairs(populations: &[&[f64]], seed: u64) -> stats::AllPairs {
    stats::AllPairs::new(populations.len(), |i, j| {
        let pair_seed =
            crate::trial::child_seed(seed, &["permutation", &i.to_string(), &j.to_string()]);
        stats::permutation_mean_difference(populations[i], populations[j], PERMUTATIONS, pair_seed)
            .map(|r| r.p_value)
    })
}

/// The winner `w` against candidate `i`.
pub fn compare(
    populations: &[&[f64]],
    tests: &stats::AllPairs,
    w: usize,
    i: usize,
    margin: f64,
) -> MeanComparison {
    let (p_raw, p) = (tests.p_raw(w, i), tests.p_holm(w, i));
    MeanComparison {
        mean_diff: stats::mean(populations[w]) - stats::mean(populations[i]),
        p_raw,
        p,
        p_equivalence: stats::tost_welch(populations[w], populations[i], -margin, margin)
            .map_or(f64::NAN, |t| t.p_value),
    }
}

/// Whether the winner `w` is significantly better than `i` on the primary test at `alpha`.
pub fn better(
    populations: &[&[f64]],
    tests: &stats::AllPairs,
    w: usize,
    i: usize,
    alpha: f64,
) -> bool {
    let p = tests.p_holm(w, i);
    p < alpha && stats::mean(populations[w]) > stats::mean(populations[i])
}

/// The stage's outcome: `significant` when the winner is significantly better than every other scored candidate
/// (`winner_significant`, the stage's own rule: all pairs, or a race's eliminations), else `equivalent` when every
/// pair of scored candidates is inside ±`margin` by TOST at `alpha` (or, for a race, `race_equivalent`: its
/// sequential equivalence test stopped it), else `undecided`.
pub fn stage_outcome(
    populations: &[&[f64]],
    winner_significant: bool,
    race_equivalent: Option<bool>,
    margin: f64,
    alpha: f64,
) -> StageOutcome {
    let scored: Vec<&[f64]> = populations
        .iter()
        .copied()
        .filter(|p| !p.is_empty())
        .collect();
    let pairs = scored.len() * scored.len().saturating_sub(1) / 2;
    let pair_alpha = alpha / pairs.max(1) as f64;
    let pooled_sd = pooled_sd(&scored);
    let smallest = scored.iter().map(|p| p.len()).min().unwrap_or(0);
    let equivalent = pairs > 0
        && race_equivalent.unwrap_or_else(|| {
            (0..scored.len()).all(|i| {
                (i + 1..scored.len()).all(|j| {
                    stats::tost_welch(scored[i], scored[j], -margin, margin)
                        .is_some_and(|t| t.p_value < alpha)
                })
            })
        });
    let outcome = if winner_significant && pairs > 0 {
        Outcome::Significant
    } else if equivalent {
        Outcome::Equivalent
    } else {
        Outcome::Undecided
    };
    StageOutcome {
        outcome,
        margin,
        alpha,
        pooled_sd,
        mde: stats::mde(pooled_sd, smallest, pair_alpha, POWER),
        designs_needed: stats::designs_needed(margin, pooled_sd, pair_alpha, POWER),
    }
}

/// √(Σ (nᵢ − 1) sᵢ² / Σ (nᵢ − 1)) over the populations with at least two values; NaN when there are none.
pub fn pooled_sd(populations: &[&[f64]]) -> f64 {
    let (mut sum, mut df) = (0.0, 0usize);
    for p in populations.iter().filter(|p| p.len() >= 2) {
        let s = stats::summary(p).std;
        sum += (p.len() - 1) as f64 * s * s;
        df += p.len() - 1;
    }
    if df == 0 {
        f64::NAN
    } else {
        (sum / df as f64).sqrt()
    }
}

impl StageOutcome {
    /// One clause for the stage summary: `significant`, `equivalent within ±0.01`, or `undecided: …`.
    pub fn describe(&self) -> String {
        match self.outcome {
            Outcome::Significant => format!("outcome: significant at α = {}", self.alpha),
            Outcome::Equivalent => format!(
                "outcome: equivalent within ±{} (every pair, two one-sided Welch tests at α = {})",
                self.margin, self.alpha
            ),
            Outcome::Undecided => {
                let needed = self
                    .designs_needed
                    .map_or("an unknown number of".to_string(), |n| n.to_string());
                format!(
                    "outcome: undecided: the populations could detect a difference of {} at 80 % power (sd {}); \
                     {needed} designs per candidate would decide ±{}",
                    fmt4(self.mde),
                    fmt4(self.pooled_sd),
                    self.margin
                )
            }
        }
    }
}

fn fmt4(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "unknown".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_apart_populations_are_significant_close_ones_equivalent_noisy_ones_undecided() {
        let a: Vec<f64> = (0..8).map(|i| 0.80 + 0.001 * i as f64).collect();
        let b: Vec<f64> = (0..8).map(|i| 0.70 + 0.001 * i as f64).collect();
        let tests = permutation_pairs(&[&a, &b], 1);
        assert!(better(&[&a, &b], &tests, 0, 1, 0.05));
        assert_eq!(
            stage_outcome(&[&a, &b], true, None, 0.01, 0.05).outcome,
            Outcome::Significant
        );

        let c: Vec<f64> = (0..8).map(|i| 0.801 + 0.001 * i as f64).collect();
        let close = stage_outcome(&[&a, &c], false, None, 0.01, 0.05);
        assert_eq!(close.outcome, Outcome::Equivalent);

        let noisy_a = [0.6, 0.9, 0.7, 0.85];
        let noisy_b = [0.65, 0.8, 0.9, 0.6];
        let undecided = stage_outcome(&[&noisy_a, &noisy_b], false, None, 0.01, 0.05);
        assert_eq!(undecided.outcome, Outcome::Undecided);
        assert!(undecided.mde > 0.1, "{undecided:?}");
        assert!(
            undecided.designs_needed.is_some_and(|n| n > 100),
            "{undecided:?}"
        );
        assert!(undecided.describe().contains("undecided"));
    }

    /// The primary rule's family-wise error on simulated stages: with all candidates equal (normal scores, sd 0.03,
    /// rounded to 1/1000 so ties occur), the share of stages that end `significant` stays within α plus three
    /// binomial standard errors; with candidate 0 better by two sd it is found in most stages.
    #[test]
    fn equal_candidates_end_significant_in_at_most_alpha_of_stages() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let stages = 1000;
        for (m, n, shift, seed) in [(2, 8, 0.0, 11), (3, 6, 0.0, 12), (2, 8, 0.06, 13)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let normal = Normal::new(0.8, 0.03).expect("normal");
            let mut significant = 0;
            for stage in 0..stages {
                let pops: Vec<Vec<f64>> = (0..m)
                    .map(|c| {
                        (0..n)
                            .map(|_| {
                                let v: f64 =
                                    normal.sample(&mut rng) + if c == 0 { shift } else { 0.0 };
                                (v * 1000.0).round() / 1000.0
                            })
                            .collect()
                    })
                    .collect();
                let slices: Vec<&[f64]> = pops.iter().map(Vec::as_slice).collect();
                let w = (0..m)
                    .max_by(|&a, &b| stats::mean(slices[a]).total_cmp(&stats::mean(slices[b])))
                    .unwrap_or(0);
                let tests = permutation_pairs(&slices, stage as u64);
                let all = (0..m)
                    .filter(|&i| i != w)
                    .all(|i| better(&slices, &tests, w, i, 0.05));
                significant += usize::from(all);
            }
            let rate = significant as f64 / stages as f64;
            if shift == 0.0 {
                let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / stages as f64).sqrt();
                assert!(rate <= bound, "m = {m}, n = {n}: {rate} > {bound}");
            } else {
                assert!(rate >= 0.8, "two sd apart, n = {n}: found in {rate}");
            }
        }
    }

    #[test]
    fn the_pooled_sd_weighs_each_population_by_its_degrees_of_freedom() {
        // Variances 1 (n = 3) and 4 (n = 2): (2·1 + 1·4) / 3 = 2.
        let x = [0.0, 1.0, 2.0];
        let y = [0.0, 2.0 * 2f64.sqrt()];
        assert!((pooled_sd(&[&x, &y]) - 2f64.sqrt()).abs() < 1e-12);
        assert!(pooled_sd(&[&[1.0]]).is_nan());
    }
}
