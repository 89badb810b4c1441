use super::*;
use crate::design::Design;
use crate::test_doubles::{bert_base, codes, minilm, strategies};
use proptest::prelude::*;

fn design(text: &str) -> Design {
    Design::parse(text, &codes()).unwrap()
}

fn sizes_of(plan: &BudgetPlan, strategy: &str) -> Vec<usize> {
    plan.layers
        .iter()
        .map(|l| {
            l.strategies
                .iter()
                .find(|s| s.strategy == strategy)
                .map_or(0, |s| s.size)
        })
        .collect()
}

#[test]
fn lora_everywhere_on_minilm_matches_hand_computation() {
    // target = 0.005 × 22,713,216 = 113,566.08; LoRA on q,v of width 384 costs 1,536 per rank and layer.
    // G1 wants 18,927.68 → rank 12 (18,432), carry +495.68; G2 wants 38,351.04 → ranks 12,13 (38,400), carry −48.96;
    // G3 wants 37,806.40 → 12,13 (38,400), carry −593.60; G4 wants 18,334.08 → rank 12 (18,432). Total 113,664.
    let plan = solve(
        &minilm(),
        &design("g=1,2,2,1 s=L|L|L|L"),
        &strategies(),
        0.005,
    )
    .unwrap();
    assert_eq!(plan.target, 113_566);
    assert_eq!(sizes_of(&plan, "lora"), vec![12, 12, 13, 12, 13, 12]);
    assert_eq!(plan.achieved, 113_664);
    assert_eq!(plan.group_params, vec![18_432, 38_400, 38_400, 18_432]);
    assert!(plan.relative_error().abs() < 0.001);
    assert_eq!(
        plan.sizes_text(|n| codes().code(n).unwrap().to_string()),
        "L12 L12 L13 L12 L13 L12"
    );
    let assignments = plan.layer_assignments();
    assert_eq!(assignments.len(), 6);
    assert_eq!(
        (assignments[2].layer, assignments[2].strategies.clone()),
        (2, vec![("lora".to_string(), 13)])
    );
}

#[test]
fn bitfit_alone_passes_its_rest_to_the_other_groups_in_proportion() {
    // BERT-base: BitFit = 6,912 projection biases + 1,536 norm biases = 8,448 per layer; 25,344 for 3 layers.
    // target 547,411.2; each group's share 136,852.8; G1 passes 111,508.8, split equally over G2..G4.
    let plan = solve(
        &bert_base(),
        &design("g=3,3,3,3 s=B|L|L|L"),
        &strategies(),
        0.005,
    )
    .unwrap();
    assert_eq!(plan.group_params[0], 25_344);
    for g in 1..4 {
        assert!(
            (plan.group_budgets[g] - 174_022.4).abs() < 1e-6,
            "{:?}",
            plan.group_budgets
        );
    }
    assert!(plan.relative_error().abs() <= TOLERANCE);
    assert!(plan.layers[..3]
        .iter()
        .all(|l| l.strategies.len() == 1 && l.strategies[0].params == 8_448));
}

#[test]
fn uneven_passing_follows_shares() {
    // G1 (BitFit, share 0.1) passes 54,741.12 − 25,344 = 29,397.12; G2 and G3 get it in ratio 0.3 : 0.6.
    let plan = solve_unchecked(
        &bert_base(),
        &design("g=3,3,6 a=0.1,0.3,0.6 s=B|L|P"),
        &strategies(),
        0.005,
    )
    .unwrap();
    let target = 547_411.2;
    let passed = 0.1 * target - 25_344.0;
    assert!((plan.group_budgets[1] - (0.3 * target + passed / 3.0)).abs() < 1e-6);
    assert!((plan.group_budgets[2] - (0.6 * target + passed * 2.0 / 3.0)).abs() < 1e-6);
}

