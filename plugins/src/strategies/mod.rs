//! The built-in PEFT strategies. Each file holds one strategy, its options (every field documents its default), its
//! registry entry and its tests.
//!
//! Every strategy creates its trainable variables under `layer.<global index>.<strategy>.…` in the
//! `peftspace_core::params::ParamStore`, in the style of Hugging Face PEFT names.

pub mod adapter;
pub mod bitfit;
pub mod lora;
pub mod prefix;

#[cfg(test)]
pub(crate) mod test_support;

use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{LayerShape, ResidualSite, SiteKind};
use peftspace_core::Result;

/// Runs `f` with the store scoped to `layer.<index>.<strategy>`.
pub(crate) fn in_layer_scope<T>(
    store: &mut ParamStore,
    layer: &LayerShape,
    strategy: &str,
    f: impl FnOnce(&mut ParamStore) -> Result<T>,
) -> Result<T> {
    store.scoped(format!("layer.{}", layer.index), |s| s.scoped(strategy, f))
}

/// The name segment of a residual site in variable names (`attn`, `cross_attn`, `ffn`).
pub(crate) fn residual_site_name(site: ResidualSite) -> &'static str {
    match site {
        ResidualSite::Attention => "attn",
        ResidualSite::CrossAttention => "cross_attn",
        ResidualSite::Ffn => "ffn",
    }
}

/// Looks up the entry for a projection in a small per-site list.
pub(crate) fn find_site<T>(items: &[(SiteKind, T)], site: SiteKind) -> Option<&T> {
    items.iter().find(|(k, _)| *k == site).map(|(_, t)| t)
}

/// Looks up the entry for a residual site in a small per-site list.
pub(crate) fn find_site_residual<T>(items: &[(ResidualSite, T)], site: ResidualSite) -> Option<&T> {
    items.iter().find(|(k, _)| *k == site).map(|(_, t)| t)
}

#[cfg(test)]
mod combined_tests {
    use super::test_support::*;
    use super::{adapter, bitfit, lora, prefix};
    use peftspace_core::hooks::{DesignHooks, NoHooks};
    use peftspace_core::registry::registries;
    use peftspace_core::strategy::TuningStrategy;

    #[test]
    fn built_in_strategies_are_registered_with_their_codes() {
        let r = registries().unwrap();
        for (name, code) in [
            ("adapter", "A"),
            ("prefix", "P"),
            ("lora", "L"),
            ("bitfit", "B"),
        ] {
            let e = r.strategy_entry(name).unwrap();
            assert_eq!(e.code, code);
            assert_eq!(r.strategies[name].source, "built-in");
            let s = r.strategy(name, &ron::Value::Unit).unwrap();
            assert_eq!(s.name(), name);
        }
        assert!(r
            .strategy("bitfit", &ron::Value::Unit)
            .unwrap()
            .fixed_size());
        assert!(!r.strategy("lora", &ron::Value::Unit).unwrap().fixed_size());
    }

    fn all_four(exact_identity: bool) -> Vec<Box<dyn TuningStrategy>> {
        let adapter = adapter::Adapter::new(adapter::AdapterOptions {
            up_init_std: if exact_identity { 0.0 } else { 0.01 },
            ..Default::default()
        })
        .unwrap();
        vec![
            Box::new(adapter),
            Box::new(prefix::PrefixTuning::default()),
            Box::new(lora::Lora::default()),
            Box::new(bitfit::BitFit),
        ]
    }

