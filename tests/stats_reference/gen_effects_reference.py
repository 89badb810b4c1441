"""Reference numbers for core/src/stats/effects_reference_tests.rs (OLS with HC3 errors and type-II sums of squares,
the one-sided exact binomial test, the paired sign-flip permutation test).

Run once (the numbers are committed as literals; the Rust tests never need Python):
    python3 -m venv /tmp/statsvenv2 && /tmp/statsvenv2/bin/pip install scipy statsmodels pandas patsy
    /tmp/statsvenv2/bin/python tests/stats_reference/gen_effects_reference.py
Produced with SciPy 1.17.1, statsmodels 0.15.0, patsy 1.0.3, NumPy 2.4.6.
The data come from the same 64-bit LCG as gen_unit_reference.py, which the Rust test reproduces bit for bit.
"""
import math
import os

# The multi-column "shares" term below is a patsy feature; pin the engine rather than rely on statsmodels' default.
os.environ["SM_FORMULA_ENGINE"] = "patsy"

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

MASK = (1 << 64) - 1


def lcg(seed, n):
    state = seed & MASK
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        out.append((state >> 11) / float(1 << 53))
    return out


def sample(seed, n, scale, shift, round_to):
    xs = [u * scale + shift for u in lcg(seed, n)]
    if round_to:
        xs = [round(x * round_to) / round_to for x in xs]
    return xs


def r(v):
    v = float(v)
    return "f64::NAN" if math.isnan(v) else repr(v)


# ---------------------------------------------------------------------------------------------------------------
# OLS: a categorical term (3 levels, "a" dropped), a 3-part simplex of shares ("s_c" dropped), a count, and a stage
# fixed effect (3 levels, stage 0 dropped). Six LCG draws per row, in this order: method, three share weights,
# count, noise. y's noise is heteroskedastic (its scale grows with s_a) so HC3 differs from the classical errors.
OLS_SEED = 2024
OLS_ROWS = 72


def effects_data():
    u = lcg(OLS_SEED, 6 * OLS_ROWS)
    rows = []
    for i in range(OLS_ROWS):
        um, w1, w2, w3, uc, ue = u[6 * i: 6 * i + 6]
        method = "abc"[int(um * 3.0)]
        total = w1 + w2 + w3
        s_a, s_b = w1 / total, w2 / total
        count = float(int(uc * 8.0))
        stage = i % 3
        noise = (ue - 0.5) * (0.2 + 0.6 * s_a)
        y = 0.5 + 0.8 * s_a + 0.1 * s_b + 0.05 * count + noise
        if method == "b":
            y += 0.3
        if method == "c":
            y -= 0.2
        if stage == 1:
            y += 0.1
        if stage == 2:
            y += 0.25
        rows.append(dict(method=method, s_a=s_a, s_b=s_b, count=count, stage=stage, y=y))
    return pd.DataFrame(rows)


def shares(a, b):
    return np.column_stack([a, b])


df = effects_data()
formula = "y ~ C(method) + shares(s_a, s_b) + count + C(stage)"
classical = smf.ols(formula, data=df).fit()
anova = anova_lm(classical, typ=2)
X = classical.model.exog
robust = sm.OLS(df["y"].to_numpy(), X).fit(cov_type="HC3")
assert not robust.use_t, "HC3 fit without use_t reports normal p-values"
z = robust.params / robust.bse
assert np.allclose(robust.pvalues, 2 * stats.norm.sf(np.abs(z)), rtol=1e-14, atol=0)
assert np.allclose(robust.params, classical.params.to_numpy(), rtol=1e-12, atol=1e-14)

# Type II for main effects only is "SSR without the term minus SSR of the full model"; check that it is what
# anova_lm computed, since the Rust code implements that definition.
term_slices = classical.model.data.model_spec.term_name_slices
for name, sl in term_slices.items():
    if name == "Intercept":
        continue
    keep = [j for j in range(X.shape[1]) if not (sl.start <= j < sl.stop)]
    reduced = sm.OLS(df["y"].to_numpy(), X[:, keep]).fit()
    assert math.isclose(reduced.ssr - classical.ssr, anova.loc[name, "sum_sq"], rel_tol=1e-10), name

tss = float(np.sum((df["y"] - df["y"].mean()) ** 2))
print(f"// OLS: seed {OLS_SEED}, {OLS_ROWS} rows; statsmodels columns {list(classical.model.exog_names)}")
print("// OLS(y, X).fit(cov_type='HC3'): (coefficient, HC3 standard error, z, p)")
print("#[rustfmt::skip]")
print("const OLS_COLUMNS: &[(f64, f64, f64, f64)] = &[")
for j, name in enumerate(classical.model.exog_names):
    print(f"    ({r(robust.params[j])}, {r(robust.bse[j])}, {r(z[j])}, {r(robust.pvalues[j])}), // {name}")
