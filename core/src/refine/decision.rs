//! A stage's decision: per-candidate population statistics, the winner by the experiment's rule, and whether the
//! winner is significantly better than each other candidate.
//!
//! A design's score is the mean primary score over all its trials (search tasks × seeds). A design with a
//! failed or missing trial has no score: it is left out of the population and counted; a diverged trial does the
//! same, or scores its task's reference (chance) level under `diverged: Chance`.
//! Significance is selection-aware ([`crate::stats::all_pairs_mann_whitney`]): every pair of scored candidates is
//! tested with Mann–Whitney and Holm's correction runs over all those pairs, because the winner is the population
//! that looked best. A candidate is *significant* when its pair with the winner is rejected at [`ALPHA`] with the
//! winner ranking higher; the winner's row is significant only if every other candidate is. The family-wise error
//! of the stage's flags is then at most [`ALPHA`] when all candidates are equal (`calibration_tests.rs` simulates
//! it). The winner-vs-candidate KS, Mann–Whitney and Welch p-values, and their Holm adjustment over those m − 1
//! comparisons only, are reported alongside for description: that family ignores the selection.
//!
//! A raced stage ([`super::race`]) decides over the designs its rounds used: the winner is the survivor the rule
//! prefers, and significance is the race's, whose eliminations keep their error rate under repeated looks (a
//! candidate is significant when the race dropped it; the winner when every other scored candidate was dropped).
//! The Mann–Whitney, KS and Welch columns are then computed on the final populations as usual, for description
//! only: after a race they are not valid tests at level [`ALPHA`].

use serde::Serialize;

use crate::spec::{DecisionRule, DivergedRule};
use crate::stats::{self, ConfidenceInterval};
use crate::store::ResultStore;

use super::outcome::{self, MeanComparison, StageOutcome};
use super::plan::{CandidatePlan, PlannedDesign, StagePlan};
use super::race::{race, DesignScore, RaceCandidate, RaceEntry, RaceRule, RaceState};
use crate::trial::{child_seed, TrialOutcome, TrialStatus};

/// Significance level of the stage decisions.
pub const ALPHA: f64 = 0.05;
/// Bootstrap resamples for the confidence intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Level of the confidence intervals.
pub const CI_LEVEL: f64 = 0.95;

/// Statistics of one candidate's population, and its comparison with the winner.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateStats {
    pub stage: String,
    pub candidate: String,
    pub designs_planned: usize,
    /// Designs the sampler drew for this population, accepted or rejected by the budget.
    pub draws: u64,
    /// Draws the budget solver rejected (the design missed the budget by more than the tolerance).
    pub rejected: u64,
    /// Designs with a score (all their trials ok).
    pub n: usize,
    pub trials_ok: usize,
    pub trials_diverged: usize,
    pub trials_failed: usize,
    /// Trials stopped by learning-curve pruning; their partial scores count in the population.
    pub trials_pruned: usize,
    pub trials_missing: usize,
    /// Designs whose trials have all been run (whatever their status): the denominator of the rates below.
    pub designs_run: usize,
    /// Designs with at least one diverged trial.
    pub designs_diverged: usize,
    /// Designs with at least one failed trial.
    pub designs_failed: usize,
    /// Diverged designs that are in the population at their tasks' reference score (`diverged: Chance`).
    pub designs_at_chance: usize,
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub ci: Option<ConfidenceInterval>,
    /// Winner vs this candidate (absent on the winner's own row and for empty populations).
    pub versus_winner: Option<Comparison>,
    pub chosen: bool,
    pub significant: bool,
    /// Mean reference score of the scored designs (majority class, mean predictor; a design's is the mean over its
    /// trials, like its score); NaN when unknown.
    pub reference: f64,
    /// Scored designs whose score beats their reference; `None` when the references are unknown.
    pub designs_learned: Option<usize>,
    /// What the stage's race did with this candidate (raced stages only).
    pub race: Option<RaceCandidate>,
    /// The scores of the population, in design order (used for EDFs and recomputation).
    #[serde(skip)]
    pub scores: Vec<f64>,
    /// A note for people: why a population is empty, or that the advantage is not significant.
    pub note: String,
}

