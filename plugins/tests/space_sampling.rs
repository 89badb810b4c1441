//! The sampler with the real grouping and allocation rules, on MiniLM shapes with stand-in strategies that count
//! like the built-in ones (LoRA on q and v, Houlsby adapters, key/value prefixes, BitFit).

use peftspace_core::registry::registries;
use peftspace_core::space::{seeded_rng, DesignSpace, SampleContext, SampleStats};
use peftspace_core::spec::Dimension;
use peftspace_core::test_doubles::{minilm, strategies};

use peftspace_plugins as _;

fn context() -> SampleContext {
    SampleContext {
        info: minilm(),
        strategies: strategies(),
        fraction: 0.005,
        registries: registries().expect("registries"),
    }
}

fn names() -> Vec<String> {
    ["adapter", "prefix", "lora", "bitfit"]
        .map(String::from)
        .to_vec()
}

#[test]
fn paper_stages_sample_admitted_designs_within_one_percent() {
    let ctx = context();
    let s0 = DesignSpace::new(6, 4, names()).unwrap();
    let spaces = [
        s0.clone(),
        s0.constrain(Dimension::Grouping, "spindle").unwrap(),
        s0.constrain(Dimension::Grouping, "increasing")
            .unwrap()
            .constrain(Dimension::Allocation, "decreasing")
            .unwrap(),
        s0.constrain(Dimension::Grouping, "bottleneck")
            .unwrap()
            .constrain(Dimension::Allocation, "uniform")
            .unwrap(),
        s0.constrain(Dimension::TunedGroups, "0111")
            .unwrap()
            .constrain(Dimension::Strategies(2), "bitfit")
            .unwrap(),
    ];
    for space in spaces {
        let mut rng = seeded_rng(1);
        let mut stats = SampleStats::default();
        for _ in 0..200 {
            let s = space.sample(&ctx, &mut rng, &mut stats).unwrap();
            assert!(
                space.admits(&s.design, &ctx.registries).unwrap(),
                "{}",
                space.describe()
            );
            assert!(s.plan.relative_error().abs() <= 0.01);
        }
        assert_eq!(stats.drawn, 200 + stats.rejected);
        eprintln!(
            "{}: rejection rate {:.3}",
            space.describe(),
            stats.rejection_rate()
        );
    }
}
