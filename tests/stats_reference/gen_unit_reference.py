"""Reference numbers for the unit tests in core/src/stats/reference_tests.rs.

Run once with scipy (the numbers are committed as literals; the Rust tests never need Python):
    python tests/stats_reference/gen_unit_reference.py
The samples come from a 64-bit LCG that core/src/stats/reference_tests.rs reproduces bit for bit.
"""
import numpy as np
from scipy import stats

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


def holm(ps):
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adj[i] = running
    return adj


CASES = [
    # name, (seed, n, scale, shift, round_to) for x, same for y
    ("unequal_small", (1, 12, 1.0, 0.0, 0), (2, 15, 1.0, 0.25, 0)),
    ("equal_100", (3, 100, 1.0, 0.0, 0), (4, 100, 1.0, 0.1, 0)),
    ("unequal_large", (5, 120, 1.0, 0.0, 0), (6, 97, 1.2, -0.05, 0)),
    ("ties_accuracy", (7, 30, 0.3, 0.6, 40), (8, 40, 0.3, 0.62, 40)),
    ("tiny_exact", (9, 5, 1.0, 0.0, 0), (10, 4, 1.0, 0.3, 0)),
    ("tiny_ties", (11, 5, 1.0, 0.0, 4), (12, 6, 1.0, 0.0, 4)),
    ("small_exact_8", (13, 8, 1.0, 0.0, 0), (14, 11, 1.0, 0.4, 0)),
]

for name, xa, ya in CASES:
    x = sample(*xa)
    y = sample(*ya)
    ks = stats.ks_2samp(x, y, alternative="two-sided", method="auto")
    mw = stats.mannwhitneyu(x, y, use_continuity=True, alternative="two-sided", method="auto")
    tt = stats.ttest_ind(x, y, equal_var=False)
    print(f"// {name}: x = sample{xa}, y = sample{ya}")
    print(f"// ks_2samp(x, y, alternative='two-sided', method='auto')")
    print(f"// mannwhitneyu(x, y, use_continuity=True, alternative='two-sided', method='auto')")
    print(f"// ttest_ind(x, y, equal_var=False)")
    print(f"Case {{ name: \"{name}\", x: {xa}, y: {ya}, ks_d: {float(ks.statistic)!r}, ks_p: {float(ks.pvalue)!r}, "
          f"u: {float(mw.statistic)!r}, u_p: {float(mw.pvalue)!r}, t: {float(tt.statistic)!r}, t_df: {float(tt.df)!r}, "
          f"t_p: {float(tt.pvalue)!r}, mean_x: {float(np.mean(x))!r}, median_x: {float(np.median(x))!r}, "
          f"std_x: {float(np.std(x, ddof=1))!r} }},")

ps = [0.01, 0.04, 0.03, 0.005, 0.5]
print("// Holm-adjusted", ps, "=", holm(ps))
