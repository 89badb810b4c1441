//! The race on simulated populations with known differences: a clear winner, a near tie, all equal. Each stage is
//! simulated from its own seed, every candidate's N designs drawn up front (a stored full run), and the race
//! replays them in order, as it does over a results directory.

use super::*;
use crate::trial::child_seed;

const N: usize = 100;
const SIMULATIONS: usize = 1000;

fn uniform(seed: u64, parts: &[&str]) -> f64 {
    ((child_seed(seed, parts) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// N scores of a candidate: normal(mean, sd) by Box–Muller, rounded to 1/1000 like a dev-set accuracy (so ties
/// occur as with real scores).
fn population(seed: u64, mean: f64, sd: f64) -> Vec<f64> {
    (0..N)
        .map(|i| {
            let i = i.to_string();
            let (u1, u2) = (uniform(seed, &[&i, "u1"]), uniform(seed, &[&i, "u2"]));
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            ((mean + sd * z) * 1000.0).round() / 1000.0
        })
        .collect()
}

fn entries(populations: &[Vec<f64>]) -> Vec<RaceEntry> {
    populations
        .iter()
        .map(|p| RaceEntry {
            designs: p.iter().map(|&s| DesignScore::Scored(s)).collect(),
            exhausted: false,
        })
        .collect()
}

fn argmax_mean(populations: &[&[f64]]) -> usize {
    let mut best = 0;
    for (i, p) in populations.iter().enumerate() {
        if stats::mean(p) > stats::mean(populations[best]) {
            best = i;
        }
    }
    best
}

/// What one replayed stage gave: the full protocol's choice, the race's choice, designs used, eliminations.
struct Outcome {
    full: usize,
    raced: usize,
    designs: usize,
    dropped: Vec<usize>,
}

fn simulate(stage: u64, means: &[f64], sd: f64, plan: &RacePlan) -> Outcome {
    let populations: Vec<Vec<f64>> = means
        .iter()
        .enumerate()
        .map(|(c, &m)| population(child_seed(stage, &[&c.to_string()]), m, sd))
        .collect();
    let state = race(plan, DecisionRule::HighestMean, &entries(&populations));
    assert!(state.finished(), "every design is decided");
    let full = argmax_mean(&populations.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let survivors = state.survivors();
    let prefixes: Vec<&[f64]> = survivors
        .iter()
        .map(|&c| &populations[c][..state.candidates[c].designs])
        .collect();
    Outcome {
        full,
        raced: survivors[argmax_mean(&prefixes)],
        designs: state.candidates.iter().map(|c| c.designs).sum(),
        dropped: (0..means.len())
            .filter(|&c| state.candidates[c].dropped_in.is_some())
            .collect(),
    }
}

fn plan(alpha: f64) -> RacePlan {
    RacePlan {
        min_samples: 10,
        batch: 5,
        max_samples: N,
        alpha,
    }
}

#[test]
fn looks_run_from_min_samples_in_batches_to_the_cap() {
    let p = |min, batch, max| RacePlan {
        min_samples: min,
        batch,
        max_samples: max,
        alpha: 0.05,
    };
    assert_eq!(p(10, 5, 30).looks(), vec![10, 15, 20, 25, 30]);
    assert_eq!(p(10, 7, 20).looks(), vec![10, 17, 20]);
    assert_eq!(p(40, 5, 30).looks(), vec![30]);
    assert_eq!(p(10, 5, 100).looks().len(), 19);
    assert!((p(10, 5, 30).alpha_per_look() - 0.01).abs() < 1e-15);
}

#[test]
fn clear_winner_same_decision_as_full_protocol_with_at_most_half_the_trials() {
    // The winner sits in the middle, so the candidates' order does not help it.
    let means = [0.67, 0.70, 0.64];
    let (mut same, mut designs) = (0, 0);
    for s in 0..SIMULATIONS {
        let o = simulate(
            child_seed(11, &["clear", &s.to_string()]),
            &means,
            0.03,
            &plan(0.05),
        );
        same += usize::from(o.full == o.raced);
        designs += o.designs;
    }
    let agreement = same as f64 / SIMULATIONS as f64;
    let share = designs as f64 / (SIMULATIONS * N * means.len()) as f64;
    println!("clear winner: same decision {agreement:.3}, trials {share:.3} of the full protocol");
    assert!(agreement >= 0.95, "agreement {agreement}");
    assert!(share <= 0.5, "share of trials {share}");
}

#[test]
fn all_equal_false_eliminations_stay_below_alpha_and_a_naive_rule_would_not() {
    let alpha = 0.05;
    let means = [0.7, 0.7, 0.7];
    let looks = plan(alpha).looks().len() as f64;
    let rate = |plan: &RacePlan| {
        let stages_with_drops = (0..SIMULATIONS)
            .filter(|s| {
                let o = simulate(
                    child_seed(12, &["equal", &s.to_string()]),
                    &means,
                    0.03,
                    plan,
                );
                !o.dropped.is_empty()
            })
            .count();
        stages_with_drops as f64 / SIMULATIONS as f64
    };
    let raced = rate(&plan(alpha));
    // Testing every look at the full alpha without counting pairs (what the correction prevents): the
    // threshold alpha / L after the × pairs correction becomes a plain p < alpha per comparison.
    let naive = rate(&plan(alpha * looks * 3.0));
    println!("all equal: false eliminations {raced:.3} (naive per-look test {naive:.3})");
    assert!(raced <= alpha, "false elimination rate {raced}");
    assert!(
        naive > alpha,
        "the simulation must be able to see a bad rule: {naive}"
    );
}

#[test]
fn near_tie_rarely_drops_the_best_and_never_overspends() {
    let means = [0.695, 0.70, 0.69];
    let (mut best_dropped, mut same, mut designs) = (0, 0, 0);
    for s in 0..SIMULATIONS {
        let o = simulate(
            child_seed(13, &["tie", &s.to_string()]),
            &means,
            0.03,
            &plan(0.05),
        );
        best_dropped += usize::from(o.dropped.contains(&1));
        same += usize::from(o.full == o.raced);
        designs += o.designs;
    }
    let rate = best_dropped as f64 / SIMULATIONS as f64;
    println!(
        "near tie: best dropped {rate:.3}, same decision {:.3}, trials {:.3}",
        same as f64 / SIMULATIONS as f64,
        designs as f64 / (SIMULATIONS * N * means.len()) as f64
    );
    assert!(
        rate <= 0.05,
        "the best candidate was dropped in {rate} of stages"
    );
}

#[test]
fn rounds_wait_for_pending_designs_and_resume_where_they_stopped() {
    let p = RacePlan {
        min_samples: 3,
        batch: 2,
        max_samples: 7,
        alpha: 0.05,
    };
    let start = race(
        &p,
        DecisionRule::HighestMean,
        &[
            RaceEntry {
                designs: vec![],
                exhausted: false,
            },
            RaceEntry {
                designs: vec![DesignScore::Scored(0.5)],
                exhausted: false,
            },
        ],
    );
    assert_eq!(
        start.next,
        Some(NextLook {
            look: 1,
            designs: 3,
            candidates: vec![0, 1]
        })
    );
    // Second look pending for the first candidate only.
    let scored = |v: &[f64]| {
        v.iter()
            .map(|&s| DesignScore::Scored(s))
            .collect::<Vec<_>>()
    };
    let mut first = scored(&[0.5, 0.6, 0.7]);
    first.push(DesignScore::Pending);
    let state = race(
        &p,
        DecisionRule::HighestMean,
        &[
            RaceEntry {
                designs: first,
                exhausted: false,
            },
            RaceEntry {
                designs: scored(&[0.5, 0.6, 0.7, 0.6, 0.5]),
                exhausted: false,
            },
        ],
    );
    assert_eq!(state.looks_done, 1);
    assert_eq!(
        state.next,
        Some(NextLook {
            look: 2,
            designs: 5,
            candidates: vec![0]
        })
    );
}

#[test]
fn clearly_worse_candidate_is_dropped_and_the_race_stops() {
    let p = RacePlan {
        min_samples: 8,
        batch: 4,
        max_samples: 40,
        alpha: 0.05,
    };
    let good: Vec<f64> = (0..40).map(|i| 0.8 + 0.001 * i as f64).collect();
    let bad: Vec<f64> = (0..40).map(|i| 0.5 + 0.001 * i as f64).collect();
    let state = race(&p, DecisionRule::HighestMean, &entries(&[bad, good]));
    assert!(state.finished());
    // Exact Mann–Whitney with 8 vs 8 fully separated: p = 2/12870, below 0.05 / 9 looks.
    assert_eq!(state.candidates[0].dropped_in, Some(1));
    assert_eq!(state.candidates[0].dropped_by, Some(1));
    assert!((state.candidates[0].drop_p.expect("p") - 2.0 / 12870.0).abs() < 1e-12);
    assert_eq!(state.survivors(), vec![1]);
    assert_eq!(
        (state.candidates[0].designs, state.candidates[1].designs),
        (8, 8)
    );
}

#[test]
fn a_single_candidate_gets_its_full_population() {
    let p = RacePlan {
        min_samples: 3,
        batch: 2,
        max_samples: 9,
        alpha: 0.05,
    };
    let state = race(
        &p,
        DecisionRule::HighestMean,
        &[RaceEntry {
            designs: vec![],
            exhausted: false,
        }],
    );
    assert_eq!(state.next.map(|n| n.designs), Some(9));
}