/// Winner vs one other candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub ks_d: f64,
    pub ks_p: f64,
    pub ks_p_holm: f64,
    /// U of the winner's population (SciPy's statistic with the winner as first sample).
    pub u: f64,
    pub u_p: f64,
    pub u_p_holm: f64,
    pub welch_t: f64,
    pub welch_p: f64,
    pub welch_p_holm: f64,
    /// Mann–Whitney p of winner vs this, Holm-adjusted over every pair of scored candidates (the selection-aware
    /// test the `significant` flag uses outside races).
    pub u_p_all_pairs: f64,
    /// Bootstrap CI of mean(winner) − mean(this).
    pub diff_ci: Option<ConfidenceInterval>,
    /// The primary test: the permutation test of the difference in means (Holm over all pairs outside races), and
    /// the TOST p of equivalence within the margin.
    pub means: MeanComparison,
}

/// The decision of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageDecision {
    pub stage: String,
    pub candidates: Vec<CandidateStats>,
    /// Index of the chosen candidate; `None` when no candidate has a single scored design. When `tied`, the first
    /// candidate, kept only so that the search can go on.
    pub winner: Option<usize>,
    /// Two or more populations, all with the same scores: the stage cannot prefer one.
    pub tied: bool,
    /// No scored design of any candidate beats the task's reference score.
    pub did_not_learn: bool,
    /// The race, for a raced stage.
    pub race: Option<RaceSummary>,
    /// Significant, equivalent or undecided; `None` when the stage did not decide (skipped, incomplete, or no
    /// scored design).
    pub outcome: Option<StageOutcome>,
    /// Pairs of scored candidates in the all-pairs family (m(m−1)/2 for m scored candidates).
    pub pairs_tested: usize,
    pub summary: String,
}

/// How far a stage's race went and what it cost against the full protocol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RaceSummary {
    pub looks_done: usize,
    pub looks_planned: usize,
    /// One candidate left or the last look made; false while a run is under way or was interrupted.
    pub finished: bool,
    pub alpha: f64,
    /// Alpha the tested looks of the difference test spent (O'Brien–Fleming-type spending; at most `alpha`).
    pub alpha_spent: f64,
    /// The look that found every pair of survivors equivalent and ended the race.
    pub equivalent_in: Option<usize>,
    /// Trials of the designs the race used.
    pub trials_used: usize,
    /// Trials of `max_samples` designs for every candidate: what the full protocol trains.
    pub trials_full: usize,
}

impl RaceSummary {
    fn describe(&self) -> String {
        let saved = self.trials_full.saturating_sub(self.trials_used);
        let share = if self.trials_full == 0 {
            0.0
        } else {
            100.0 * saved as f64 / self.trials_full as f64
        };
        let progress = match (self.finished, self.equivalent_in) {
            (false, _) => " (race not finished)".to_string(),
            (true, Some(look)) => {
                format!(" (stopped in round {look}: the survivors are equivalent)")
            }
            (true, None) => String::new(),
        };
        format!(
            "race: {} of {} rounds{progress}, {} trials of the full protocol's {} (saved {saved}, {share:.0} %)",
            self.looks_done, self.looks_planned, self.trials_used, self.trials_full
        )
    }
}

/// A design as the race sees it: scored when every trial ended well, unscored when one did not, pending while a
/// trial is not done (a failed one counts as not done under `--retry-failed`).
pub(crate) fn design_score(
    design: &PlannedDesign,
    store: &ResultStore,
    diverged: DivergedRule,
) -> DesignScore {
    let mut sum = 0.0;
    let mut pending = design.trials.is_empty();
    for trial in &design.trials {
        match store.get(&trial.id) {
            Some(r) if store.is_done(&trial.id) => match trial_score(&r.outcome, diverged) {
                Some(score) => sum += score,
                None => return DesignScore::Unscored,
            },
            _ => pending = true,
        }
    }
    if pending {
        DesignScore::Pending
    } else {
        DesignScore::Scored(sum / design.trials.len() as f64)
    }
}

/// The score a finished trial gives its design: the primary score of an ok or pruned trial; under
/// [`DivergedRule::Chance`] the reference score of a diverged one (when known); otherwise none.
fn trial_score(outcome: &TrialOutcome, diverged: DivergedRule) -> Option<f64> {
    match (&outcome.status, diverged) {
        // A pruned trial keeps the partial score it reached (learning-curve pruning).
        (TrialStatus::Ok | TrialStatus::Pruned { .. }, _) => outcome.primary,
        (TrialStatus::Diverged { .. }, DivergedRule::Chance) => outcome.reference,
        _ => None,
    }
}

