#!/usr/bin/env python3
"""Per-task summary of a results folder's trials.csv: for each stage, candidate and task, the number of ok trials,
the mean and standard deviation of the task's primary metric, and how many trials scored above `--above`
(default 0: for MCC, how many designs learned anything beyond one class). Markdown on stdout.

    python3 scripts/per_task_summary.py results/reproduction_minilm/trials.csv [--above 0]
"""
import argparse
import csv
import statistics
from collections import defaultdict


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials_csv")
    parser.add_argument("--above", type=float, default=0.0)
    args = parser.parse_args()
    groups = defaultdict(list)
    order = []
    with open(args.trials_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok":
                continue
            key = (row["stage"], row["candidate"], row["task"])
            if key not in groups:
                order.append(key)
            groups[key].append(float(row["primary"]))
    print(f"| stage | candidate | task | n | mean | sd | > {args.above:g} |")
    print("|---|---|---|---|---|---|---|")
    for key in order:
        scores = groups[key]
        sd = f"{statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
        above = sum(1 for s in scores if s > args.above)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(scores)} | {statistics.mean(scores):.3f} | {sd} | {above} |")


if __name__ == "__main__":
    main()