print("];")
print("// anova_lm(ols(formula).fit(), typ=2): (sum_sq, df, F, PR(>F)) per term, then the residual row")
print("#[rustfmt::skip]")
print("const OLS_TERMS: &[(f64, f64, f64, f64)] = &[")
for name in anova.index:
    row = anova.loc[name]
    print(f"    ({r(row['sum_sq'])}, {r(row['df'])}, {r(row['F'])}, {r(row['PR(>F)'])}), // {name}")
print("];")
print(f"const OLS_TSS: f64 = {r(tss)};")
print(f"const OLS_RESID_SS: f64 = {r(classical.ssr)};")
print()

# ---------------------------------------------------------------------------------------------------------------
# binomtest(k, n, p0, alternative='greater').pvalue
BINOMIAL = [
    (0, 10, 0.3),
    (3, 10, 0.3),
    (7, 10, 0.3),
    (10, 10, 0.5),
    (45, 60, 0.5),
    (180, 200, 0.6),
    (1, 1000, 0.001),
    (30, 100, 0.1),
    (500, 1000, 0.48),
    (95, 100, 0.5),
    (5, 5, 0.05),
    (1, 20, 0.0),
    (20, 20, 1.0),
    (12, 20, 1.0),
]
print("// binomtest(k, n, p0, alternative='greater').pvalue: (k, n, p0, p)")
print("#[rustfmt::skip]")
print("const BINOMIAL: &[(u64, u64, f64, f64)] = &[")
for k, n, p0 in BINOMIAL:
    p = stats.binomtest(k, n, p0, alternative="greater").pvalue
    print(f"    ({k}, {n}, {r(p0)}, {r(p)}),")
print("];")
print()

# ---------------------------------------------------------------------------------------------------------------
# permutation_test((x, y), lambda a, b: np.mean(a - b), permutation_type='samples', alternative='two-sided',
# n_resamples=np.inf) — every sign flip enumerated — and ttest_rel(x, y).confidence_interval().
PAIRED = [
    # name, (seed, n, scale, shift, round_to) for x, same for y
    ("continuous_5", (21, 5, 1.0, 0.0, 0), (22, 5, 1.0, -0.2, 0)),
    ("continuous_12", (23, 12, 1.0, 0.1, 0), (24, 12, 1.0, 0.0, 0)),
    # A coarse grid puts zeros among the differences and ties among their magnitudes. In ties_zeros_16 null means
    # equal to the observed one in exact arithmetic differ from it in the last bits: without SciPy's relative
    # tolerance of 100 eps the p-value would be 0.419189453125 instead of 0.433837890625.
    ("ties_zeros_10", (25, 10, 1.0, 0.0, 4), (26, 10, 1.0, 0.0, 4)),
    ("ties_zeros_16", (27, 16, 0.3, 0.6, 20), (28, 16, 0.3, 0.58, 20)),
    ("no_effect_8", (29, 8, 1.0, 0.0, 2), (30, 8, 1.0, 0.0, 2)),
    ("continuous_16", (31, 16, 1.0, 0.15, 0), (32, 16, 1.0, 0.0, 0)),
    # n = 20 > 16: the Rust test runs the Monte Carlo path against this exact p-value.
    ("monte_carlo_20", (33, 20, 1.0, 0.1, 0), (34, 20, 1.0, 0.0, 0)),
]


print("// permutation_test((x, y), mean(a - b), permutation_type='samples', n_resamples=inf), ttest_rel CI")
print("#[rustfmt::skip]")
print("const PAIRED: &[Paired] = &[")
for name, xa, ya in PAIRED:
    x = np.array(sample(*xa))
    y = np.array(sample(*ya))
    res = stats.permutation_test((x, y), lambda a, b: np.mean(a - b), permutation_type="samples",
                                 alternative="two-sided", n_resamples=np.inf)
    ci = stats.ttest_rel(x, y).confidence_interval()
    d = x - y
    print(f"    // {name}: {int(np.sum(d == 0))} zero differences, "
          f"{len(d) - len(np.unique(np.abs(d)))} repeated |d|")
    print(f"    Paired {{ name: \"{name}\", x: {xa}, y: {ya}, mean_diff: {r(res.statistic)}, "
          f"p: {r(res.pvalue)}, ci_low: {r(ci.low)}, ci_high: {r(ci.high)} }},")
print("];")
print()

# ---------------------------------------------------------------------------------------------------------------
# np.sum of a[:n] for a[i] = 1 / (i + 0.3) * (-1000 if i % 3 == 0 else 1): NumPy's pairwise order, which the
# permutation test reproduces so that its null means equal SciPy's bit for bit.
a = np.array([1.0 / (i + 0.3) * (-1e3 if i % 3 == 0 else 1.0) for i in range(300)])
print("const NUMPY_SUMS: &[(usize, f64)] = &[")
for n in [3, 8, 13, 100, 128, 129, 300]:
    print(f"    ({n}, {r(np.sum(a[:n]))}),")
print("];")