/// Replays a raced stage's race from its plan and the store.
pub(crate) fn race_state(
    stage: &StagePlan,
    store: &ResultStore,
    rule: DecisionRule,
    diverged: DivergedRule,
    margin: f64,
) -> Option<RaceState> {
    let plan = stage.race?;
    let entries: Vec<RaceEntry> = stage
        .candidates
        .iter()
        .map(|c| RaceEntry {
            designs: c
                .designs
                .iter()
                .map(|d| design_score(d, store, diverged))
                .collect(),
            exhausted: c.error.is_some(),
        })
        .collect();
    let rule = RaceRule {
        decision: rule,
        margin,
        seed: child_seed(stage.candidates.first().map_or(0, |c| c.seed), &["race"]),
    };
    Some(race(&plan, &rule, &entries))
}

impl StageDecision {
    pub fn winner_name(&self) -> Option<&str> {
        self.winner.map(|i| self.candidates[i].candidate.as_str())
    }
}

/// Scores of a candidate's designs plus trial and design counts.
/// Only the first `limit` designs count (the race's, in a raced stage).
fn population(
    stage: &str,
    candidate: &CandidatePlan,
    store: &ResultStore,
    limit: usize,
    diverged_rule: DivergedRule,
) -> CandidateStats {
    let (mut ok, mut diverged, mut failed, mut pruned, mut missing) = (0, 0, 0, 0, 0);
    let mut counts = DesignCounts::default();
    let mut scores = Vec::new();
    let mut references: Vec<Option<f64>> = Vec::new();
    let designs = &candidate.designs[..limit.min(candidate.designs.len())];
    for design in designs {
        let mut sum = 0.0;
        let mut reference_sum = Some(0.0);
        let mut complete = !design.trials.is_empty();
        let (mut any_diverged, mut any_failed, mut any_missing) = (false, false, false);
        for trial in &design.trials {
            let Some(record) = store.get(&trial.id) else {
                missing += 1;
                any_missing = true;
                complete = false;
                continue;
            };
            let outcome = &record.outcome;
            match (&outcome.status, outcome.primary) {
                (TrialStatus::Ok, Some(_)) => ok += 1,
                (TrialStatus::Pruned { .. }, Some(_)) => pruned += 1,
                (TrialStatus::Diverged { .. }, _) => {
                    diverged += 1;
                    any_diverged = true;
                }
                _ => {
                    failed += 1;
                    any_failed = true;
                }
            }
            match trial_score(outcome, diverged_rule) {
                Some(score) => {
                    sum += score;
                    reference_sum = reference_sum.zip(outcome.reference).map(|(a, b)| a + b);
                }
                None => complete = false,
            }
        }
        if !any_missing {
            counts.run += 1;
            counts.diverged += usize::from(any_diverged);
            counts.failed += usize::from(any_failed);
        }
        if complete {
            let n = design.trials.len() as f64;
            scores.push(sum / n);
            references.push(reference_sum.map(|r| r / n));
            counts.at_chance += usize::from(any_diverged);
        }
    }
    let known: Option<Vec<f64>> = references.iter().copied().collect();
    let (reference, designs_learned) = match known.filter(|r| !r.is_empty()) {
        Some(r) => (
            r.iter().sum::<f64>() / r.len() as f64,
            Some(
                scores
                    .iter()
                    .zip(&r)
                    .filter(|(s, r)| {
                        crate::trial::beats_reference(Some(**s), Some(**r)) == Some(true)
                    })
                    .count(),
            ),
        ),
        None => (f64::NAN, None),
    };
    let summary = stats::summary(&scores);
    let ci_seed = child_seed(candidate.seed, &["bootstrap"]);
    let mut note = String::new();
    if let Some(error) = &candidate.error {
        note = error.clone();
    }
    if designs_learned == Some(0) {
        note = format!("did not learn: no design beats the reference score {reference:.4}");
    }
    if scores.is_empty() {
        let why = format!(
            "empty population: no design has all its trials scored ({ok} ok, {pruned} pruned, {diverged} \
             diverged, {failed} failed, {missing} not run)"
        );
        note = if note.is_empty() {
            why
        } else {
            format!("{note}; {why}")
        };
    }
    CandidateStats {
        stage: stage.to_string(),
        candidate: candidate.name.clone(),
        designs_planned: designs.len(),
        draws: designs.iter().map(|d| d.design.draws).sum(),
        rejected: designs.iter().map(|d| d.design.rejected).sum(),
        n: summary.n,
        trials_ok: ok,
        trials_diverged: diverged,
        trials_failed: failed,
        trials_pruned: pruned,
        trials_missing: missing,
        designs_run: counts.run,
        designs_diverged: counts.diverged,
        designs_failed: counts.failed,
        designs_at_chance: counts.at_chance,
        mean: summary.mean,
        median: summary.median,
        std: summary.std,
        ci: stats::bootstrap_mean_ci(&scores, BOOTSTRAP_RESAMPLES, CI_LEVEL, ci_seed),
        versus_winner: None,
        chosen: false,
        significant: false,
        reference,
        designs_learned,
        race: None,
        scores,
        note,
    }
}

