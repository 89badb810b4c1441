//! Helpers shared by the refinement tests: a synthetic experiment and a recomputation of stages.csv from
//! trials.csv with the library's own statistics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use peftspace_core::stats;

/// S1–S4 (two strategy stages) and final runs, synthetic-friendly.
pub fn experiment_ron(samples: usize) -> String {
    format!(
        r#"ExperimentSpec(
    name: "synthetic-refine",
    backbone: (path: Some("unused-by-the-synthetic-executor")),
    tasks: [(id: "sst2"), (id: "mrpc")],
    seeds: [1],
    seed: 7,
    samples: {samples},
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["increasing", "uniform", "decreasing", "spindle", "bottleneck"]),
        (name: "S2", dimension: Allocation, candidates: ["increasing", "uniform", "decreasing"]),
        (name: "S3", dimension: TunedGroups, candidates: ["1111", "1101", "1110"]),
        (name: "S4a", dimension: Strategies(0), candidates: ["adapter+lora", "bitfit", "prefix"]),
        (name: "S4b", dimension: Strategies(1), candidates: ["lora", "adapter+prefix"]),
    ],
    final_runs: Some((top: 1, seeds: Some([2, 3, 4]), epochs: Some(5), baselines: ["lora", "full"])),
)
"#
    )
}

/// A two-class TSV (`text`, `label` with `pos`/`neg`) of `rows` short examples, the classes alternating: a task the
/// tiny fixtures train on in a moment.
pub fn toy_tsv(rows: usize) -> String {
    let mut tsv = String::from("text\tlabel\n");
    for i in 0..rows {
        tsv.push_str(if i % 2 == 0 {
            "the cat sat on the mat\tpos\n"
        } else {
            "a dog runs in the park\tneg\n"
        });
    }
    tsv
}

pub fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn parse(cell: &str) -> f64 {
    if cell.is_empty() {
        f64::NAN
    } else {
        cell.parse()
            .unwrap_or_else(|e| panic!("number `{cell}`: {e}"))
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

/// Rebuilds every stage's populations from trials.csv and checks each p-value and statistic in stages.csv.
/// Returns the number of comparisons checked.
pub fn check_stages_against_trials(dir: &Path) -> usize {
    let trials = read_csv(&dir.join("trials.csv"));
    let stages = read_csv(&dir.join("stages.csv"));
    // (stage, candidate) -> design index -> (sum, count, all ok)
    let mut designs: BTreeMap<(String, String), BTreeMap<usize, (f64, usize, bool)>> =
        BTreeMap::new();
    for row in trials.iter().filter(|r| r["stage"] != "final") {
        let entry = designs
            .entry((row["stage"].clone(), row["candidate"].clone()))
            .or_default()
            .entry(row["design_index"].parse().expect("index"))
            .or_insert((0.0, 0, true));
        if row["status"] == "ok" {
            entry.0 += parse(&row["primary"]);
            entry.1 += 1;
        } else {
            entry.2 = false;
        }
    }
    let population = |stage: &str, candidate: &str| -> Vec<f64> {
        designs
            .get(&(stage.to_string(), candidate.to_string()))
            .map(|m| {
                m.values()
                    .filter(|d| d.2)
                    .map(|d| d.0 / d.1 as f64)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut checked = 0;
    let stage_names: Vec<String> = {
        let mut v: Vec<String> = stages.iter().map(|r| r["stage"].clone()).collect();
        v.dedup();
        v
    };
    for stage in stage_names {
        let rows: Vec<&BTreeMap<String, String>> =
            stages.iter().filter(|r| r["stage"] == stage).collect();
        let winner = rows
            .iter()
            .find(|r| r["chosen"] == "true")
            .expect("a chosen candidate");
        let w = population(&stage, &winner["candidate"]);
        let mut raw = Vec::new();
        for row in &rows {
            let pop = population(&stage, &row["candidate"]);
            assert_eq!(
                row["n"],
                pop.len().to_string(),
                "{stage}/{}: n",
                row["candidate"]
            );
            let s = stats::summary(&pop);
            assert!(
                same(s.mean, parse(&row["mean"])),
                "{stage}/{}: mean",
                row["candidate"]
            );
            assert!(
                same(s.median, parse(&row["median"])),
                "{stage}/{}: median",
                row["candidate"]
            );
            if row["chosen"] == "true" || pop.is_empty() {
                assert!(row["u_p"].is_empty());
                continue;
            }
            let ks = stats::ks_two_sample(&w, &pop).expect("non-empty");
            let mw = stats::mann_whitney_u(&w, &pop).expect("non-empty");
            assert!(
                same(ks.d, parse(&row["ks_d"])),
                "{stage}/{}: D",
                row["candidate"]
            );
            assert!(
                same(ks.p_value, parse(&row["ks_p"])),
                "{stage}/{}: KS p",
                row["candidate"]
            );
            assert!(
                same(mw.u, parse(&row["u"])),
                "{stage}/{}: U",
                row["candidate"]
            );
            assert!(
                same(mw.p_value, parse(&row["u_p"])),
                "{stage}/{}: MW p",
                row["candidate"]
            );
            if let Some(t) = stats::welch_t_test(&w, &pop) {
                assert!(
                    same(t.p_value, parse(&row["welch_p"])),
                    "{stage}/{}: Welch p",
                    row["candidate"]
                );
            }
            raw.push((
                row["candidate"].clone(),
                mw.p_value,
                parse(&row["u_p_holm"]),
            ));
            checked += 1;
        }
        // The selection-aware family: every pair of non-empty populations, in the stage's candidate order.
        let pops: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| population(&stage, &r["candidate"]))
            .collect();
        let slices: Vec<&[f64]> = pops.iter().map(Vec::as_slice).collect();
        let pairs = stats::all_pairs_mann_whitney(&slices);
        let wi = rows
            .iter()
            .position(|r| r["chosen"] == "true")
            .expect("a chosen candidate");
        for (i, row) in rows.iter().enumerate() {
            if i != wi && !pops[i].is_empty() {
                assert!(
                    same(pairs.p_holm(wi, i), parse(&row["u_p_all_pairs"])),
                    "{stage}/{}: all-pairs p",
                    row["candidate"]
                );
            }
        }
        let adjusted = stats::holm_adjust(&raw.iter().map(|r| r.1).collect::<Vec<_>>());
        for (r, a) in raw.iter().zip(adjusted) {
            assert!(same(a, r.2), "{stage}/{}: Holm p {a} vs {}", r.0, r.2);
        }
    }
    checked
}
