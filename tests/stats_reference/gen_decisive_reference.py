"""Reference numbers for core/src/stats/decisive_reference_tests.rs (permutation test, Welch TOST, noncentral t,
t-test power, O'Brien-Fleming alpha spending).

Run once with scipy and statsmodels (the numbers are committed as literals; the Rust tests never need Python):
    python -m venv /tmp/statsvenv && /tmp/statsvenv/bin/pip install scipy statsmodels
    /tmp/statsvenv/bin/python tests/stats_reference/gen_decisive_reference.py
The samples come from the same 64-bit LCG as gen_unit_reference.py, which the Rust tests reproduce bit for bit.
The 12 v 12 permutation references enumerate all 2,704,156 splits; the whole script takes a few minutes.
"""
import math

import numpy as np
import scipy
import statsmodels
from scipy import optimize, stats
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttost_ind

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


def mean_difference(a, b, axis):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def permutation(x, y, n_resamples, seed=0):
    return stats.permutation_test(
        (np.array(x), np.array(y)), mean_difference, permutation_type="independent",
        alternative="two-sided", n_resamples=n_resamples, vectorized=True, batch=50_000,
        rng=np.random.default_rng(seed))


print(f"// scipy {scipy.__version__}, statsmodels {statsmodels.__version__}")

# Exact permutation cases: n_resamples >= C(nx+ny, nx) makes SciPy enumerate every split.
EXACT = [
    # name, (seed, n, scale, shift, round_to) for x, same for y
    ("distinct_4v4", (21, 4, 1.0, 0.3, 0), (22, 4, 1.0, 0.0, 0)),
    ("ties_4v4", (23, 4, 1.0, 0.0, 4), (24, 4, 1.0, 0.25, 4)),
    ("distinct_5v7", (25, 5, 1.0, 0.2, 0), (26, 7, 1.0, 0.0, 0)),
    ("ties_5v7", (27, 5, 1.0, 0.0, 8), (28, 7, 1.0, 0.0, 8)),
    ("distinct_8v8", (29, 8, 1.0, 0.35, 0), (30, 8, 1.0, 0.0, 0)),
    ("ties_8v8", (31, 8, 1.0, 0.2, 4), (32, 8, 1.0, 0.0, 4)),
    ("decimal_ties_8v8", (33, 8, 0.3, 0.62, 40), (34, 8, 0.3, 0.6, 40)),
    ("distinct_9v9", (35, 9, 1.0, 0.0, 0), (36, 9, 1.0, 0.3, 0)),
    ("all_tied_3v4", (37, 3, 0.0, 0.5, 0), (38, 4, 0.0, 0.5, 0)),
]
print("// permutation_test((x, y), mean(a) - mean(b), permutation_type='independent', alternative='two-sided',")
print("//                  n_resamples >= C(nx+ny, nx)): exact")
for name, xa, ya in EXACT:
    x, y = sample(*xa), sample(*ya)
    res = permutation(x, y, math.comb(len(x) + len(y), len(x)))
    print(f"Exact {{ name: \"{name}\", x: {xa}, y: {ya}, diff: {float(res.statistic)!r}, "
          f"p: {float(res.pvalue)!r} }},")

# Monte Carlo cases: the Rust test draws its own splits, so it is compared within binomial error. 12 v 12 is
# enumerated exactly here (no error on the reference side); 20 v 15 uses 400,000 random splits.
MONTE_CARLO = [
    ("mc_12v12", (41, 12, 1.0, 0.25, 0), (42, 12, 1.0, 0.0, 0), None),
    ("mc_12v12_ties", (43, 12, 0.3, 0.64, 40), (44, 12, 0.3, 0.6, 40), None),
    ("mc_20v15", (45, 20, 1.0, 0.2, 0), (46, 15, 1.0, 0.0, 0), 400_000),
]
print("// the same with n_resamples = C(24, 12) (exact) or 400_000 (Monte Carlo, rng=default_rng(0))")
for name, xa, ya, n_resamples in MONTE_CARLO:
    x, y = sample(*xa), sample(*ya)
    exact = n_resamples is None
    res = permutation(x, y, math.comb(len(x) + len(y), len(x)) if exact else n_resamples)
    print(f"MonteCarlo {{ name: \"{name}\", x: {xa}, y: {ya}, diff: {float(res.statistic)!r}, "
          f"p: {float(res.pvalue)!r}, reference_resamples: {0 if exact else n_resamples} }},")

