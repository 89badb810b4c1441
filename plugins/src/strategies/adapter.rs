//! Adapter (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer et al., 2021,
//! "AdapterFusion"): a bottleneck `down → activation → up` added with a residual connection to a sub-layer's output.
//!
//! Size = bottleneck width `m`. Each adapter has `2·hidden·m + m + hidden` parameters (two weight matrices, two biases).

use candle_core::{Tensor, Var};
use serde::Deserialize;

use peftspace_core::hooks::LayerModule;
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{LayerShape, ResidualSite};
use peftspace_core::strategy::{parse_options, StrategyEntry, TuningStrategy};
use peftspace_core::{Error, Result};

use super::{in_layer_scope, residual_site_name};

/// Where adapters sit in a layer; written as a string in experiment files (`"houlsby"`, `"pfeiffer"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(try_from = "String")]
pub enum Placement {
    /// After every sub-layer: self-attention and FFN, and in decoder layers also cross-attention (Houlsby et al.).
    #[default]
    Houlsby,
    /// After the FFN only (Pfeiffer et al.).
    Pfeiffer,
}

/// The non-linearity between the two projections; written as a string (`"gelu"`, `"relu"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(try_from = "String")]
pub enum Activation {
    /// GELU in its exact (erf) form, as in BERT's FFN.
    #[default]
    Gelu,
    Relu,
}

// Options arrive as a `ron::Value`, which hands enums over as plain strings: parse them from strings.
impl TryFrom<String> for Placement {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "houlsby" => Ok(Placement::Houlsby),
            "pfeiffer" => Ok(Placement::Pfeiffer),
            _ => Err(format!("unknown placement `{s}`; known: houlsby, pfeiffer")),
        }
    }
}

impl TryFrom<String> for Activation {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            _ => Err(format!("unknown activation `{s}`; known: gelu, relu")),
        }
    }
}

/// Options of `adapter`, e.g. `(name: "adapter", options: (placement: "pfeiffer", activation: "relu"))`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterOptions {
    /// Where adapters sit. Default: `houlsby`.
    pub placement: Placement,
    /// Non-linearity of the bottleneck. Default: `gelu`.
    pub activation: Activation,
    /// Standard deviation of the normal initialisation of the up-projection weight; its bias starts at zero, so the
    /// adapter starts close to the identity. `0.0` starts exactly at the identity (but then the down-projection gets
    /// no gradient in the first step). Default: `0.01`.
    pub up_init_std: f64,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            placement: Placement::Houlsby,
            activation: Activation::Gelu,
            up_init_std: 0.01,
        }
    }
}

/// The adapter strategy.
#[derive(Debug, Clone, Default)]
pub struct Adapter {
    pub options: AdapterOptions,
}

impl Adapter {
    pub fn new(options: AdapterOptions) -> Result<Self> {
        if !(options.up_init_std.is_finite() && options.up_init_std >= 0.0) {
            return Err(Error::msg(format!(
                "options of strategy `adapter`: up_init_std must be a finite number ≥ 0, got {}",
                options.up_init_std
            )));
        }
        Ok(Adapter { options })
    }

    /// The residual sites of `layer` that get an adapter under the chosen placement.
    pub fn sites(&self, layer: &LayerShape) -> Vec<ResidualSite> {
        layer
            .residual
            .iter()
            .copied()
            .filter(|s| match self.options.placement {
                Placement::Houlsby => true,
                Placement::Pfeiffer => *s == ResidualSite::Ffn,
            })
            .collect()
    }
}

impl TuningStrategy for Adapter {
    fn name(&self) -> &str {
        "adapter"
    }

    fn canonical_options(&self) -> Option<String> {
        let o = &self.options;
        let placement = match o.placement {
            Placement::Houlsby => "houlsby",
            Placement::Pfeiffer => "pfeiffer",
        };
        let activation = match o.activation {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        };
        Some(format!(
            "(placement: {placement:?}, activation: {activation:?}, up_init_std: {:?})",
            o.up_init_std
        ))
    }

    fn params(&self, layer: &LayerShape, size: usize) -> usize {
        let h = layer.hidden;
        self.sites(layer).len() * (2 * h * size + size + h)
    }

