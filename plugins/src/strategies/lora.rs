//! LoRA (Hu et al., 2022, "LoRA: Low-Rank Adaptation of Large Language Models"): a rank-`r` update `B·A` next to a
//! frozen projection, applied on the activation path `y + scale·(x·Aᵀ)·Bᵀ` with `scale = alpha / r`.
//!
//! `W + scale·B·A` is never materialised: that would bring back the full-size weight gradient.
//! Size = rank `r`. Parameters: `Σ r·(d_in + d_out)` over the targeted projections present in the layer.
//!
//! `scaling: "rank"` is rsLoRA (Kalajdzievski, 2023; PEFT's `use_rslora`): `scale = alpha / √r`, which keeps the
//! update's magnitude comparable across ranks. Under an allocation the ranks differ from layer to layer, so the two
//! scalings train differently, and the choice is a search option.

use candle_core::{Tensor, Var};
use serde::Deserialize;

use peftspace_core::hooks::LayerModule;
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{LayerShape, LinearSite, SiteKind};
use peftspace_core::strategy::{parse_options, StrategyEntry, TuningStrategy};
use peftspace_core::{Error, Result};

use super::{find_site, in_layer_scope};

/// Options of `lora`, e.g. `(name: "lora", options: (targets: ["q", "k", "v", "o"], alpha: 16.0))`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraOptions {
    /// Projections that get an update, by short site name (`q`, `k`, `v`, `o`, `cq`, `ck`, `cv`, `co`, `ffn_in`,
    /// `ffn_gate`, `ffn_out`); names a layer does not have (cross-attention in an encoder) are skipped there.
    /// Default: `["q", "v"]` (Hu et al.'s main setting).
    pub targets: Vec<String>,
    /// Scaling numerator: the update is multiplied by `alpha / rank` (`alpha / √rank` with `scaling: Rank`).
    /// Default: `8.0` (Hugging Face PEFT's `LoraConfig` default), so rank 8 has scale 1.
    pub alpha: f64,
    /// `"standard"` (`alpha / r`, the default) or `"rank"` (rsLoRA, `alpha / √r`). A string: option values pass
    /// through RON's untyped values, which keep no enum variant names.
    pub scaling: String,
}

/// How the update is scaled with the rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoraScaling {
    /// `alpha / r` (Hu et al.).
    #[default]
    Standard,
    /// `alpha / √r` (rsLoRA; PEFT's `use_rslora`).
    Rank,
}

impl Default for LoraOptions {
    fn default() -> Self {
        LoraOptions {
            targets: vec!["q".into(), "v".into()],
            alpha: 8.0,
            scaling: "standard".into(),
        }
    }
}

impl LoraOptions {
    /// The scaling the options name.
    pub fn scaling(&self) -> Result<LoraScaling> {
        match self.scaling.as_str() {
            "standard" => Ok(LoraScaling::Standard),
            "rank" => Ok(LoraScaling::Rank),
            other => Err(Error::msg(format!(
                "options of strategy `lora`: scaling `{other}` is unknown; \"standard\" (alpha / r) or \"rank\" \
                 (rsLoRA, alpha / √r)"
            ))),
        }
    }
}

/// The LoRA strategy.
#[derive(Debug, Clone)]
pub struct Lora {
    alpha: f64,
    targets: Vec<SiteKind>,
    scaling: LoraScaling,
}

impl Default for Lora {
    fn default() -> Self {
        // The default options are valid by construction.
        Lora {
            alpha: 8.0,
            targets: vec![SiteKind::Query, SiteKind::Value],
            scaling: LoraScaling::Standard,
        }
    }
}

impl Lora {
    pub fn new(options: LoraOptions) -> Result<Self> {
        if !(options.alpha.is_finite() && options.alpha > 0.0) {
            return Err(Error::msg(format!(
                "options of strategy `lora`: alpha must be a finite number > 0, got {}",
                options.alpha
            )));
        }
        if options.targets.is_empty() {
            return Err(Error::msg("options of strategy `lora`: targets is empty; name at least one projection, e.g. [\"q\", \"v\"]"));
        }
        let mut targets = Vec::new();
        for name in &options.targets {
            let kind = SiteKind::from_short_name(name).ok_or_else(|| {
                let known: Vec<&str> = SiteKind::ALL.iter().map(|k| k.short_name()).collect();
                Error::msg(format!(
                    "options of strategy `lora`: unknown target `{name}`; known: {}",
                    known.join(", ")
                ))
            })?;
            if !targets.contains(&kind) {
                targets.push(kind);
            }
        }
        Ok(Lora {
            alpha: options.alpha,
            scaling: options.scaling()?,
            targets,
        })
    }

