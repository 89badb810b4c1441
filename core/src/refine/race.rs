//! Racing: a stage reaches its decision with fewer trials by sampling designs in rounds and stopping as soon as
//! the evidence decides it, instead of training `samples` designs of every candidate.
//!
//! **Rounds.** Every candidate still in the race has its first `min_samples` designs decided at the first look,
//! then `batch` more at each further look, up to the stage's `samples` (the cap; the last batch may be smaller).
//! Design `i` of a candidate is drawn from the seed H(candidate seed, i), whatever happened in earlier rounds, so a
//! round always trains the same designs. Look l has information fraction t = nₗ / samples (1 at the last look).
//!
//! **Difference at a look.** Among the candidates still in the race that have a scored design, the best is the one
//! the experiment's decision rule prefers (highest mean, or median). Each other candidate `c` is compared with it
//! by the two-sided permutation test of the difference in means ([`stats::permutation_mean_difference`], exact up
//! to 10⁵ splits, seeded Monte Carlo above), Bonferroni-corrected over the m(m−1)/2 pairs of the m compared
//! candidates (the best is chosen from the data, so comparing it with the rest is a pick among all pairs); `c` is
//! dropped when the best's key is higher and the corrected p is below the look's threshold.
//!
//! **Thresholds: O'Brien–Fleming-type alpha spending** ([`stats::SequentialAlpha`], Lan–DeMets). A look may use
//! α(t) minus what tested looks already spent, α(t) = 2 − 2Φ(z₁₋α/₂ / √t): almost nothing at early looks, most of
//! α at the last, so stopping early costs little power at the end. A look whose smallest attainable corrected p
//! (the exact test's 2/C(a+b, a), or 2/(N+1) for N random splits, times the pairs) exceeds its threshold cannot
//! drop anyone: it is skipped and its alpha carried forward to the next look. The thresholds of the tested looks
//! sum to at most α, so by Boole's inequality over looks and pairs a candidate that is not worse is dropped with
//! probability at most α, however the looks depend on each other.
//!
//! **Equivalence at a look.** With two or more survivors, each with two scored designs, the race stops as
//! `equivalent` when every pair of survivors is inside ±margin by two one-sided Welch tests ([`stats::tost_welch`],
//! an intersection–union test: no correction over pairs) at a threshold from a second O'Brien–Fleming budget of α.
//! Declaring equivalence when some pair differs by the margin or more then happens with probability at most α.
//!
//! **End.** One survivor: `significant`. Stopped for equivalence: `equivalent`. The last look made with neither:
//! `undecided` (the stage reports the effect it could have seen).
//!
//! **State.** The race is a pure function of the candidates' design scores in design order ([`race`]); the runner
//! recomputes it from the plan and the store before every round, and `peftspace report` does the same, so there is
//! no race state to keep in step with the store, and a rerun after a kill replays the same rounds.

use serde::{Deserialize, Serialize};

use crate::spec::{DecisionRule, RaceSpec};
use crate::stats;

use super::outcome::PERMUTATIONS;

/// One stage's race: the experiment's race settings and the stage's cap on designs per candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RacePlan {
    pub min_samples: usize,
    pub batch: usize,
    /// The stage's `samples`: the most designs a candidate gets.
    pub max_samples: usize,
    pub alpha: f64,
}

impl RacePlan {
    pub fn new(spec: &RaceSpec, max_samples: usize) -> Self {
        RacePlan {
            min_samples: spec.min_samples,
            batch: spec.batch,
            max_samples,
            alpha: spec.alpha,
        }
    }

    /// The designs per candidate at each look: `min_samples`, then `batch` more each time, ending at `max_samples`.
    pub fn looks(&self) -> Vec<usize> {
        let cap = self.max_samples.max(1);
        let mut looks = vec![self.min_samples.clamp(1, cap)];
        let batch = self.batch.max(1);
        while let Some(&last) = looks.last() {
            if last >= cap {
                break;
            }
            looks.push((last + batch).min(cap));
        }
        looks
    }

    /// The information fraction of a look with `designs` per candidate: designs / cap (1 at the last look).
    pub fn information(&self, designs: usize) -> f64 {
        designs as f64 / self.max_samples.max(1) as f64
    }
}

/// What a race decides by: the experiment's decision rule, its equivalence margin, and the seed of the Monte Carlo
/// permutation tests (fixed per stage, so a replay draws the same splits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RaceRule {
    pub decision: DecisionRule,
    /// Margin of practical equality on the primary score.
    pub margin: f64,
    pub seed: u64,
}