    fn build(
        &self,
        layer: &LayerShape,
        size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>> {
        let h = layer.hidden;
        let std = self.options.up_init_std;
        let sites = self.sites(layer);
        let adapters = in_layer_scope(store, layer, "adapter", |store| {
            sites
                .iter()
                .map(|&site| {
                    store.scoped(residual_site_name(site), |s| {
                        let down_w = s.linear_weight("down.weight", size, h)?;
                        let down_b = s.zeros("down.bias", &[size])?;
                        let up_w = if std > 0.0 {
                            s.normal("up.weight", &[h, size], std)?
                        } else {
                            s.zeros("up.weight", &[h, size])?
                        };
                        let up_b = s.zeros("up.bias", &[h])?;
                        Ok((
                            site,
                            Bottleneck {
                                down_w,
                                down_b,
                                up_w,
                                up_b,
                            },
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Box::new(AdapterLayer {
            activation: self.options.activation,
            adapters,
        }))
    }
}

fn create(options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
    Ok(Box::new(Adapter::new(parse_options("adapter", options)?)?))
}

peftspace_core::inventory::submit! {
    StrategyEntry {
        name: "adapter",
        code: "A",
        summary: "bottleneck adapters (down → activation → up, residual) after sub-layers; size = bottleneck width",
        create,
    }
}

struct Bottleneck {
    down_w: Var,
    down_b: Var,
    up_w: Var,
    up_b: Var,
}

/// The adapters of one layer.
pub struct AdapterLayer {
    activation: Activation,
    adapters: Vec<(ResidualSite, Bottleneck)>,
}

impl LayerModule for AdapterLayer {
    fn residual(&self, site: ResidualSite, h: Tensor) -> Result<Tensor> {
        let Some(b) = super::find_site_residual(&self.adapters, site) else {
            return Ok(h);
        };
        let down = h
            .broadcast_matmul(&b.down_w.t()?)?
            .broadcast_add(&b.down_b)?;
        let act = match self.activation {
            Activation::Gelu => down.gelu_erf()?,
            Activation::Relu => down.relu()?,
        };
        let up = act.broadcast_matmul(&b.up_w.t()?)?.broadcast_add(&b.up_b)?;
        Ok((h + up)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::test_support::*;

    fn with(placement: &str) -> Adapter {
        let v: ron::Value = ron::from_str(&format!("(placement: \"{placement}\")")).unwrap();
        Adapter::new(parse_options("adapter", &v).unwrap()).unwrap()
    }

    #[test]
    fn counts_are_exact_and_match_created_vars() {
        for placement in ["houlsby", "pfeiffer"] {
            let a = with(placement);
            for layer in count_shapes() {
                for size in [1, 8, 64] {
                    let mut store = store();
                    a.build(&layer, size, &mut store).unwrap();
                    assert_eq!(
                        a.params(&layer, size),
                        store.num_scalars(),
                        "{placement} {layer:?} {size}"
                    );
                }
            }
        }
        // BERT-base, width 64, Houlsby: two adapters of 2·768·64 + 64 + 768 = 99,136 each.
        assert_eq!(with("houlsby").params(&bert_base_layer(0), 64), 198_272);
        assert_eq!(with("pfeiffer").params(&bert_base_layer(0), 64), 99_136);
        // A decoder layer gets a third Houlsby adapter after cross-attention.
        let dec = t5_decoder_layer(6, 512, 8, 64, 2048);
        assert_eq!(
            with("houlsby").params(&dec, 16),
            3 * (2 * 512 * 16 + 16 + 512)
        );
        assert_eq!(with("pfeiffer").params(&dec, 16), 2 * 512 * 16 + 16 + 512);
    }

    #[test]
    fn names_follow_the_layer_scope() {
        let mut store = store();
        Adapter::default()
            .build(&bert_base_layer(3), 4, &mut store)
            .unwrap();
        let names: Vec<&str> = store.named_vars().iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"layer.3.adapter.attn.down.weight"),
            "{names:?}"
        );
        assert!(names.contains(&"layer.3.adapter.ffn.up.bias"), "{names:?}");
    }

    #[test]
    fn zero_init_is_the_identity_and_default_init_is_close() {
        let layer = bert_layer(0, 16, 4, 40);
        let h = input(&[2, 5, 16], 0.3);
        let exact = Adapter::new(AdapterOptions {
            up_init_std: 0.0,
            ..Default::default()
        })
        .unwrap();
        let m = exact.build(&layer, 6, &mut store()).unwrap();
        for site in [ResidualSite::Attention, ResidualSite::Ffn] {
            assert_eq!(max_abs_diff(&m.residual(site, h.clone()).unwrap(), &h), 0.0);
        }
        let m = Adapter::default().build(&layer, 6, &mut store()).unwrap();
        let d = max_abs_diff(&m.residual(ResidualSite::Ffn, h.clone()).unwrap(), &h);
        assert!(
            d > 0.0 && d < 0.2,
            "default init should be near identity, got {d}"
        );
        // Pfeiffer leaves the attention output alone.
        let m = with("pfeiffer").build(&layer, 6, &mut store()).unwrap();
        assert_eq!(
            max_abs_diff(&m.residual(ResidualSite::Attention, h.clone()).unwrap(), &h),
            0.0
        );
    }

    #[test]
    fn gradients_reach_every_var() {
        for activation in ["gelu", "relu"] {
            for layer in small_shapes() {
                let v: ron::Value =
                    ron::from_str(&format!("(activation: \"{activation}\")")).unwrap();
                let a = Adapter::new(parse_options("adapter", &v).unwrap()).unwrap();
                let mut store = store();
                let m = a.build(&layer, 5, &mut store).unwrap();
                let mut h = input(&[2, 3, layer.hidden], 0.1);
                for &site in &layer.residual {
                    h = m.residual(site, h).unwrap();
                }
                let loss = h.sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                for (name, var) in store.named_vars() {
                    assert!(
                        grad_mass(&grads, var) > 0.0,
                        "{activation}: no gradient for {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_field_name() {
        let v: ron::Value = ron::from_str("(placment: \"houlsby\")").unwrap();
        let e = parse_options::<AdapterOptions>("adapter", &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("placment"), "{e}");
        let v: ron::Value = ron::from_str("(placement: \"middle\")").unwrap();
        let e = parse_options::<AdapterOptions>("adapter", &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("middle") && e.contains("pfeiffer"), "{e}");
        assert!(Adapter::new(AdapterOptions {
            up_init_std: -1.0,
            ..Default::default()
        })
        .is_err());
    }
}
