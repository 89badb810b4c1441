//! Comparison with numbers statsmodels 0.15 and SciPy 1.17 computed once
//! (`tests/stats_reference/gen_effects_reference.py`): OLS with HC3 errors and the type-II table, the one-sided
//! exact binomial test, and the paired sign-flip permutation test with its t interval.

use super::*;

use super::reference_tests::{close, lcg, sample, SampleArgs};

// ---- OLS -----------------------------------------------------------------------------------------------------
// OLS: seed 2024, 72 rows; statsmodels columns ['Intercept', 'C(method)[T.b]', 'C(method)[T.c]', 'C(stage)[T.1]', 'C(stage)[T.2]', 'shares(s_a, s_b)[0]', 'shares(s_a, s_b)[1]', 'count']
// OLS(y, X).fit(cov_type='HC3'): (coefficient, HC3 standard error, z, p)
#[rustfmt::skip]
const OLS_COLUMNS: &[(f64, f64, f64, f64)] = &[
    (0.5020524325327362, 0.06407850637798666, 7.834958411346645, 4.6899791872076334e-15), // Intercept
    (0.3182415750151657, 0.037560495283110625, 8.472773657973184, 2.396178966726855e-17), // C(method)[T.b]
    (-0.18801652441593503, 0.047091372489698975, -3.9925896077261878, 6.535562323116893e-05), // C(method)[T.c]
    (0.10882405129086424, 0.03915549599708746, 2.7792790901935964, 0.005447969526911382), // C(stage)[T.1]
    (0.2424343026343318, 0.03712948402332164, 6.529428270052307, 6.602122040391877e-11), // C(stage)[T.2]
    (0.9756985123087848, 0.08120996037205107, 12.014517773913084, 2.981035470799339e-33), // shares(s_a, s_b)[0]
    (-0.053819724054264606, 0.08442565408868422, -0.637480688011373, 0.5238117852938802), // shares(s_a, s_b)[1]
    (0.05419756151732482, 0.00838973921407696, 6.459981667414396, 1.0471566613430577e-10), // count
];
// anova_lm(ols(formula).fit(), typ=2): (sum_sq, df, F, PR(>F)) per term, then the residual row
#[rustfmt::skip]
const OLS_TERMS: &[(f64, f64, f64, f64)] = &[
    (2.8849003912929696, 2.0, 107.88046038606088, 3.1664571070223886e-21), // C(method)
    (0.6328795373280656, 2.0, 23.666444797169902, 2.0221239422672425e-08), // C(stage)
    (2.524732106895943, 2.0, 94.41201604930696, 8.082986668698845e-20), // shares(s_a, s_b)
    (0.9753360894750679, 1.0, 72.94512259853289, 3.6024594846817105e-12), // count
    (0.8557324671308428, 64.0, f64::NAN, f64::NAN), // Residual
];
const OLS_TSS: f64 = 8.557405765425184;
const OLS_RESID_SS: f64 = 0.8557324671308428;

/// The generator's `effects_data()`, operation for operation; terms in the order patsy puts them in the design.
fn effects_design() -> (Vec<f64>, Vec<Term>) {
    const ROWS: usize = 72;
    let u = lcg(2024, 6 * ROWS);
    let mut y = Vec::with_capacity(ROWS);
    let (mut method, mut stage) = (Vec::new(), Vec::new());
    let (mut s_a, mut s_b, mut s_c, mut count) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, row) in u.chunks_exact(6).enumerate() {
        let [um, w1, w2, w3, uc, ue] = [row[0], row[1], row[2], row[3], row[4], row[5]];
        let level = ["a", "b", "c"][(um * 3.0) as usize];
        let total = w1 + w2 + w3;
        let (a, b) = (w1 / total, w2 / total);
        let c = (uc * 8.0).trunc();
        let noise = (ue - 0.5) * (0.2 + 0.6 * a);
        let mut v = 0.5 + 0.8 * a + 0.1 * b + 0.05 * c + noise;
        match level {
            "b" => v += 0.3,
            "c" => v -= 0.2,
            _ => {}
        }
        match i % 3 {
            1 => v += 0.1,
            2 => v += 0.25,
            _ => {}
        }
        method.push(level.to_string());
        stage.push((i % 3).to_string());
        s_a.push(a);
        s_b.push(b);
        s_c.push(w3 / total);
        count.push(c);
        y.push(v);
    }
    let parts = vec![
        ("s_a".to_string(), s_a),
        ("s_b".to_string(), s_b),
        ("s_c".to_string(), s_c),
    ];
    let terms = vec![
        Term::categorical("method", &method, "a").expect("level a occurs"),
        Term::categorical("stage", &stage, "0").expect("stage 0 occurs"),
        Term::simplex("shares", parts, "s_c").expect("part s_c exists"),
        Term::numeric("count", count),
    ];
    (y, terms)
}