TOST = [
    ("tost_inside", (51, 12, 0.1, 0.70, 0), (52, 10, 0.12, 0.69, 0), -0.05, 0.05),
    ("tost_asymmetric", (53, 30, 0.2, 0.50, 0), (54, 25, 0.1, 0.52, 0), -0.04, 0.08),
    ("tost_ties", (55, 6, 0.3, 0.60, 40), (56, 9, 0.3, 0.61, 40), -0.1, 0.1),
    ("tost_outside", (57, 8, 0.2, 0.80, 0), (58, 8, 0.2, 0.60, 0), -0.05, 0.05),
]
print("// ttost_ind(x, y, low, upp, usevar='unequal') -> (p, (t_lower, p_lower, df), (t_upper, p_upper, df))")
for name, xa, ya, low, upp in TOST:
    x, y = sample(*xa), sample(*ya)
    p, (t1, p1, df1), (t2, p2, df2) = ttost_ind(np.array(x), np.array(y), low, upp, usevar="unequal")
    assert df1 == df2
    print(f"Tost {{ name: \"{name}\", x: {xa}, y: {ya}, low: {low!r}, upp: {upp!r}, p: {float(p)!r}, "
          f"t_lower: {float(t1)!r}, p_lower: {float(p1)!r}, t_upper: {float(t2)!r}, p_upper: {float(p2)!r}, "
          f"df: {float(df1)!r} }},")

NCT = [
    (1.5, 10.0, 1.0), (-1.0, 5.0, 0.5), (3.0, 30.0, 2.5), (0.0, 7.0, -1.2), (2.0, 3.5, 4.0),
    (-2.5, 20.0, 1.8), (10.0, 50.0, 8.0), (1.96, 1000.0, 2.8), (1.0, 2.0, -3.0), (4.0, 14.0, 0.7),
    (-0.3, 1.0, 0.2), (2.1, 3140.0, 2.8), (0.5, 60.0, 12.0), (20.0, 8.0, 15.0),
]
print("// nct.cdf(t, df, nc), nct.sf(t, df, nc)")
for t, df, nc in NCT:
    print(f"({t!r}, {df!r}, {nc!r}, {float(stats.nct.cdf(t, df, nc))!r}, {float(stats.nct.sf(t, df, nc))!r}),")


def power(d, n, alpha):
    # TTestIndPower().power with ratio=1; SciPy's nct.cdf returns NaN deep in the lower tail, where it is 0.
    df = 2 * n - 2
    nobs = 1.0 / (1.0 / n + 1.0 / n)
    crit = stats.t.isf(alpha / 2, df)
    nc = d * np.sqrt(nobs)
    return stats.nct.sf(crit, df, nc) + np.nan_to_num(stats.nct.cdf(-crit, df, nc))


MDE = [(2, 0.05, 0.8), (3, 0.05, 0.8), (8, 0.05, 0.8), (20, 0.01, 0.9), (100, 0.05, 0.8), (12, 0.1, 0.5)]
print("// TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha, power, ratio=1, alternative='two-sided'),")
print("// and the same root solved to xtol=1e-15 (statsmodels' brentq_expanding stops at xtol=1e-5)")
for n, alpha, pw in MDE:
    sm = TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=pw, ratio=1,
                                     alternative="two-sided")
    tight = optimize.brentq(lambda d: power(d, n, alpha) - pw, 1e-6, 8.0, xtol=1e-15)
    print(f"({n}, {alpha!r}, {pw!r}, {float(sm)!r}, {float(tight)!r}),")

DESIGNS = [(0.5, 0.05, 0.8), (1.0, 0.05, 0.8), (0.2, 0.01, 0.9), (2.5, 0.05, 0.8), (0.1, 0.05, 0.8),
           (0.8, 0.05, 0.95), (3.0, 0.05, 0.8)]
print("// ceil(TTestIndPower().solve_power(effect_size=d, nobs1=None, alpha, power, ratio=1,")
print("//      alternative='two-sided')), with the power one design short of it and at it")
for d, alpha, pw in DESIGNS:
    sm = TTestIndPower().solve_power(effect_size=d, nobs1=None, alpha=alpha, power=pw, ratio=1,
                                     alternative="two-sided")
    n = math.ceil(sm)
    short = power(d, n - 1, alpha) if n > 2 else float("nan")
    print(f"({d!r}, {alpha!r}, {pw!r}, {n}),  // solve_power = {float(sm)!r}; power(n-1) = {float(short)!r}, "
          f"power(n) = {float(power(d, n, alpha))!r}")

print("// 2 * norm.sf(norm.isf(alpha / 2) / sqrt(t))")
for alpha in (0.05, 0.1):
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):
        print(f"({alpha!r}, {t!r}, {float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(t)))!r}),")
