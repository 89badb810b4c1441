//! Comparison with numbers SciPy 1.17.1 and statsmodels 0.15.0 computed once
//! (`tests/stats_reference/gen_decisive_reference.py`):
//! `scipy.stats.permutation_test((x, y), mean(a) − mean(b), permutation_type='independent',
//! alternative='two-sided', n_resamples=N)`, `statsmodels.stats.weightstats.ttost_ind(x, y, low, upp,
//! usevar='unequal')`, `scipy.stats.nct.cdf/sf`, `statsmodels.stats.power.TTestIndPower().solve_power(...)` and
//! `2·norm.sf(norm.isf(α/2)/√t)` for the O'Brien–Fleming spending function.

use super::*;

use super::reference_tests::{close, sample, SampleArgs};

struct Exact {
    name: &'static str,
    x: SampleArgs,
    y: SampleArgs,
    diff: f64,
    p: f64,
}

#[rustfmt::skip]
const EXACT: &[Exact] = &[
    Exact { name: "distinct_4v4", x: (21, 4, 1.0, 0.3, 0), y: (22, 4, 1.0, 0.0, 0), diff: 0.10565188581687424, p: 0.6571428571428571 },
    Exact { name: "ties_4v4", x: (23, 4, 1.0, 0.0, 4), y: (24, 4, 1.0, 0.25, 4), diff: -0.5, p: 0.2 },
    Exact { name: "distinct_5v7", x: (25, 5, 1.0, 0.2, 0), y: (26, 7, 1.0, 0.0, 0), diff: 0.3020850899138754, p: 0.15404040404040403 },
    Exact { name: "ties_5v7", x: (27, 5, 1.0, 0.0, 8), y: (28, 7, 1.0, 0.0, 8), diff: -0.18928571428571428, p: 0.30303030303030304 },
    Exact { name: "distinct_8v8", x: (29, 8, 1.0, 0.35, 0), y: (30, 8, 1.0, 0.0, 0), diff: 0.4358586293158295, p: 0.010567210567210567 },
    Exact { name: "ties_8v8", x: (31, 8, 1.0, 0.2, 4), y: (32, 8, 1.0, 0.0, 4), diff: 0.4375, p: 0.04195804195804196 },
    Exact { name: "decimal_ties_8v8", x: (33, 8, 0.3, 0.62, 40), y: (34, 8, 0.3, 0.6, 40), diff: 0.03749999999999998, p: 0.4455322455322455 },
    Exact { name: "distinct_9v9", x: (35, 9, 1.0, 0.0, 0), y: (36, 9, 1.0, 0.3, 0), diff: -0.2633403911126444, p: 0.08103661044837515 },
    Exact { name: "all_tied_3v4", x: (37, 3, 0.0, 0.5, 0), y: (38, 4, 0.0, 0.5, 0), diff: 0.0, p: 1.0 },
];

#[test]
fn exact_permutation_matches_scipy() {
    for c in EXACT {
        let (x, y) = (sample(c.x), sample(c.y));
        let r = permutation_mean_difference(&x, &y, MIN_MONTE_CARLO, 1).expect("non-empty");
        assert!(r.exact, "{}", c.name);
        assert_eq!(
            r.permutations,
            binomial(x.len() + y.len(), x.len()),
            "{}",
            c.name
        );
        assert!(
            (r.diff - c.diff).abs() <= 1e-15,
            "{} diff {} vs {}",
            c.name,
            r.diff,
            c.diff
        );
        close(c.name, "p", r.p_value, c.p, 1e-10);
        assert!(r.p_value >= smallest_attainable_p(x.len(), y.len()));
    }
}

fn binomial(n: usize, k: usize) -> usize {
    (1..=k).fold(1, |c, i| c * (n - k + i) / i)
}

struct MonteCarlo {
    name: &'static str,
    x: SampleArgs,
    y: SampleArgs,
    diff: f64,
    p: f64,
    /// Random splits behind `p`; 0 when SciPy enumerated every split.
    reference_resamples: usize,
}

#[rustfmt::skip]
const MONTE_CARLO: &[MonteCarlo] = &[
    MonteCarlo { name: "mc_12v12", x: (41, 12, 1.0, 0.25, 0), y: (42, 12, 1.0, 0.0, 0), diff: 0.2745872127605585, p: 0.00807201951366711, reference_resamples: 0 },
    MonteCarlo { name: "mc_12v12_ties", x: (43, 12, 0.3, 0.64, 40), y: (44, 12, 0.3, 0.6, 40), diff: 0.07708333333333339, p: 0.03678559964735762, reference_resamples: 0 },
    MonteCarlo { name: "mc_20v15", x: (45, 20, 1.0, 0.2, 0), y: (46, 15, 1.0, 0.0, 0), diff: 0.10702462902987797, p: 0.32427418931452673, reference_resamples: 400000 },
];