/// Designs of one population by what their trials did.
#[derive(Default)]
struct DesignCounts {
    run: usize,
    diverged: usize,
    failed: usize,
    at_chance: usize,
}

impl CandidateStats {
    /// Share of the run designs with a diverged trial (NaN when none has run).
    pub fn diverged_rate(&self) -> f64 {
        self.designs_diverged as f64 / self.designs_run as f64
    }

    /// Share of the run designs with a failed trial (NaN when none has run).
    pub fn failed_rate(&self) -> f64 {
        self.designs_failed as f64 / self.designs_run as f64
    }
}

/// Decides a stage from its plan and the stored trials; `diverged` says what a diverged trial scores.
pub fn decide_stage(
    stage: &StagePlan,
    store: &ResultStore,
    rule: DecisionRule,
    diverged: DivergedRule,
    margin: f64,
) -> StageDecision {
    if let Some(reason) = &stage.skipped {
        return StageDecision {
            stage: stage.name.clone(),
            candidates: Vec::new(),
            winner: None,
            tied: false,
            did_not_learn: false,
            race: None,
            outcome: None,
            pairs_tested: 0,
            summary: format!("{}: skipped: {reason}", stage.name),
        };
    }
    let raced = race_state(stage, store, rule, diverged, margin);
    let mut candidates: Vec<CandidateStats> = stage
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let limit = raced
                .as_ref()
                .map_or(c.designs.len(), |r| r.candidates[i].designs);
            let mut stats = population(&stage.name, c, store, limit, diverged);
            stats.race = raced.as_ref().map(|r| r.candidates[i]);
            stats
        })
        .collect();
    let race = raced.as_ref().map(|r| race_summary(stage, r));
    // A stage with planned trials not yet stored (an interrupted run) decides nothing: its populations are whatever
    // happened to finish first, and a winner read from them would narrow the next stage by accident.
    let missing: usize = candidates.iter().map(|c| c.trials_missing).sum();
    if missing > 0 {
        return StageDecision {
            stage: stage.name.clone(),
            candidates,
            winner: None,
            tied: false,
            did_not_learn: false,
            race,
            outcome: None,
            pairs_tested: 0,
            summary: format!(
                "{}: incomplete ({missing} planned trial{} not stored yet); no decision until the run finishes it",
                stage.name,
                if missing == 1 { "" } else { "s" }
            ),
        };
    }
    let key = |c: &CandidateStats| match rule {
        DecisionRule::HighestMean => c.mean,
        DecisionRule::HighestMedian => c.median,
    };
    // Highest key among non-empty populations (in a race, among the survivors); ties go to the earlier candidate.
    let mut winner: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        if c.n == 0 || c.race.is_some_and(|r| r.dropped_in.is_some()) {
            continue;
        }
        if winner.is_none_or(|w| key(c) > key(&candidates[w])) {
            winner = Some(i);
        }
    }
    let Some(w) = winner else {
        return StageDecision {
            stage: stage.name.clone(),
            candidates,
            winner: None,
            tied: false,
            did_not_learn: false,
            race,
            outcome: None,
            pairs_tested: 0,
            summary: format!(
                "{}: no candidate has a scored design; the stage cannot decide",
                stage.name
            ),
        };
    };
    let winner_scores = candidates[w].scores.clone();
    let winner_seed = stage.candidates[w].seed;
    let others: Vec<usize> = (0..candidates.len())
        .filter(|&i| i != w && candidates[i].n > 0)
        .collect();
    // Owned, so the candidates' rows can be updated while the tests still read the scores.
    let owned: Vec<Vec<f64>> = candidates.iter().map(|c| c.scores.clone()).collect();
    let populations: Vec<&[f64]> = owned.iter().map(Vec::as_slice).collect();
    let pairs = stats::all_pairs_mann_whitney(&populations);
    // The primary test: differences in means (the winner is chosen by mean), all pairs, Holm.
    let mean_tests = outcome::permutation_pairs(&populations, child_seed(winner_seed, &["means"]));
    let better: Vec<bool> = others
        .iter()
        .map(|&i| outcome::better(&populations, &mean_tests, w, i, ALPHA))
        .collect();
    let mut comparisons: Vec<Comparison> = Vec::new();
    for &i in &others {
        let other = &candidates[i].scores;
        let ks = stats::ks_two_sample(&winner_scores, other);
        let mw = stats::mann_whitney_u(&winner_scores, other);
        let welch = stats::welch_t_test(&winner_scores, other);
        comparisons.push(Comparison {
            ks_d: ks.map_or(f64::NAN, |r| r.d),
            ks_p: ks.map_or(f64::NAN, |r| r.p_value),
            ks_p_holm: f64::NAN,
            u: mw.map_or(f64::NAN, |r| r.u),
            u_p: mw.map_or(f64::NAN, |r| r.p_value),
            u_p_holm: f64::NAN,
            welch_t: welch.map_or(f64::NAN, |r| r.t),
            welch_p: welch.map_or(f64::NAN, |r| r.p_value),
            welch_p_holm: f64::NAN,
            u_p_all_pairs: pairs.p_holm(w, i),
            diff_ci: stats::bootstrap_mean_difference_ci(
                &winner_scores,
                other,
                BOOTSTRAP_RESAMPLES,
                CI_LEVEL,
                child_seed(winner_seed, &["versus", &candidates[i].candidate]),
            ),
            means: outcome::compare(&populations, &mean_tests, w, i, margin),
        });
    }
    let holm = |pick: fn(&Comparison) -> f64| {
        stats::holm_adjust(&comparisons.iter().map(pick).collect::<Vec<_>>())
    };
    let (ks_holm, u_holm, welch_holm) = (holm(|c| c.ks_p), holm(|c| c.u_p), holm(|c| c.welch_p));
    let mut not_significant = Vec::new();
    for (k, (&i, mut comparison)) in others.iter().zip(comparisons).enumerate() {
        comparison.ks_p_holm = ks_holm[k];
        comparison.u_p_holm = u_holm[k];
        comparison.welch_p_holm = welch_holm[k];
        // In a race only its eliminations are tests at a known level (the race's own all-pairs correction, spent
        // over its looks); the final populations' sizes depend on the race, so the all-pairs p is descriptive there.
        let significant = match candidates[i].race {
            Some(r) => r.dropped_in.is_some(),
            None => better[k],
        };
        if !significant {
            not_significant.push(candidates[i].candidate.clone());
        }
        candidates[i].significant = significant;
        candidates[i].versus_winner = Some(comparison);
    }
    let empty: Vec<String> = candidates
        .iter()
        .filter(|c| c.n == 0)
        .map(|c| c.candidate.clone())
        .collect();
    let scored: Vec<&CandidateStats> = candidates.iter().filter(|c| c.n > 0).collect();
    let tied = scored.len() > 1 && {
        let sorted = |c: &CandidateStats| {
            let mut s = c.scores.clone();
            s.sort_by(f64::total_cmp);
            s
        };
        let first = sorted(scored[0]);
        scored.iter().all(|c| sorted(c) == first)
    };
    let did_not_learn = scored.iter().all(|c| c.designs_learned == Some(0));
    let winner_row = &mut candidates[w];
    winner_row.chosen = true;
    winner_row.significant = !tied && !others.is_empty() && not_significant.is_empty();
    let mut summary = if tied {
        // Any "choice" would be the candidate order, not the data; the search still needs one to go on.
        winner_row.note = "no decision possible: all populations equal; kept to continue".into();
        format!(
            "{}: no decision possible: all populations equal (n = {}, mean {:.4}); the search goes on with the \
             first candidate `{}`",
            stage.name, winner_row.n, winner_row.mean, winner_row.candidate
        )
    } else {
        format!(
            "{}: chose `{}` (n = {}, mean {:.4}, median {:.4})",
            stage.name, winner_row.candidate, winner_row.n, winner_row.mean, winner_row.median
        )
    };
    if tied {
        // The summary already says why nothing was chosen.
    } else if others.is_empty() {
        summary.push_str("; no other candidate had a scored design to compare with");
        winner_row.note = "chosen without comparison".into();
    } else if let Some(r) = &race {
        if not_significant.is_empty() {
            summary.push_str(&format!(
                "; every other candidate dropped by the race (family-wise error ≤ {})",
                r.alpha
            ));
        } else {
            let list = not_significant.join(", ");
            summary.push_str(&format!(
                "; NOT significant against {list} (still in the race when it ended)"
            ));
            winner_row.note = format!("advantage not significant vs {list}");
        }
    } else if not_significant.is_empty() {
        summary.push_str(&format!(
            "; better than every other candidate (permutation test of the difference in means, Holm over all {} \
             pairs, p < {ALPHA})",
            mean_tests.pairs()
        ));
    } else {
        let list = not_significant.join(", ");
        summary.push_str(&format!(
            "; NOT significant against {list} (permutation test of the difference in means, Holm over all {} \
             pairs, p ≥ {ALPHA} or the other's mean is higher)",
            mean_tests.pairs()
        ));
        winner_row.note = format!("advantage not significant vs {list}");
    }
    // A race's equivalence is its own sequential test; outside races the final populations are tested once.
    let race_equivalent = raced.as_ref().map(|r| r.equivalent_in.is_some());
    let stage_outcome = outcome::stage_outcome(
        &populations,
        winner_row.significant,
        race_equivalent,
        margin,
        ALPHA,
    );
    summary.push_str(&format!("; {}", stage_outcome.describe()));
    if did_not_learn {
        summary.push_str(&format!(
            "; did not learn: no design beats the reference score {:.4} (majority class, mean predictor or source copy)",
            winner_row.reference
        ));
    }
    if winner_row.designs_learned == Some(0) && !winner_row.note.contains("did not learn") {
        winner_row.note = if winner_row.note.is_empty() {
            "did not learn".to_string()
        } else {
            format!("{}; did not learn", winner_row.note)
        };
    }
    if !empty.is_empty() {
        summary.push_str(&format!("; empty populations: {}", empty.join(", ")));
    }
    if let Some(r) = &race {
        let dropped: Vec<String> = candidates
            .iter()
            .filter_map(|c| {
                let r = c.race?;
                Some(format!(
                    "{} in round {} (p = {:.2e})",
                    c.candidate, r.dropped_in?, r.drop_p?
                ))
            })
            .collect();
        if !dropped.is_empty() {
            summary.push_str(&format!("; dropped {}", dropped.join(", ")));
        }
        summary.push_str(&format!("; {}", r.describe()));
    }
    StageDecision {
        stage: stage.name.clone(),
        candidates,
        winner: Some(w),
        tied,
        did_not_learn,
        race,
        outcome: Some(stage_outcome),
        pairs_tested: pairs.pairs(),
        summary,
    }
}

/// For each of `others`, whether the winner `w` is significantly better than it in the Mann–Whitney all-pairs
/// family (the rule before the permutation test of means; its calibration is still simulated).
#[cfg(test)]
pub(crate) fn better_than(pairs: &stats::PairwiseTests, w: usize, others: &[usize]) -> Vec<bool> {
    others.iter().map(|&i| pairs.better(w, i, ALPHA)).collect()
}

/// The race's rounds and trials against the full protocol (`max_samples` designs for every candidate).
fn race_summary(stage: &StagePlan, state: &RaceState) -> RaceSummary {
    let per_design = stage
        .candidates
        .iter()
        .flat_map(|c| c.designs.first())
        .map(|d| d.trials.len())
        .next()
        .unwrap_or(0);
    let designs_used: usize = state.candidates.iter().map(|c| c.designs).sum();
    RaceSummary {
        looks_done: state.looks_done,
        looks_planned: state.looks.len(),
        finished: state.finished(),
        alpha: state.plan.alpha,
        alpha_spent: state.alpha_spent(),
        equivalent_in: state.equivalent_in,
        trials_used: designs_used * per_design,
        trials_full: stage.candidates.len() * state.plan.max_samples * per_design,
    }
}
