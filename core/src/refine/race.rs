//! Racing: a stage reaches its decision with fewer trials by sampling designs in rounds and dropping the
//! candidates that are already significantly worse than the best, instead of training `samples` designs of every
//! candidate.
//!
//! **Rounds.** Every candidate still in the race has its first `min_samples` designs decided at the first look,
//! then `batch` more at each further look, up to the stage's `samples` (the cap; the last batch may be smaller).
//! Design `i` of a candidate is drawn from the seed H(candidate seed, i), whatever happened in earlier rounds, so a
//! round always trains the same designs.
//!
//! **Test at a look.** Among the candidates still in the race that have a scored design, the best is the one the
//! experiment's decision rule prefers (highest mean, or median). Each other candidate `c` is compared with it by the
//! two-sided Mann–Whitney test of [`crate::stats::mann_whitney_u`]; `c` is dropped when the best's U exceeds its mean
//! (the best really ranks higher) and `min(1, p · m(m−1)/2)` < `alpha / L`, where m is the number of candidates
//! compared at this look and L the number of looks the stage plans.
//!
//! **Why the error rate holds under repeated looks.** A false elimination drops a candidate that is not worse than
//! the others. When all candidates are equal, every elimination is false, and at one look it needs some pair of
//! compared populations whose Mann–Whitney p-value is below `alpha / (L · m(m−1)/2)`. The populations at a look
//! have sizes fixed in advance (the look's design count, less designs whose trials did not end well, which does
//! not depend on the scores of the others), so each pair's p-value is valid on its own; the best is chosen from
//! the data, which is why the correction counts all m(m−1)/2 pairs rather than the m−1 comparisons made
//! (comparing the maximum with the rest is anti-conservative otherwise). By the union bound over pairs, a look
//! falsely eliminates with probability at most `alpha / L`, and over the L looks at most `alpha` — however the
//! looks depend on each other. This is Bonferroni over looks (an alpha-spending rule that spends alpha/L at each
//! look) and over pairs: conservative, but it needs no model of the scores and no pairing of designs across
//! candidates. F-Race's Friedman test would need blocks (the same design instance for every candidate), which the
//! candidates' independent populations do not have.
//!
//! **State.** The race is a pure function of the candidates' design scores in design order ([`race`]); the runner
//! recomputes it from the plan and the store before every round, and `peftspace report` does the same, so there is
//! no race state to keep in step with the store, and a rerun after a kill replays the same rounds.

use serde::{Deserialize, Serialize};

use crate::spec::{DecisionRule, RaceSpec};
use crate::stats;

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

    /// The part of alpha each look spends (the same at every look; they sum to alpha).
    pub fn alpha_per_look(&self) -> f64 {
        self.alpha / self.looks().len() as f64
    }
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
    /// The corrected p-value that dropped it: Mann–Whitney against the best × the pairs compared, capped at 1.
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
    /// `None` once the race is over: one candidate left, or the last look made.
    pub next: Option<NextLook>,
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
}

/// The key of the decision rule for a population.
pub(crate) fn rule_key(rule: DecisionRule, scores: &[f64]) -> f64 {
    match rule {
        DecisionRule::HighestMean => stats::mean(scores),
        DecisionRule::HighestMedian => stats::median(scores),
    }
}

/// Replays the race over the candidates' designs in design order, as far as the decided designs allow.
pub fn race(plan: &RacePlan, rule: DecisionRule, entries: &[RaceEntry]) -> RaceState {
    // A candidate with no design and none to come takes no part (its constraint cannot be applied).
    let usable = |c: &usize| !(entries[*c].exhausted && entries[*c].designs.is_empty());
    // With one candidate there is nothing to race: it gets its full population.
    let single = (0..entries.len()).filter(usable).count() <= 1;
    let looks = if single {
        vec![plan.max_samples]
    } else {
        plan.looks()
    };
    let threshold = plan.alpha / looks.len() as f64;
    let mut candidates = vec![
        RaceCandidate {
            designs: 0,
            dropped_in: None,
            drop_p: None,
            dropped_by: None,
        };
        entries.len()
    ];
    let mut live: Vec<usize> = (0..entries.len()).collect();
    let mut looks_done = 0;
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
            let state_next = NextLook {
                look: l + 1,
                designs: n,
                candidates: needed,
            };
            return RaceState {
                plan: *plan,
                looks,
                looks_done,
                candidates,
                next: Some(state_next),
            };
        }
        for &c in &live {
            candidates[c].designs = entries[c].designs.len().min(n);
        }
        looks_done = l + 1;
        let scored = |c: usize| -> Vec<f64> {
            entries[c].designs[..candidates[c].designs]
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
        if compared.len() < 2 {
            continue;
        }
        // Highest key; ties go to the earlier candidate, as in the stage decision.
        let mut best = 0;
        for (i, (_, s)) in compared.iter().enumerate() {
            if rule_key(rule, s) > rule_key(rule, &compared[best].1) {
                best = i;
            }
        }
        let m = compared.len();
        let pairs = (m * (m - 1) / 2) as f64;
        let (best_candidate, best_scores) = &compared[best];
        for (i, (c, s)) in compared.iter().enumerate() {
            if i == best {
                continue;
            }
            let Some(mw) = stats::mann_whitney_u(best_scores, s) else {
                continue;
            };
            let best_ranks_higher = mw.u > (best_scores.len() * s.len()) as f64 / 2.0;
            let p = (mw.p_value * pairs).min(1.0);
            if best_ranks_higher && p < threshold {
                candidates[*c].dropped_in = Some(l + 1);
                candidates[*c].drop_p = Some(p);
                candidates[*c].dropped_by = Some(*best_candidate);
            }
        }
        live.retain(|&c| candidates[c].dropped_in.is_none());
    }
    RaceState {
        plan: *plan,
        looks,
        looks_done,
        candidates,
        next: None,
    }
}

#[cfg(test)]
#[path = "race_tests.rs"]
mod tests;