/// A Monte-Carlo p lies within three binomial standard errors of SciPy's. The two-sided p is twice a one-sided
/// proportion q = p/2, so its standard error with N splits is 2·√(q(1−q)/N); the reference's own error adds
/// in quadrature when it is Monte Carlo too.
#[test]
fn monte_carlo_permutation_within_binomial_error_of_scipy() {
    const RESAMPLES: usize = 20_000;
    for c in MONTE_CARLO {
        let (x, y) = (sample(c.x), sample(c.y));
        let q = c.p / 2.0;
        let variance = |n: usize| 4.0 * q * (1.0 - q) / n as f64;
        let reference_variance = if c.reference_resamples == 0 {
            0.0
        } else {
            variance(c.reference_resamples)
        };
        let se = (variance(RESAMPLES) + reference_variance).sqrt();
        for seed in [1, 2, 3] {
            let r = permutation_mean_difference(&x, &y, RESAMPLES, seed).expect("non-empty");
            assert!(!r.exact && r.permutations == RESAMPLES, "{}", c.name);
            assert!((r.diff - c.diff).abs() <= 1e-15, "{} diff", c.name);
            let z = (r.p_value - c.p) / se;
            assert!(
                z.abs() <= 3.0,
                "{} seed {seed}: p {} vs scipy {} ({z:.2} standard errors)",
                c.name,
                r.p_value,
                c.p
            );
        }
    }
}

struct Tost {
    name: &'static str,
    x: SampleArgs,
    y: SampleArgs,
    low: f64,
    upp: f64,
    p: f64,
    t_lower: f64,
    p_lower: f64,
    t_upper: f64,
    p_upper: f64,
    df: f64,
}

#[rustfmt::skip]
const TOST: &[Tost] = &[
    Tost { name: "tost_inside", x: (51, 12, 0.1, 0.7, 0), y: (52, 10, 0.12, 0.69, 0), low: -0.05, upp: 0.05, p: 0.004698747113151108, t_lower: 4.5449370416062465, p_lower: 0.00018358423808597743, t_upper: -2.9680444674244786, p_upper: 0.004698747113151108, df: 15.33069985120583 },
    Tost { name: "tost_asymmetric", x: (53, 30, 0.2, 0.5, 0), y: (54, 25, 0.1, 0.52, 0), low: -0.04, upp: 0.08, p: 1.757526406137683e-05, t_lower: 5.659754127600018, p_lower: 5.498411883251459e-07, t_upper: -4.610258689201804, p_upper: 1.757526406137683e-05, df: 43.52501012730367 },
    Tost { name: "tost_ties", x: (55, 6, 0.3, 0.6, 40), y: (56, 9, 0.3, 0.61, 40), low: -0.1, upp: 0.1, p: 0.07695682080759562, t_lower: 1.5548944987836137, p_lower: 0.07695682080759562, t_upper: -2.240102244010293, p_upper: 0.025714142332126072, df: 9.130184741882672 },
    Tost { name: "tost_outside", x: (57, 8, 0.2, 0.8, 0), y: (58, 8, 0.2, 0.6, 0), low: -0.05, upp: 0.05, p: 0.9999653919661671, t_lower: 9.061202439671463, p_lower: 2.2593082460360215e-07, t_upper: 5.6696749827907045, p_upper: 0.9999653919661671, df: 13.35671140461873 },
];

#[test]
fn tost_matches_statsmodels() {
    for c in TOST {
        let r = tost_welch(&sample(c.x), &sample(c.y), c.low, c.upp).expect("two or more values");
        close(c.name, "p", r.p_value, c.p, 1e-10);
        close(c.name, "p_lower", r.p_lower, c.p_lower, 1e-10);
        close(c.name, "p_upper", r.p_upper, c.p_upper, 1e-10);
        close(c.name, "t_lower", r.t_lower, c.t_lower, 1e-12);
        close(c.name, "t_upper", r.t_upper, c.t_upper, 1e-12);
        close(c.name, "df", r.df, c.df, 1e-12);
    }
}