    /// The update's multiplier at `rank`.
    pub fn scale(&self, rank: usize) -> f64 {
        match self.scaling {
            LoraScaling::Standard => self.alpha / rank as f64,
            LoraScaling::Rank => self.alpha / (rank as f64).sqrt(),
        }
    }

    /// The targeted projections present in `layer`, in the layer's order.
    fn sites<'a>(&self, layer: &'a LayerShape) -> impl Iterator<Item = &'a LinearSite> + 'a {
        let targets = self.targets.clone();
        layer
            .linear
            .iter()
            .filter(move |s| targets.contains(&s.kind))
    }
}

impl TuningStrategy for Lora {
    fn name(&self) -> &str {
        "lora"
    }

    fn canonical_options(&self) -> Option<String> {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|k| format!("{:?}", k.short_name()))
            .collect();
        // `scaling` is written only when it is not the default, so designs saved before it existed keep their text
        // (and their trials their ids).
        let scaling = match self.scaling {
            LoraScaling::Standard => "",
            LoraScaling::Rank => ", scaling: \"rank\"",
        };
        Some(format!(
            "(targets: [{}], alpha: {:?}{scaling})",
            targets.join(", "),
            self.alpha
        ))
    }

    fn params(&self, layer: &LayerShape, size: usize) -> usize {
        self.sites(layer).map(|s| size * (s.d_in + s.d_out)).sum()
    }

    fn build(
        &self,
        layer: &LayerShape,
        size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>> {
        if size == 0 {
            return Err(Error::msg(format!(
                "strategy `lora` in layer {}: rank must be ≥ 1",
                layer.index
            )));
        }
        let sites: Vec<LinearSite> = self.sites(layer).copied().collect();
        let updates = in_layer_scope(store, layer, "lora", |store| {
            sites
                .iter()
                .map(|site| {
                    store.scoped(site.kind.short_name(), |s| {
                        // A: Kaiming-uniform (a = √5) as PyTorch's Linear and HF PEFT; B: zeros, so the update starts at 0.
                        let a = s.linear_weight("lora_A", size, site.d_in)?;
                        let b = s.zeros("lora_B", &[site.d_out, size])?;
                        Ok((site.kind, LowRank { a, b }))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Box::new(LoraLayer {
            scale: self.scale(size),
            updates,
        }))
    }
}

/// The name [`Lora::build`] gives a layer's `lora_A` (`[rank, d_in]`) or `lora_B` (`[d_out, rank]`) of a projection:
/// `layer.<i>.lora.<site>.lora_A`.
pub fn var_name(layer: usize, site: SiteKind, matrix: &str) -> String {
    format!("layer.{layer}.lora.{}.{matrix}", site.short_name())
}

fn create(options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
    Ok(Box::new(Lora::new(parse_options("lora", options)?)?))
}

peftspace_core::inventory::submit! {
    StrategyEntry {
        name: "lora",
        code: "L",
        summary: "low-rank updates y + (alpha/r)·(x·Aᵀ)·Bᵀ on chosen projections (default q, v; `scaling: \"rank\"` for \
                  rsLoRA's alpha/√r); size = rank",
        create,
    }
}

struct LowRank {
    a: Var,
    b: Var,
}

/// The LoRA updates of one layer.
pub struct LoraLayer {
    scale: f64,
    updates: Vec<(SiteKind, LowRank)>,
}

impl LayerModule for LoraLayer {
    fn linear(&self, site: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let Some(u) = find_site(&self.updates, site) else {
            return Ok(y);
        };
        let low = x.broadcast_matmul(&u.a.t()?)?;
        let update = low.broadcast_matmul(&u.b.t()?)?;
        Ok((y + (update * self.scale)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::test_support::*;

    fn with_targets(targets: &[&str]) -> Lora {
        Lora::new(LoraOptions {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn var_name_is_the_name_build_gives() {
        let l = with_targets(&["q", "ffn_out"]);
        let layer = &count_shapes()[0];
        let mut store = store();
        l.build(layer, 2, &mut store).unwrap();
        let names: Vec<&str> = store.named_vars().iter().map(|(n, _)| n.as_str()).collect();
        for site in [SiteKind::Query, SiteKind::FfnOut] {
            for m in ["lora_A", "lora_B"] {
                assert!(
                    names.contains(&var_name(layer.index, site, m).as_str()),
                    "{names:?}"
                );
            }
        }
    }

    #[test]
    fn counts_are_exact_and_match_created_vars() {
        for targets in [
            &["q", "v"][..],
            &["q", "k", "v", "o", "ffn_in", "ffn_out"],
            &["cq", "cv"],
        ] {
            let l = with_targets(targets);
            for layer in count_shapes() {
                for size in [1, 8, 12] {
                    let mut store = store();
                    l.build(&layer, size, &mut store).unwrap();
                    assert_eq!(
                        l.params(&layer, size),
                        store.num_scalars(),
                        "{targets:?} {layer:?} {size}"
                    );
                }
            }
        }
        // BERT-base, r = 8 on q and v: 8·(768+768)·2.
        assert_eq!(Lora::default().params(&bert_base_layer(0), 8), 24_576);
        // r = 12 on q and v over MiniLM's 6 layers (hidden 384): 12·768·2·6.
        assert_eq!(
            Lora::default().params(&bert_layer(0, 384, 12, 1536), 12) * 6,
            110_592
        );
        // FFN projections are rectangular: r·(768+3072) each.
        assert_eq!(
            with_targets(&["ffn_in", "ffn_out"]).params(&bert_base_layer(0), 4),
            2 * 4 * 3840
        );
        // Cross-attention targets are absent from encoder layers.
        assert_eq!(with_targets(&["cq"]).params(&bert_base_layer(0), 4), 0);
    }

    #[test]
    fn names_follow_hf_peft() {
        let mut store = store();
        Lora::default()
            .build(&bert_base_layer(3), 2, &mut store)
            .unwrap();
        let names: Vec<&str> = store.named_vars().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "layer.3.lora.q.lora_A",
                "layer.3.lora.q.lora_B",
                "layer.3.lora.v.lora_A",
                "layer.3.lora.v.lora_B"
            ]
        );
    }

    #[test]
    fn zero_b_leaves_output_unchanged() {
        for layer in small_shapes() {
            let l = with_targets(&["q", "k", "v", "o", "ffn_in", "ffn_out"]);
            let m = l.build(&layer, 3, &mut store()).unwrap();
            for site in &layer.linear {
                let x = input(&[2, 4, site.d_in], 0.2);
                let y = input(&[2, 4, site.d_out], 1.1);
                assert_eq!(
                    max_abs_diff(&m.linear(site.kind, &x, y.clone()).unwrap(), &y),
                    0.0
                );
            }
        }
    }

    #[test]
    fn update_is_scaled_low_rank_product() {
        let layer = bert_layer(0, 16, 4, 40);
        let mut store = store();
        let m = Lora::new(LoraOptions {
            alpha: 6.0,
            ..Default::default()
        })
        .unwrap()
        .build(&layer, 3, &mut store)
        .unwrap();
        // Give B non-zero values, then compare with x·(scale·B·A)ᵀ computed the slow way.
        let b = &store.named_vars()[1].1;
        b.set(&input(&[16, 3], 0.5)).unwrap();
        let a = store.named_vars()[0].1.as_tensor().clone();
        let x = input(&[2, 4, 16], 0.9);
        let y = input(&[2, 4, 16], 0.4);
        let got = m.linear(SiteKind::Query, &x, y.clone()).unwrap();
        let w = (b.as_tensor().matmul(&a).unwrap() * 2.0).unwrap(); // scale = 6 / 3
        let want = (y + x.broadcast_matmul(&w.t().unwrap()).unwrap()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    /// rsLoRA: the same A and B give an update √r times larger at rank r than the standard scaling's (alpha / √r
    /// against alpha / r); `scaling` appears in the canonical options only when it is not the default.
    #[test]
    fn rank_scaling_is_alpha_over_the_square_root_of_the_rank() {
        let layer = bert_layer(0, 16, 4, 40);
        let x = input(&[2, 4, 16], 0.9);
        let y = input(&[2, 4, 16], 0.4);
        let update = |scaling: &str, rank: usize| -> Tensor {
            let lora = Lora::new(LoraOptions {
                alpha: 6.0,
                scaling: scaling.into(),
                ..Default::default()
            })
            .unwrap();
            let mut store = store();
            let m = lora.build(&layer, rank, &mut store).unwrap();
            store.named_vars()[1]
                .1
                .set(&input(&[16, rank], 0.5))
                .unwrap();
            (m.linear(SiteKind::Query, &x, y.clone()).unwrap() - &y).unwrap()
        };
        for rank in [1, 4, 9] {
            let standard = update("standard", rank);
            let rs = update("rank", rank);
            let want = (standard * (rank as f64).sqrt()).unwrap();
            assert!(max_abs_diff(&rs, &want) < 1e-5, "rank {rank}");
        }
        let rs: ron::Value = ron::from_str(r#"(scaling: "rank")"#).unwrap();
        let rs = Lora::new(parse_options("lora", &rs).unwrap()).unwrap();
        assert_eq!(rs.scale(4), 4.0);
        let bad: ron::Value = ron::from_str(r#"(scaling: "sqrt")"#).unwrap();
        let e = Lora::new(parse_options("lora", &bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqrt") && e.contains("\"rank\""), "{e}");
        assert_eq!(
            rs.canonical_options().unwrap(),
            r#"(targets: ["q", "v"], alpha: 8.0, scaling: "rank")"#
        );
        assert_eq!(
            Lora::default().canonical_options().unwrap(),
            r#"(targets: ["q", "v"], alpha: 8.0)"#
        );
    }

    #[test]
    fn gradients_reach_every_var() {
        for layer in small_shapes() {
            let l = with_targets(&["q", "v", "cq", "ffn_out"]);
            let mut store = store();
            let m = l.build(&layer, 2, &mut store).unwrap();
            let mut loss =
                Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            for site in &layer.linear {
                let x = input(&[2, 3, site.d_in], 0.7);
                let y = input(&[2, 3, site.d_out], 0.1);
                let out = m.linear(site.kind, &x, y).unwrap();
                loss = (loss + out.sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            let grads = loss.backward().unwrap();
            for (name, var) in store.named_vars() {
                if name.ends_with("lora_B") {
                    assert!(grad_mass(&grads, var) > 0.0, "no gradient for {name}");
                }
            }
            // With B = 0 the gradient of A is exactly zero (as in every LoRA implementation); after one step on B
            // it is not.
            for (name, var) in store.named_vars() {
                if name.ends_with("lora_B") {
                    let g = grads.get(var.as_tensor()).unwrap();
                    var.set(&(var.as_tensor() - (g * 0.01).unwrap()).unwrap())
                        .unwrap();
                }
            }
            let mut loss =
                Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            for site in &layer.linear {
                let x = input(&[2, 3, site.d_in], 0.7);
                let y = input(&[2, 3, site.d_out], 0.1);
                let out = m.linear(site.kind, &x, y).unwrap();
                loss = (loss + out.sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            let grads = loss.backward().unwrap();
            for (name, var) in store.named_vars() {
                assert!(
                    grad_mass(&grads, var) > 0.0,
                    "no gradient for {name} after one step"
                );
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let v: ron::Value = ron::from_str("(targets: [\"query\"])").unwrap();
        let e = Lora::new(parse_options("lora", &v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("query") && e.contains("ffn_in"), "{e}");
        let v: ron::Value = ron::from_str("(alpha: 0.0)").unwrap();
        assert!(Lora::new(parse_options("lora", &v).unwrap()).is_err());
        let v: ron::Value = ron::from_str("(rank: 4)").unwrap();
        assert!(parse_options::<LoraOptions>("lora", &v).is_err());
        let v: ron::Value = ron::from_str("(targets: [\"q\", \"k\"], alpha: 16)").unwrap();
        let o: LoraOptions = parse_options("lora", &v).unwrap();
        assert_eq!(o.alpha, 16.0);
    }
}