#[test]
fn ols_matches_statsmodels_hc3_and_type2() {
    let (y, terms) = effects_design();
    let fit = ols_hc3(&y, &terms).expect("full-rank design");
    assert_eq!(fit.coefficients.len(), OLS_COLUMNS.len());
    for (c, &(estimate, se, z, p)) in fit.coefficients.iter().zip(OLS_COLUMNS) {
        close(&c.column, "coefficient", c.estimate, estimate, 1e-10);
        close(&c.column, "HC3 se", c.hc3_se, se, 1e-10);
        close(&c.column, "z", c.z, z, 1e-10);
        close(&c.column, "p", c.p_value, p, 1e-8);
    }
    assert_eq!(fit.terms.len() + 1, OLS_TERMS.len());
    for (t, &(sum_sq, df, f, p)) in fit.terms.iter().zip(OLS_TERMS) {
        close(&t.name, "type-II SS", t.sum_sq, sum_sq, 1e-10);
        assert_eq!(t.df as f64, df, "{} df", t.name);
        close(&t.name, "F", t.f, f, 1e-10);
        close(&t.name, "p", t.p_value, p, 1e-8);
        close(&t.name, "importance", t.importance, sum_sq / OLS_TSS, 1e-10);
    }
    let residual = OLS_TERMS[OLS_TERMS.len() - 1];
    close("residual", "SS", fit.residual_ss, OLS_RESID_SS, 1e-12);
    assert_eq!(fit.residual_df as f64, residual.1);
    close("total", "SS", fit.total_ss, OLS_TSS, 1e-12);
}

// ---- Binomial ------------------------------------------------------------------------------------------------
// binomtest(k, n, p0, alternative='greater').pvalue: (k, n, p0, p)
#[rustfmt::skip]
const BINOMIAL: &[(u64, u64, f64, f64)] = &[
    (0, 10, 0.3, 1.0),
    (3, 10, 0.3, 0.6172172136000003),
    (7, 10, 0.3, 0.010592078399999996),
    (10, 10, 0.5, 0.0009765625),
    (45, 60, 0.5, 6.725704046424766e-05),
    (180, 200, 0.6, 2.4774169075248168e-21),
    (1, 1000, 0.001, 0.6323045752290359),
    (30, 100, 0.1, 2.445112239390972e-08),
    (500, 1000, 0.48, 0.10858106325437784),
    (95, 100, 0.5, 6.26162256269268e-23),
    (5, 5, 0.05, 3.125000000000001e-07),
    (1, 20, 0.0, 0.0),
    (20, 20, 1.0, 1.0),
    (12, 20, 1.0, 1.0),
];

#[test]
fn binomial_matches_scipy_binomtest_greater() {
    for &(k, n, p0, want) in BINOMIAL {
        close(
            &format!("binomtest({k}, {n}, {p0})"),
            "p",
            binomial_greater_p(k, n, p0),
            want,
            1e-12,
        );
    }
}

// ---- Paired sign flips ---------------------------------------------------------------------------------------
struct Paired {
    name: &'static str,
    x: SampleArgs,
    y: SampleArgs,
    mean_diff: f64,
    p: f64,
    ci_low: f64,
    ci_high: f64,
}