/// (t, df, nc, nct.cdf, nct.sf).
#[rustfmt::skip]
const NCT: &[(f64, f64, f64, f64, f64)] = &[
    (1.5, 10.0, 1.0, 0.6695168482153548, 0.3304831517846451),
    (-1.0, 5.0, 0.5, 0.08244409105672337, 0.9175559089432767),
    (3.0, 30.0, 2.5, 0.6709221372818337, 0.3290778627181663),
    (0.0, 7.0, -1.2, 0.8849303297782917, 0.11506967022170833),
    (2.0, 3.5, 4.0, 0.044504083240091204, 0.9554959167599087),
    (-2.5, 20.0, 1.8, 3.2575793873355026e-05, 0.9999674242061266),
    (10.0, 50.0, 8.0, 0.9171470417861304, 0.08285295821386958),
    (1.96, 1000.0, 2.8, 0.20054274129423164, 0.7994572587057683),
    (1.0, 2.0, -3.0, 0.9998468036371748, 0.000153196362825136),
    (4.0, 14.0, 0.7, 0.995698141983416, 0.004301858016584041),
    (-0.3, 1.0, 0.2, 0.3330035118104019, 0.6669964881895981),
    (2.1, 3140.0, 2.8, 0.24198815835476006, 0.7580118416452399),
    (0.5, 60.0, 12.0, 7.407592626399116e-31, 1.0),
    (20.0, 8.0, 15.0, 0.8045531842187692, 0.19544681578123074),
];

#[test]
fn noncentral_t_matches_scipy() {
    for &(t, df, nc, cdf, sf) in NCT {
        let name = format!("nct({t}, {df}, {nc})");
        close(&name, "cdf", nct_cdf(t, df, nc), cdf, 1e-9);
        close(&name, "sf", nct_sf(t, df, nc), sf, 1e-9);
    }
}

/// (n per group, alpha, power, statsmodels' solve_power, the same root to xtol = 1e-15).
#[rustfmt::skip]
const MDE: &[(usize, f64, f64, f64, f64)] = &[
    (2, 0.05, 0.8, 5.653489341914222, 5.653489266197129),
    (3, 0.05, 0.8, 3.070892269599019, 3.0708922663636895),
    (8, 0.05, 0.8, 1.5066342476563057, 1.5066342278766858),
    (20, 0.01, 0.9, 1.2762434896139756, 1.276243490154059),
    (100, 0.05, 0.8, 0.3981391138964959, 0.3981381375682361),
    (12, 0.1, 0.5, 0.692405980172688, 0.6924059836568502),
];

/// statsmodels' `brentq_expanding` stops at xtol = 1e-5, so its effect sizes are off the exact root by up to
/// 2.5e-6 relative here (n = 100); the exact root is matched to 1e-9.
#[test]
fn mde_matches_statsmodels() {
    for &(n, alpha, power, statsmodels, root) in MDE {
        let name = format!("mde(n = {n}, alpha = {alpha}, power = {power})");
        for sd in [1.0, 0.037] {
            let got = mde(sd, n, alpha, power);
            close(&name, "exact root", got, root * sd, 1e-9);
            close(&name, "statsmodels", got, statsmodels * sd, 1e-5);
        }
        let at_root = two_sample_power(root, n as f64, alpha);
        close(&name, "power at the root", at_root, power, 1e-9);
    }
}

/// (effect size d, alpha, power, ceil(solve_power(effect_size=d, nobs1=None, ...))); the generator also prints
/// the power one design short (all at least 4e-4 below the target) so no case sits on a rounding edge.
#[rustfmt::skip]
const DESIGNS: &[(f64, f64, f64, usize)] = &[
    (0.5, 0.05, 0.8, 64),
    (1.0, 0.05, 0.8, 17),
    (0.2, 0.01, 0.9, 746),
    (2.5, 0.05, 0.8, 4),
    (0.1, 0.05, 0.8, 1571),
    (0.8, 0.05, 0.95, 42),
    (3.0, 0.05, 0.8, 4),
];

#[test]
fn designs_needed_matches_statsmodels() {
    for &(d, alpha, power, n) in DESIGNS {
        for sd in [1.0, 0.02] {
            assert_eq!(
                designs_needed(d * sd, sd, alpha, power),
                Some(n),
                "d = {d}, alpha = {alpha}, power = {power}, sd = {sd}"
            );
        }
    }
}

/// (alpha, t, 2·norm.sf(norm.isf(alpha/2)/√t)).
#[rustfmt::skip]
const OBF: &[(f64, f64, f64)] = &[
    (0.05, 0.1, 5.720318790425403e-10),
    (0.05, 0.25, 8.857543832140365e-05),
    (0.05, 0.5, 0.005574596680784402),
    (0.05, 0.75, 0.023625121317601142),
    (0.05, 0.9, 0.03883004316452369),
    (0.1, 0.1, 1.977036241807652e-07),
    (0.1, 0.25, 0.0010029166656409618),
    (0.1, 0.5, 0.020009253716118027),
    (0.1, 0.75, 0.05752328618581628),
    (0.1, 0.9, 0.08294861315051288),
];

#[test]
fn obf_spending_matches_scipy() {
    for &(alpha, t, spent) in OBF {
        close(
            &format!("obf_spent({alpha}, {t})"),
            "spent",
            obf_spent(alpha, t),
            spent,
            1e-12,
        );
    }
}