#[test]
fn fixed_strategies_come_first_and_sized_ones_share_the_rest() {
    let plan = solve(&bert_base(), &design("g=6,6 s=BL|AP"), &strategies(), 0.005).unwrap();
    for l in &plan.layers[..6] {
        let bitfit = l
            .strategies
            .iter()
            .find(|s| s.strategy == "bitfit")
            .unwrap();
        assert_eq!((bitfit.params, bitfit.fixed, bitfit.size), (8_448, true, 1));
    }
    // G1: 273,705.6 − 50,688 for BitFit = 223,017.6 for LoRA at 18,432 per rank over 6 layers → rank 12.1.
    // G2: adapter and prefix get 136,852.8 each: adapter 18,444 per width + 9,216 → 6.9; prefix 9,216 per length → 14.8.
    let lora = sizes_of(&plan, "lora");
    assert_eq!(&lora[..6], &[12; 6]);
    let adapter = sizes_of(&plan, "adapter");
    let prefix = sizes_of(&plan, "prefix");
    assert!(
        adapter[6..].iter().all(|&r| r == 6 || r == 7),
        "{adapter:?}"
    );
    assert!(
        prefix[6..].iter().all(|&r| r == 14 || r == 15),
        "{prefix:?}"
    );
    assert!(
        plan.relative_error().abs() < 0.002,
        "{}",
        plan.relative_error()
    );
}

#[test]
fn a_share_too_small_for_size_one_names_group_strategy_and_numbers() {
    let err = solve(
        &bert_base(),
        &design("g=1,3,4,4 a=0.004,0.332,0.332,0.332 s=L|A|A|A"),
        &strategies(),
        0.005,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("lora size 1 needs 3,072 parameters per layer"),
        "{err}"
    );
    assert!(err.contains("group G1"), "{err}");
    assert!(err.contains("gets 2,190"), "{err}");
}

#[test]
fn all_fixed_designs_far_from_the_target_are_rejected() {
    let d = design("g=6,6 s=B|B");
    let plan = solve_unchecked(&bert_base(), &d, &strategies(), 0.005).unwrap();
    assert_eq!(plan.achieved, 12 * 8_448);
    let err = solve(&bert_base(), &d, &strategies(), 0.005)
        .unwrap_err()
        .to_string();
    assert!(err.contains("101,376") && err.contains("547,411"), "{err}");
    // …but meets a budget that matches it (101,376 / 109,482,240).
    let fraction = 101_376.0 / 109_482_240.0;
    assert!(solve(&bert_base(), &d, &strategies(), fraction).is_ok());
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(12_288), "12,288");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

fn arb_design() -> impl Strategy<Value = Design> {
    // MiniLM has 6 layers: compositions into 1..=4 groups.
    (1usize..=4)
        .prop_flat_map(|g| {
            (
                Just(g),
                proptest::sample::subsequence((1..6).collect::<Vec<usize>>(), g - 1),
                proptest::collection::vec(0.05f64..1.0, g),
                proptest::collection::vec(1u8..16, g),
                proptest::collection::vec(any::<bool>(), g),
            )
        })
        .prop_map(|(g, cuts, w, masks, mut tuned)| {
            tuned[0] = true;
            let mut bounds = vec![0];
            bounds.extend(cuts);
            bounds.push(6);
            let sizes: Vec<usize> = bounds.windows(2).map(|p| p[1] - p[0]).collect();
            let names = ["adapter", "prefix", "lora", "bitfit"];
            let sum: f64 = (0..g).filter(|&i| tuned[i]).map(|i| w[i]).sum();
            Design {
                group_sizes: sizes,
                shares: (0..g)
                    .map(|i| if tuned[i] { w[i] / sum } else { 0.0 })
                    .collect(),
                strategies: (0..g)
                    .map(|i| {
                        if !tuned[i] {
                            return Default::default();
                        }
                        (0..4)
                            .filter(|b| masks[i] & (1 << b) != 0)
                            .map(|b| names[b].to_string())
                            .collect()
                    })
                    .collect(),
                tuned,
            }
        })
}

proptest! {
    #[test]
    fn plans_are_exact_and_sizes_within_a_group_differ_by_at_most_one(d in arb_design()) {
        let info = minilm();
        let strategies = strategies();
        if let Ok(plan) = solve_unchecked(&info, &d, &strategies, 0.005) {
            let mut total = 0;
            for l in &plan.layers {
                for s in &l.strategies {
                    prop_assert_eq!(s.params, strategies[&s.strategy].params(&info.layers[l.layer], s.size));
                    prop_assert!(s.size >= 1);
                    total += s.params;
                }
                prop_assert_eq!(l.strategies.is_empty(), !d.tuned[l.group]);
            }
            prop_assert_eq!(total, plan.achieved);
            for g in 0..d.groups() {
                for name in &d.strategies[g] {
                    let sizes: Vec<usize> = plan.layers.iter().filter(|l| l.group == g)
                        .filter_map(|l| l.strategies.iter().find(|s| &s.strategy == name).map(|s| s.size)).collect();
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    prop_assert!(hi - lo <= 1, "{:?}", sizes);
                }
            }
        }
    }
}