// permutation_test((x, y), mean(a - b), permutation_type='samples', n_resamples=inf), ttest_rel CI
#[rustfmt::skip]
const PAIRED: &[Paired] = &[
    // continuous_5: 0 zero differences, 0 repeated |d|
    Paired { name: "continuous_5", x: (21, 5, 1.0, 0.0, 0), y: (22, 5, 1.0, -0.2, 0), mean_diff: -0.03784288187327417, p: 0.875, ci_low: -0.7516832793651456, ci_high: 0.6759975156185973 },
    // continuous_12: 0 zero differences, 0 repeated |d|
    Paired { name: "continuous_12", x: (23, 12, 1.0, 0.1, 0), y: (24, 12, 1.0, 0.0, 0), mean_diff: 0.1245872127605584, p: 0.2626953125, ci_low: -0.10661258160663978, ci_high: 0.35578700712775657 },
    // ties_zeros_10: 2 zero differences, 5 repeated |d|
    Paired { name: "ties_zeros_10", x: (25, 10, 1.0, 0.0, 4), y: (26, 10, 1.0, 0.0, 4), mean_diff: -0.125, p: 0.6171875, ci_low: -0.5809523528409724, ci_high: 0.3309523528409723 },
    // ties_zeros_16: 2 zero differences, 8 repeated |d|
    Paired { name: "ties_zeros_16", x: (27, 16, 0.3, 0.6, 20), y: (28, 16, 0.3, 0.58, 20), mean_diff: 0.028124999999999997, p: 0.433837890625, ci_low: -0.0371143831202313, ci_high: 0.09336438312023129 },
    // no_effect_8: 4 zero differences, 6 repeated |d|
    Paired { name: "no_effect_8", x: (29, 8, 1.0, 0.0, 2), y: (30, 8, 1.0, 0.0, 2), mean_diff: 0.125, p: 0.625, ci_low: -0.170578031449098, ci_high: 0.420578031449098 },
    // continuous_16: 0 zero differences, 0 repeated |d|
    Paired { name: "continuous_16", x: (31, 16, 1.0, 0.15, 0), y: (32, 16, 1.0, 0.0, 0), mean_diff: 0.2410936003579493, p: 0.033538818359375, ci_low: 0.023264432826519743, ci_high: 0.45892276788937886 },
    // monte_carlo_20: 0 zero differences, 0 repeated |d|
    Paired { name: "monte_carlo_20", x: (33, 20, 1.0, 0.1, 0), y: (34, 20, 1.0, 0.0, 0), mean_diff: 0.23731121965338145, p: 0.015245437622070312, ci_low: 0.05312750120180315, ci_high: 0.42149493810495975 },
];

fn differences(c: &Paired) -> Vec<f64> {
    sample(c.x)
        .iter()
        .zip(sample(c.y))
        .map(|(x, y)| x - y)
        .collect()
}

/// ties_zeros_16 checks the tie tolerance: without it its p-value would be 0.419189453125.
#[test]
fn paired_exact_matches_scipy_permutation_test() {
    for c in PAIRED.iter().filter(|c| c.x.1 <= EXACT_MAX_PAIRS) {
        let r = paired_sign_flip(&differences(c), 0, 1).expect("two or more pairs");
        assert!(r.exact, "{}", c.name);
        close(c.name, "mean difference", r.mean_diff, c.mean_diff, 1e-14);
        close(c.name, "p", r.p_value, c.p, 1e-10);
        close(c.name, "ci low", r.ci_low, c.ci_low, 1e-10);
        close(c.name, "ci high", r.ci_high, c.ci_high, 1e-10);
    }
}

#[test]
fn paired_beyond_sixteen_pairs_is_exact_when_resamples_cover_all_patterns() {
    let c = PAIRED
        .iter()
        .find(|c| c.name == "monte_carlo_20")
        .expect("case");
    let r = paired_sign_flip(&differences(c), 1 << 20, 1).expect("twenty pairs");
    assert!(r.exact);
    close(c.name, "p", r.p_value, c.p, 1e-10);
    close(c.name, "ci low", r.ci_low, c.ci_low, 1e-10);
    close(c.name, "ci high", r.ci_high, c.ci_high, 1e-10);
}

#[test]
fn paired_monte_carlo_within_three_standard_errors() {
    let c = PAIRED
        .iter()
        .find(|c| c.name == "monte_carlo_20")
        .expect("case");
    let d = differences(c);
    const RESAMPLES: usize = 20_000;
    // The estimate is 2·(count + 1)/(N + 1) with count ~ Binomial(N, p/2).
    let half = c.p / 2.0;
    let se = 2.0 * (half * (1.0 - half) / RESAMPLES as f64).sqrt();
    for seed in [1, 2, 3] {
        let r = paired_sign_flip(&d, RESAMPLES, seed).expect("twenty pairs");
        assert!(!r.exact);
        close(c.name, "mean difference", r.mean_diff, c.mean_diff, 1e-14);
        assert!(
            (r.p_value - c.p).abs() <= 3.0 * se,
            "seed {seed}: Monte Carlo p {} vs exact {} (3 SE = {})",
            r.p_value,
            c.p,
            3.0 * se
        );
    }
}