    #[test]
    fn all_four_in_one_layer_count_start_and_train_together() {
        let layers = [bert_layer(0, 16, 4, 40), bert_layer(1, 16, 4, 40)];
        let x = input(&[2, 5, 16], 0.25);
        for with_prefix in [false, true] {
            let strategies: Vec<_> = all_four(true)
                .into_iter()
                .filter(|s| with_prefix || s.name() != "prefix")
                .collect();
            let mut store = store();
            let mut hooks = DesignHooks::new(layers.len());
            let mut expected = 0;
            for layer in &layers {
                for s in &strategies {
                    let size = if s.fixed_size() { 0 } else { 3 };
                    expected += s.params(layer, size);
                    hooks
                        .push(layer.index, s.build(layer, size, &mut store).unwrap())
                        .unwrap();
                }
            }
            assert_eq!(store.num_scalars(), expected);
            let plain = synthetic_layer(
                &NoHooks,
                &layers[1],
                &synthetic_layer(&NoHooks, &layers[0], &x),
            );
            let tuned =
                synthetic_layer(&hooks, &layers[1], &synthetic_layer(&hooks, &layers[0], &x));
            let diff = max_abs_diff(&plain, &tuned);
            if with_prefix {
                assert!(diff > 0.0, "prefix rows change attention");
            } else {
                assert_eq!(
                    diff, 0.0,
                    "adapter (identity init), LoRA and BitFit start as the plain model"
                );
            }
        }

        // Gradients: with LoRA's B = 0 its A gets none in the first step (true of LoRA everywhere), so give B a
        // value as one optimiser step would, then every variable of every strategy must receive a gradient.
        let mut store = store();
        let mut hooks = DesignHooks::new(layers.len());
        for layer in &layers {
            for s in all_four(false) {
                let size = if s.fixed_size() { 0 } else { 2 };
                hooks
                    .push(layer.index, s.build(layer, size, &mut store).unwrap())
                    .unwrap();
            }
        }
        for (name, var) in store.named_vars() {
            if name.ends_with("lora_B") {
                var.set(&(input(var.dims(), 0.9) * 0.1).unwrap()).unwrap();
            }
        }
        let out = synthetic_layer(&hooks, &layers[1], &synthetic_layer(&hooks, &layers[0], &x));
        let loss = out.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in store.named_vars() {
            assert!(grad_mass(&grads, var) > 0.0, "no gradient for {name}");
        }
        assert!(store
            .named_vars()
            .iter()
            .any(|(n, _)| n.starts_with("layer.1.prefix.self.key")));
    }
}

#[cfg(test)]
mod canonical_options_tests {
    use peftspace_core::registry::registries;
    use peftspace_core::saved::canonical_options;
    use peftspace_core::spec::StrategySpec;

    fn spec(name: &str, options: &str) -> StrategySpec {
        StrategySpec {
            name: name.into(),
            options: ron::from_str(options).expect("RON"),
            learning_rate: None,
        }
    }

    /// Every built-in strategy writes its options in full, whatever the experiment's spelling: `()` (the
    /// defaults), some fields, all fields. The text reads back into the same strategy and writes itself again
    /// unchanged. Before, a saved `(name: "lora")` stored `()` and `export` could not read it back.
    #[test]
    fn default_options_of_every_strategy_round_trip_in_canonical_form() {
        let expected = [
            ("lora", "(targets: [\"q\", \"v\"], alpha: 8.0)"),
            (
                "adapter",
                "(placement: \"houlsby\", activation: \"gelu\", up_init_std: 0.01)",
            ),
            (
                "prefix",
                "(cross: true, reparameterize: false, mlp_hidden: 512, init_std: 0.02)",
            ),
            ("bitfit", "()"),
        ];
        for (name, canonical) in expected {
            let written = canonical_options(&spec(name, "()")).expect("canonical");
            assert_eq!(written, canonical, "{name}");
            let again = canonical_options(&spec(name, &written)).expect("reads back");
            assert_eq!(again, written, "{name}");
            assert!(registries()
                .expect("registries")
                .strategy(name, &ron::from_str(&written).expect("RON"))
                .is_ok());
        }
        // A partial spelling is completed.
        assert_eq!(
            canonical_options(&spec("lora", "(alpha: 16.0)")).expect("canonical"),
            "(targets: [\"q\", \"v\"], alpha: 16.0)"
        );
    }
}