/// The thresholds one look had: for dropping candidates and for stopping as equivalent (`None` when the look had
/// fewer than two candidates to compare).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LookThresholds {
    pub designs: usize,
    pub difference: Option<stats::Look>,
    pub equivalence: Option<stats::Look>,
}

/// One design of a candidate, as the race sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DesignScore {
    /// Some trial is not stored yet.
    Pending,
    /// Every trial ended well: the design's score.
    Scored(f64),
    /// Some trial diverged or failed: the design has no score (as in the full protocol).
    Unscored,
}

/// The designs of one candidate in design order, and whether more can be drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceEntry {
    pub designs: Vec<DesignScore>,
    /// The sampler cannot draw more designs (the constraint is impossible, or sampling stopped): the race uses
    /// what there is.
    pub exhausted: bool,
}

/// What the race did with one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RaceCandidate {
    /// Designs of this candidate the race used: those of its last look.
    pub designs: usize,
    /// The look (1-based round) that dropped it; `None` for a survivor.
    pub dropped_in: Option<usize>,
    /// The corrected p-value that dropped it: the permutation test against the best × the pairs compared, capped
    /// at 1.
    pub drop_p: Option<f64>,
    /// The candidate it lost to (the best at that look).
    pub dropped_by: Option<usize>,
}

/// The next round the race needs before it can look again.
#[derive(Debug, Clone, PartialEq)]
pub struct NextLook {
    /// 1-based.
    pub look: usize,
    /// Designs each of `candidates` needs decided.
    pub designs: usize,
    pub candidates: Vec<usize>,
}

/// The race so far.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceState {
    pub plan: RacePlan,
    /// Designs per candidate at each planned look.
    pub looks: Vec<usize>,
    /// Looks completed (their tests made).
    pub looks_done: usize,
    pub candidates: Vec<RaceCandidate>,
    /// `None` once the race is over: one candidate left, stopped for equivalence, or the last look made.
    pub next: Option<NextLook>,
    /// The thresholds of each completed look.
    pub thresholds: Vec<LookThresholds>,
    /// The look (1-based) that found every pair of survivors equivalent, which ended the race.
    pub equivalent_in: Option<usize>,
}

impl RaceState {
    pub fn finished(&self) -> bool {
        self.next.is_none()
    }

    /// Candidates not dropped.
    pub fn survivors(&self) -> Vec<usize> {
        (0..self.candidates.len())
            .filter(|&c| self.candidates[c].dropped_in.is_none())
            .collect()
    }

    /// Alpha spent by the tested looks of the difference test (at most the plan's alpha).
    pub fn alpha_spent(&self) -> f64 {
        self.thresholds
            .iter()
            .filter_map(|l| l.difference.filter(|d| d.is_test()))
            .map(|d| d.threshold())
            .sum()
    }
}

/// The key of the decision rule for a population.
pub(crate) fn rule_key(rule: DecisionRule, scores: &[f64]) -> f64 {
    match rule {
        DecisionRule::HighestMean => stats::mean(scores),
        DecisionRule::HighestMedian => stats::median(scores),
    }
}

