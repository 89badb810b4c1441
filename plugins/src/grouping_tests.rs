use super::*;
use peftspace_core::registry::registries;
use peftspace_core::space::compositions;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeSet;

const RULES: [&str; 6] = [
    "s0",
    "uniform",
    "increasing",
    "decreasing",
    "spindle",
    "bottleneck",
];

fn rule(name: &str) -> Box<dyn GroupingRule> {
    registries().unwrap().grouping(name).unwrap()
}

/// The definitions again, written as independently as possible: by brute force over 4-tuples.
fn brute_force_counts_12_4() -> [usize; 6] {
    let mut counts = [0; 6];
    for a in 1..=12usize {
        for b in 1..=12usize {
            for c in 1..=12usize {
                for d in 1..=12usize {
                    if a + b + c + d != 12 {
                        continue;
                    }
                    let v = [a, b, c, d];
                    let equal = a == b && b == c && c == d;
                    counts[0] += 1;
                    counts[1] +=
                        usize::from(v.iter().max().unwrap() - v.iter().min().unwrap() <= 1);
                    counts[2] += usize::from(a <= b && b <= c && c <= d && !equal);
                    counts[3] += usize::from(a >= b && b >= c && c >= d && !equal);
                    // With G = 4 the middle pair may be in any order once both outer groups are below both.
                    counts[4] += usize::from(a < b.min(c) && d < b.min(c));
                    counts[5] += usize::from(a > b.max(c) && d > b.max(c));
                }
            }
        }
    }
    counts
}

#[test]
fn counts_for_12_layers_in_4_groups_match_brute_force() {
    let brute = brute_force_counts_12_4();
    // Also checked against an independent enumeration of the documented definitions: 165, 1, 14, 14, 20, 20.
    assert_eq!(brute, [165, 1, 14, 14, 20, 20]);
    for (i, name) in RULES.iter().enumerate() {
        let r = rule(name);
        let admitted = compositions(12, 4)
            .into_iter()
            .filter(|c| r.admits(c))
            .count();
        assert_eq!(admitted, brute[i], "{name}");
    }
}

#[test]
fn documented_examples() {
    let r = |n: &str, s: &[usize]| rule(n).admits(s);
    assert!(
        r("spindle", &[1, 2, 2, 1])
            && r("spindle", &[2, 4, 5, 1])
            && r("spindle", &[1, 3, 5, 3, 1])
    );
    assert!(
        !r("spindle", &[1, 3, 2, 3, 1]),
        "a dip in the middle is not a spindle"
    );
    assert!(
        !r("spindle", &[2, 2, 3, 1]),
        "outer groups must be strictly smaller"
    );
    assert!(r("bottleneck", &[2, 1, 1, 2]) && r("bottleneck", &[5, 1, 3, 4]));
    assert!(
        !r("bottleneck", &[5, 1, 3, 1, 4]),
        "a bump in the middle is not a bottleneck"
    );
    assert!(
        r("uniform", &[3, 3, 3, 3]) && r("uniform", &[2, 1, 2, 1]) && !r("uniform", &[1, 3, 3, 3])
    );
    assert!(
        r("increasing", &[1, 1, 2, 2])
            && !r("increasing", &[3, 3, 3, 3])
            && !r("increasing", &[2, 1, 2, 2])
    );
    assert!(r("decreasing", &[3, 3, 1, 1]) && !r("decreasing", &[1, 2, 3, 3]));
    assert!(!r("spindle", &[3, 3]) && !r("bottleneck", &[6]));
    assert!(!r("s0", &[3, 0, 3]), "empty groups are never admitted");
}

#[test]
fn every_admitted_composition_can_be_sampled_for_small_layer_counts() {
    let mut rng = StdRng::seed_from_u64(11);
    for name in RULES {
        let r = rule(name);
        for layers in 1..=9 {
            for groups in 1..=layers.min(5) {
                let admitted: BTreeSet<Vec<usize>> = compositions(layers, groups)
                    .into_iter()
                    .filter(|c| r.admits(c))
                    .collect();
                if admitted.is_empty() {
                    let err = r.sample(layers, groups, &mut rng).unwrap_err().to_string();
                    assert!(err.contains(name) && err.contains("admits no way"), "{err}");
                    continue;
                }
                let mut seen = BTreeSet::new();
                for _ in 0..(40 * admitted.len()) {
                    seen.insert(r.sample(layers, groups, &mut rng).unwrap());
                }
                assert_eq!(seen, admitted, "{name} L={layers} G={groups}");
            }
        }
    }
}

#[test]
fn large_layer_counts_sample_by_rejection_and_stay_admitted() {
    // C(99, 7) ≈ 1.5e10 compositions: too many to list, so uniform draws are filtered.
    let mut rng = StdRng::seed_from_u64(5);
    for name in ["s0", "increasing", "spindle"] {
        let s = rule(name).sample(100, 8, &mut rng).unwrap();
        assert_eq!(s.iter().sum::<usize>(), 100);
        assert!(rule(name).admits(&s), "{name}: {s:?}");
    }
}

proptest! {
    #[test]
    fn every_sample_is_admitted_by_its_rule(layers in 1usize..40, groups in 1usize..7, seed in any::<u64>(), which in 0usize..6) {
        let r = rule(RULES[which]);
        let mut rng = StdRng::seed_from_u64(seed);
        if let Ok(s) = r.sample(layers, groups, &mut rng) {
            prop_assert_eq!(s.len(), groups);
            prop_assert_eq!(s.iter().sum::<usize>(), layers);
            prop_assert!(r.admits(&s));
        } else {
            let any_admitted = compositions(layers, groups).iter().any(|c| r.admits(c));
            prop_assert!(!any_admitted);
        }
    }
}
