"""Recompute the p-values in a results directory's stages.csv with SciPy from its trials.csv.

    python tests/stats_reference/check_pvalues.py results/<experiment>

For every stage: a design's score is the mean `primary` over its trials (designs with any trial neither `ok` nor
`pruned` are left out, as peftspace does; a pruned trial counts with its partial score); the chosen candidate's population is compared with every other candidate's with
    scipy.stats.ks_2samp(w, x, alternative='two-sided', method='auto')
    scipy.stats.mannwhitneyu(w, x, use_continuity=True, alternative='two-sided', method='auto')
    scipy.stats.ttest_ind(w, x, equal_var=False)
and Holm's correction over the stage's comparisons; `u_p_all_pairs` is mannwhitneyu over every pair of non-empty
populations with Holm's correction over all those pairs. `p`, the primary test, is
    scipy.stats.permutation_test((w, x), lambda a, b: mean(a) - mean(b), permutation_type='independent',
                                 alternative='two-sided', n_resamples=100000)
for every pair with Holm's correction over all pairs: exact (to 1e-9) when the splits number at most 10^5, else
peftspace's seeded Monte Carlo p must lie within four binomial standard errors of SciPy's (before Holm). `mean_diff`
is mean(w) − mean(x). Exits 1 if any number differs by more than 1e-9 (relative). Written for the default
`diverged: Drop`.
"""
import csv
import math
import sys
from collections import defaultdict

from scipy import stats

REL = 1e-9


def holm(ps):
    # Undefined p-values (NaN, e.g. Welch's t on two constant populations) are left out of the family and stay NaN.
    order = sorted((i for i in range(len(ps)) if not math.isnan(ps[i])), key=lambda i: ps[i])
    out, running = [float("nan")] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        out[i] = running
    return out


def close(a, b):
    if math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= REL * max(abs(b), 1e-300)


def num(cell):
    return float(cell) if cell != "" else float("nan")


def main(directory):
    designs = defaultdict(lambda: defaultdict(list))
    broken = defaultdict(set)
    with open(f"{directory}/trials.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["stage"] == "final":
                continue
            key = (row["stage"], row["candidate"])
            if row["status"] in ("ok", "pruned"):
                designs[key][row["design_index"]].append(float(row["primary"]))
            else:
                broken[key].add(row["design_index"])

    def population(stage, candidate):
        key = (stage, candidate)
        return [sum(v) / len(v) for d, v in designs[key].items() if d not in broken[key]]

    with open(f"{directory}/stages.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    bad = checked = 0
    for stage in dict.fromkeys(r["stage"] for r in rows):
        stage_rows = [r for r in rows if r["stage"] == stage]
        chosen = [r for r in stage_rows if r["chosen"] == "true"]
        if not chosen:
            print(f"{stage}: no chosen candidate")
            continue
        w = population(stage, chosen[0]["candidate"])
        comparisons = []
        for r in stage_rows:
            x = population(stage, r["candidate"])
            if r is chosen[0] or not x:
                continue
            ks = stats.ks_2samp(w, x, alternative="two-sided", method="auto")
            mw = stats.mannwhitneyu(w, x, use_continuity=True, alternative="two-sided", method="auto")
            tt = stats.ttest_ind(w, x, equal_var=False)
            comparisons.append((r, float(ks.pvalue), float(mw.pvalue), float(tt.pvalue)))
            for name, ours, theirs in [("ks_d", num(r["ks_d"]), float(ks.statistic)),
                                       ("ks_p", num(r["ks_p"]), float(ks.pvalue)),
                                       ("u", num(r["u"]), float(mw.statistic)),
                                       ("u_p", num(r["u_p"]), float(mw.pvalue)),
                                       ("welch_p", num(r["welch_p"]), float(tt.pvalue))]:
                checked += 1
                if not close(ours, theirs):
                    bad += 1
                    print(f"{stage}/{r['candidate']} {name}: stages.csv {ours!r}, scipy {theirs!r}")
        for col, idx in [("ks_p_holm", 1), ("u_p_holm", 2), ("welch_p_holm", 3)]:
            for (r, *_), adj in zip(comparisons, holm([c[idx] for c in comparisons])):
                checked += 1
                if not close(num(r[col]), adj):
                    bad += 1
                    print(f"{stage}/{r['candidate']} {col}: stages.csv {r[col]}, scipy+Holm {adj!r}")
        names = [r["candidate"] for r in stage_rows if population(stage, r["candidate"])]
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        pair_p = [float(stats.mannwhitneyu(population(stage, a), population(stage, b), use_continuity=True,
                                           alternative="two-sided", method="auto").pvalue) for a, b in pairs]
        adjusted = dict(zip(pairs, holm(pair_p)))
        winner = chosen[0]["candidate"]
        for r in stage_rows:
            other = r["candidate"]
            pair = (winner, other) if (winner, other) in adjusted else (other, winner)
            if other == winner or pair not in adjusted:
                continue
            checked += 1
            if not close(num(r["u_p_all_pairs"]), adjusted[pair]):
                bad += 1
                print(f"{stage}/{other} u_p_all_pairs: stages.csv {r['u_p_all_pairs']}, scipy+Holm {adjusted[pair]!r}")
        if "p" not in stage_rows[0]:
            continue
        # The primary test: permutation test of the difference in means, every pair, Holm.
        perm = {}
        for a, b in pairs:
            x, y = population(stage, a), population(stage, b)
            res = stats.permutation_test((x, y), lambda u, v: sum(u) / len(u) - sum(v) / len(v),
                                         permutation_type="independent", alternative="two-sided",
                                         n_resamples=100000, vectorized=False)
            exact = math.comb(len(x) + len(y), len(x)) <= 100000
            perm[(a, b)] = (float(res.pvalue), exact)
        perm_adjusted = dict(zip(pairs, holm([perm[p][0] for p in pairs])))
        for r in stage_rows:
            other = r["candidate"]
            pair = (winner, other) if (winner, other) in perm_adjusted else (other, winner)
            if other == winner or pair not in perm_adjusted or not r["p"]:
                continue
            checked += 1
            w_pop, x_pop = population(stage, winner), population(stage, other)
            diff = sum(w_pop) / len(w_pop) - sum(x_pop) / len(x_pop)
            if not close(num(r["mean_diff"]), diff):
                bad += 1
                print(f"{stage}/{other} mean_diff: stages.csv {r['mean_diff']}, {diff!r}")
            raw, exact = perm[pair]
            if exact:
                ok = close(num(r["p"]), perm_adjusted[pair])
            else:
                # Holm multiplies by at most the number of pairs; compare on that scale with four standard errors.
                se = math.sqrt(max(raw * (1 - raw), 1e-4) / 10000) * len(pairs)
                ok = abs(num(r["p"]) - perm_adjusted[pair]) <= 4 * se + 1e-9
            if not ok:
                bad += 1
                print(f"{stage}/{other} p: stages.csv {r['p']}, scipy permutation+Holm {perm_adjusted[pair]!r}")
    print(f"{checked} numbers checked, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