/// Replays the race over the candidates' designs in design order, as far as the decided designs allow.
pub fn race(plan: &RacePlan, rule: &RaceRule, entries: &[RaceEntry]) -> RaceState {
    // A candidate with no design and none to come takes no part (its constraint cannot be applied).
    let usable = |c: &usize| !(entries[*c].exhausted && entries[*c].designs.is_empty());
    // With one candidate there is nothing to race: it gets its full population.
    let single = (0..entries.len()).filter(usable).count() <= 1;
    let looks = if single {
        vec![plan.max_samples]
    } else {
        plan.looks()
    };
    let mut state = RaceState {
        plan: *plan,
        looks: looks.clone(),
        looks_done: 0,
        candidates: vec![
            RaceCandidate {
                designs: 0,
                dropped_in: None,
                drop_p: None,
                dropped_by: None,
            };
            entries.len()
        ],
        next: None,
        thresholds: Vec::new(),
        equivalent_in: None,
    };
    let mut difference = stats::SequentialAlpha::new(plan.alpha);
    let mut equivalence = stats::SequentialAlpha::new(plan.alpha);
    let mut live: Vec<usize> = (0..entries.len()).collect();
    for (l, &n) in looks.iter().enumerate() {
        if !single && live.iter().filter(|c| usable(c)).count() <= 1 {
            break;
        }
        let needed: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&c| {
                let e = &entries[c];
                let have = e.designs.len().min(n);
                (have < n && !e.exhausted) || e.designs[..have].contains(&DesignScore::Pending)
            })
            .collect();
        if !needed.is_empty() {
            state.next = Some(NextLook {
                look: l + 1,
                designs: n,
                candidates: needed,
            });
            return state;
        }
        for &c in &live {
            state.candidates[c].designs = entries[c].designs.len().min(n);
        }
        state.looks_done = l + 1;
        let scored = |c: usize| -> Vec<f64> {
            entries[c].designs[..state.candidates[c].designs]
                .iter()
                .filter_map(|d| match d {
                    DesignScore::Scored(s) => Some(*s),
                    _ => None,
                })
                .collect()
        };
        let compared: Vec<(usize, Vec<f64>)> = live
            .iter()
            .map(|&c| (c, scored(c)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        let mut record = LookThresholds {
            designs: n,
            difference: None,
            equivalence: None,
        };
        if compared.len() >= 2 {
            let t = plan.information(n);
            let dropped = drop_worse(&compared, rule, l + 1, t, &mut difference, &mut record);
            for (c, p, by) in dropped {
                state.candidates[c].dropped_in = Some(l + 1);
                state.candidates[c].drop_p = Some(p);
                state.candidates[c].dropped_by = Some(by);
            }
            live.retain(|&c| state.candidates[c].dropped_in.is_none());
            let survivors: Vec<&[f64]> = compared
                .iter()
                .filter(|(c, _)| live.contains(c))
                .map(|(_, s)| s.as_slice())
                .collect();
            if survivors.len() >= 2
                && all_equivalent(&survivors, rule.margin, t, &mut equivalence, &mut record)
            {
                state.equivalent_in = Some(l + 1);
                state.thresholds.push(record);
                break;
            }
        }
        state.thresholds.push(record);
    }
    state
}

/// The difference test of one look: each compared candidate against the best, (candidate, corrected p, best) for
/// those dropped.
fn drop_worse(
    compared: &[(usize, Vec<f64>)],
    rule: &RaceRule,
    look: usize,
    information: f64,
    budget: &mut stats::SequentialAlpha,
    record: &mut LookThresholds,
) -> Vec<(usize, f64, usize)> {
    // Highest key; ties go to the earlier candidate, as in the stage decision.
    let mut best = 0;
    for (i, (_, s)) in compared.iter().enumerate() {
        if rule_key(rule.decision, s) > rule_key(rule.decision, &compared[best].1) {
            best = i;
        }
    }
    let m = compared.len();
    let pairs = (m * (m - 1) / 2) as f64;
    let (best_candidate, best_scores) = &compared[best];
    let floor = compared
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, (_, s))| {
            stats::smallest_attainable_p_for(best_scores.len(), s.len(), PERMUTATIONS) * pairs
        })
        .fold(f64::INFINITY, f64::min);
    let look_alpha = budget.look(information, floor);
    record.difference = Some(look_alpha);
    let stats::Look::Test { threshold } = look_alpha else {
        return Vec::new();
    };
    let best_key = rule_key(rule.decision, best_scores);
    let mut dropped = Vec::new();
    for (i, (c, s)) in compared.iter().enumerate() {
        if i == best || rule_key(rule.decision, s) >= best_key {
            continue;
        }
        let seed =
            crate::trial::child_seed(rule.seed, &["race", &look.to_string(), &c.to_string()]);
        // Only whether p · pairs < threshold matters, so the test may stop once it cannot be.
        if let Some(p) =
            stats::permutation_p_below(best_scores, s, PERMUTATIONS, seed, threshold / pairs)
        {
            dropped.push((*c, (p * pairs).min(1.0), *best_candidate));
        }
    }
    dropped
}

/// The equivalence test of one look: every pair of `survivors` inside ±margin by TOST at the look's threshold.
/// A look where some survivor has fewer than two scores (no variance to test with) spends nothing.
fn all_equivalent(
    survivors: &[&[f64]],
    margin: f64,
    information: f64,
    budget: &mut stats::SequentialAlpha,
    record: &mut LookThresholds,
) -> bool {
    let (mut worst, mut testable) = (0.0_f64, true);
    for i in 0..survivors.len() {
        for j in i + 1..survivors.len() {
            match stats::tost_welch(survivors[i], survivors[j], -margin, margin) {
                Some(t) if t.p_value.is_finite() => worst = worst.max(t.p_value),
                _ => testable = false,
            }
        }
    }
    // The smallest p TOST can give is not bounded away from 0, so only an untestable look is skipped.
    let attainable = if testable { 0.0 } else { f64::NAN };
    let look_alpha = budget.look(information, attainable);
    record.equivalence = Some(look_alpha);
    matches!(look_alpha, stats::Look::Test { threshold } if worst < threshold)
}

#[cfg(test)]
#[path = "race_tests.rs"]
mod tests;
