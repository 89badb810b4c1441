use super::*;
use crate::test_doubles::{minilm, registries, strategies};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn names() -> Vec<String> {
    ["adapter", "prefix", "lora", "bitfit"]
        .map(String::from)
        .to_vec()
}

fn context() -> SampleContext {
    SampleContext {
        info: minilm(),
        strategies: strategies(),
        fraction: 0.005,
        registries: registries(),
    }
}

#[test]
fn composition_counts_match_binomials() {
    assert_eq!(count_compositions(12, 4), 165);
    assert_eq!(compositions(12, 4).len(), 165);
    assert_eq!(compositions(6, 4).len(), 10);
    assert_eq!(count_compositions(3, 4), 0);
    assert!(compositions(3, 4).is_empty());
    assert!(compositions(12, 4)
        .iter()
        .all(|c| c.len() == 4 && c.iter().sum::<usize>() == 12 && !c.contains(&0)));
}

#[test]
fn uniform_compositions_reach_every_composition() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut seen = BTreeSet::new();
    for _ in 0..2_000 {
        let c = uniform_composition(6, 4, &mut rng);
        assert_eq!(c.iter().sum::<usize>(), 6);
        seen.insert(c);
    }
    assert_eq!(seen.len(), 10);
}

#[test]
fn a_rule_narrower_than_the_draws_still_finds_its_compositions() {
    // 36 layers in 6 groups: 324,632 compositions, more than are listed, and one is all sixes. Uniform draws miss a
    // single admitted composition about 5 % of the time; the walk after them finds it every time.
    let six_sixes = |c: &[usize]| c.iter().all(|&n| n == 6);
    let mut rng = StdRng::seed_from_u64(3);
    assert_eq!(nth_admitted(&six_sixes, 36, 6, &mut rng), Some(vec![6; 6]));
    assert_eq!(nth_admitted(&|_| false, 36, 6, &mut rng), None);
    // Among several admitted compositions the walk chooses each one.
    let first_is_30 = |c: &[usize]| c[0] == 30;
    let chosen: std::collections::BTreeSet<Vec<usize>> = (0..200)
        .filter_map(|_| nth_admitted(&first_is_30, 36, 6, &mut rng))
        .collect();
    assert_eq!(
        chosen,
        compositions(6, 5)
            .into_iter()
            .map(|c| [vec![30], c].concat())
            .collect()
    );
    let sample = sample_composition("sixes", &six_sixes, 36, 6, &mut rng).unwrap();
    assert_eq!(sample, vec![6; 6]);
}

#[test]
fn sampling_is_seeded_admitted_and_counts_rejections() {
    let ctx = context();
    let space = DesignSpace::new(6, 4, names())
        .unwrap()
        .constrain(Dimension::Grouping, "first_largest")
        .unwrap();
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut stats = SampleStats::default();
        let designs: Vec<SampledDesign> = (0..50)
            .map(|_| space.sample(&ctx, &mut rng, &mut stats).unwrap())
            .collect();
        (designs, stats)
    };
    let (a, stats) = run(7);
    let (b, _) = run(7);
    let (c, _) = run(8);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(stats.drawn, 50 + stats.rejected);
    for s in &a {
        assert!(space.admits(&s.design, &ctx.registries).unwrap());
        assert!(s.plan.relative_error().abs() <= budget::TOLERANCE);
    }
}

#[test]
fn constraints_narrow_the_space() {
    let ctx = context();
    let space = DesignSpace::new(6, 4, names())
        .unwrap()
        .constrain(Dimension::TunedGroups, "0111")
        .unwrap()
        .constrain(Dimension::Strategies(1), "lora+adapter")
        .unwrap();
    assert_eq!(
        space.describe(),
        "grouping=s0 allocation=s0 tuned=0111 G2=adapter+lora"
    );
    let mut rng = StdRng::seed_from_u64(1);
    let mut stats = SampleStats::default();
    for _ in 0..30 {
        let s = space.sample(&ctx, &mut rng, &mut stats).unwrap();
        assert_eq!(s.design.tuned, vec![false, true, true, true]);
        assert_eq!(
            s.design.strategies[1],
            ["adapter", "lora"].map(String::from).into()
        );
        assert!(s.plan.layers[..s.design.group_sizes[0]]
            .iter()
            .all(|l| l.strategies.is_empty()));
    }
}

#[test]
fn bad_candidates_are_refused_with_the_fix() {
    let space = DesignSpace::new(6, 4, names()).unwrap();
    let e = space
        .constrain(Dimension::TunedGroups, "011")
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 characters"), "{e}");
    let e = space
        .constrain(Dimension::TunedGroups, "0000")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tunes no group"), "{e}");
    let e = space
        .constrain(Dimension::Strategies(1), "lora+ia3")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`ia3`") && e.contains("adapter, prefix, lora, bitfit"),
        "{e}"
    );
    let e = space
        .constrain(Dimension::Strategies(4), "lora")
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 groups"), "{e}");
    assert!(DesignSpace::new(3, 4, names()).is_err());
}

#[test]
fn an_infeasible_space_says_why() {
    // BitFit alone everywhere on MiniLM reaches 6 × 4,224 = 25,344 of 113,566: every draw is rejected.
    let mut space = DesignSpace::new(6, 2, names()).unwrap();
    space = space.constrain(Dimension::TunedGroups, "11").unwrap();
    space = space.constrain(Dimension::Strategies(0), "bitfit").unwrap();
    space = space.constrain(Dimension::Strategies(1), "bitfit").unwrap();
    let mut stats = SampleStats::default();
    let err = space
        .sample(&context(), &mut StdRng::seed_from_u64(1), &mut stats)
        .unwrap_err()
        .to_string();
    assert!(err.contains("25,344") && err.contains("113,566"), "{err}");
    assert_eq!(stats.rejected, MAX_DRAWS);
    assert_eq!(stats.rejection_rate(), 1.0);
}

#[test]
fn exclusion_names_the_constraint_a_design_breaks() {
    let reg = registries();
    let codes = crate::design::StrategyCodes::from_registries(&reg);
    let design = |text: &str| Design::parse(text, &codes).unwrap();
    let space = DesignSpace::new(6, 4, names())
        .unwrap()
        .constrain(Dimension::Grouping, "first_largest")
        .unwrap();
    let reason = space
        .exclusion(&design("g=1,2,2,1 s=L|L|L|L"), &reg)
        .unwrap()
        .expect("1,2,2,1 is not first_largest");
    assert!(
        reason.contains("[1, 2, 2, 1]") && reason.contains("`first_largest` grouping"),
        "{reason}"
    );
    assert!(!space.admits(&design("g=1,2,2,1 s=L|L|L|L"), &reg).unwrap());
    let reason = space
        .exclusion(&design("g=2,2,2 s=L|L|L"), &reg)
        .unwrap()
        .expect("three groups");
    assert!(reason.contains("3 groups; the space has 4"), "{reason}");
    let tuned = DesignSpace::new(6, 4, names())
        .unwrap()
        .constrain(Dimension::TunedGroups, "0111")
        .unwrap();
    let reason = tuned
        .exclusion(&design("g=1,2,2,1 s=L|L|L|L"), &reg)
        .unwrap()
        .expect("all four tuned");
    assert!(
        reason.contains("tunes groups 1111; the space tunes 0111"),
        "{reason}"
    );
    assert_eq!(
        tuned
            .exclusion(&design("g=1,2,2,1 t=0111 s=-|L|L|L"), &reg)
            .unwrap(),
        None
    );
}
