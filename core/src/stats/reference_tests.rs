//! Comparison with numbers SciPy 1.17 computed once (`tests/stats_reference/gen_unit_reference.py`). For each case:
//! `scipy.stats.ks_2samp(x, y, alternative='two-sided', method='auto')`,
//! `scipy.stats.mannwhitneyu(x, y, use_continuity=True, alternative='two-sided', method='auto')`,
//! `scipy.stats.ttest_ind(x, y, equal_var=False)`, `numpy.mean/median/std(ddof=1)` of x.

use super::*;

/// (seed, n, scale, shift, round_to): n LCG uniforms scaled and shifted, rounded to 1/round_to when non-zero.
/// Shared with the other reference tests, whose generators use the same LCG.
pub(super) type SampleArgs = (u64, usize, f64, f64, u32);

struct Case {
    name: &'static str,
    x: SampleArgs,
    y: SampleArgs,
    ks_d: f64,
    ks_p: f64,
    u: f64,
    u_p: f64,
    t: f64,
    t_df: f64,
    t_p: f64,
    mean_x: f64,
    median_x: f64,
    std_x: f64,
}

/// The generators' LCG, bit for bit: n uniforms in [0, 1).
pub(super) fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// [`lcg`] scaled, shifted and rounded as the generators do.
pub(super) fn sample((seed, n, scale, shift, round_to): SampleArgs) -> Vec<f64> {
    lcg(seed, n)
        .into_iter()
        .map(|u| {
            let v = u * scale + shift;
            if round_to == 0 {
                v
            } else {
                // Python's round() rounds halves to even.
                (v * round_to as f64).round_ties_even() / round_to as f64
            }
        })
        .collect()
}

/// |got − want| ≤ rel·|want|, or exact equality when want is 0.
pub(super) fn close(name: &str, what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= rel || got == want,
        "{name} {what}: got {got:e}, reference {want:e} (relative error {err:e})"
    );
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "unequal_small", x: (1, 12, 1.0, 0.0, 0), y: (2, 15, 1.0, 0.25, 0), ks_d: 0.5, ks_p: 0.050718482546454, u: 38.0, u_p: 0.011972878389045894, t: -3.081796707698881, t_df: 24.95570033942862, t_p: 0.004962912309842142, mean_x: 0.5165702360743808, median_x: 0.5225825487303797, std_x: 0.2307128717600653 },
    Case { name: "equal_100", x: (3, 100, 1.0, 0.0, 0), y: (4, 100, 1.0, 0.1, 0), ks_d: 0.23, ks_p: 0.009878183186176536, u: 3883.0, u_p: 0.006371116856740689, t: -2.722253058474331, t_df: 195.69348591284538, t_p: 0.007069257147134945, mean_x: 0.512189227734507, median_x: 0.485222021286627, std_x: 0.2766855997488034 },
    Case { name: "unequal_large", x: (5, 120, 1.0, 0.0, 0), y: (6, 97, 1.2, -0.05, 0), ks_d: 0.22577319587628866, ks_p: 0.00678389936964085, u: 4247.0, u_p: 0.0006271104172764902, t: -3.574748006842497, t_df: 191.30775294434616, t_p: 0.00044382636285022293, mean_x: 0.4725161270484696, median_x: 0.44603934021779607, std_x: 0.29058213059270827 },
    Case { name: "ties_accuracy", x: (7, 30, 0.3, 0.6, 40), y: (8, 40, 0.3, 0.62, 40), ks_d: 0.225, ks_p: 0.3104742295811527, u: 484.0, u_p: 0.16877179235308215, t: -1.4838587460496746, t_df: 56.82586759747707, t_p: 0.1433721991928497, mean_x: 0.755, median_x: 0.7375, std_x: 0.094549749721582 },
    Case { name: "tiny_exact", x: (9, 5, 1.0, 0.0, 0), y: (10, 4, 1.0, 0.3, 0), ks_d: 0.6, ks_p: 0.2857142857142857, u: 7.0, u_p: 0.5555555555555556, t: -0.4125007776414694, t_df: 6.196564998652493, t_p: 0.6938654102876787, mean_x: 0.4546004844825256, median_x: 0.23604088501193587, std_x: 0.4012443737939645 },
    Case { name: "tiny_ties", x: (11, 5, 1.0, 0.0, 4), y: (12, 6, 1.0, 0.0, 4), ks_d: 0.26666666666666666, ks_p: 0.9653679653679655, u: 17.0, u_p: 0.777690598193744, t: 0.35578403348240994, t_df: 8.462946640450202, t_p: 0.7307087190777607, mean_x: 0.5, median_x: 0.5, std_x: 0.39528470752104744 },
    Case { name: "small_exact_8", x: (13, 8, 1.0, 0.0, 0), y: (14, 11, 1.0, 0.4, 0), ks_d: 0.5681818181818182, ks_p: 0.06533301579741209, u: 14.0, u_p: 0.012066365007541479, t: -3.4827944071298886, t_df: 16.933761961948914, t_p: 0.0028621268384725327, mean_x: 0.4545905861554986, median_x: 0.48256349836629864, std_x: 0.24604263870076146 },
];

#[test]
fn matches_scipy_reference_numbers() {
    for c in CASES {
        let x = sample(c.x);
        let y = sample(c.y);
        let ks = ks_two_sample(&x, &y).expect("non-empty");
        close(c.name, "ks d", ks.d, c.ks_d, 1e-12);
        close(c.name, "ks p", ks.p_value, c.ks_p, 1e-9);
        let mw = mann_whitney_u(&x, &y).expect("non-empty");
        close(c.name, "u", mw.u, c.u, 1e-12);
        close(c.name, "u p", mw.p_value, c.u_p, 1e-9);
        let t = welch_t_test(&x, &y).expect("two or more values");
        close(c.name, "t", t.t, c.t, 1e-10);
        close(c.name, "t df", t.df, c.t_df, 1e-10);
        close(c.name, "t p", t.p_value, c.t_p, 1e-8);
        let s = summary(&x);
        close(c.name, "mean", s.mean, c.mean_x, 1e-12);
        close(c.name, "median", s.median, c.median_x, 1e-12);
        close(c.name, "std", s.std, c.std_x, 1e-12);
    }
}

#[test]
fn holm_matches_hand_computation() {
    // Holm-adjusted [0.01, 0.04, 0.03, 0.005, 0.5] = [0.04, 0.09, 0.09, 0.025, 0.5]
    let adjusted = holm_adjust(&[0.01, 0.04, 0.03, 0.005, 0.5]);
    let want = [0.04, 0.09, 0.09, 0.025, 0.5];
    for (got, want) in adjusted.iter().zip(want) {
        assert!((got - want).abs() < 1e-15, "{adjusted:?}");
    }
}
