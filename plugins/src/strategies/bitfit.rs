//! BitFit (Ben Zaken et al., 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
//! Language-models"): only the bias terms train.
//!
//! Implemented as a zero-initialised trainable delta added after every projection (`d_out` each) and every
//! normalisation (`width` each) of the layer. Where the frozen module has a bias this equals making that bias
//! trainable, starting from a copy of the pretrained value; where it has none (T5) it adds a new bias starting at
//! zero. (One difference from training the bias itself: weight decay, if any, pulls the delta towards zero, i.e. the
//! bias towards its pretrained value.) Fixed size: `Σ d_out + Σ norm widths`.

use candle_core::{Tensor, Var};
use serde::Deserialize;

use peftspace_core::hooks::{add_bias, LayerModule};
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{LayerShape, NormSite, SiteKind};
use peftspace_core::strategy::{parse_options, StrategyEntry, TuningStrategy};
use peftspace_core::Result;

use super::{find_site, in_layer_scope};

/// BitFit takes no options (`(name: "bitfit")`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitFitOptions {}

/// The BitFit strategy.
#[derive(Debug, Clone, Default)]
pub struct BitFit;

fn norm_name(site: NormSite) -> &'static str {
    match site {
        NormSite::Attention => "attn_norm",
        NormSite::CrossAttention => "cross_attn_norm",
        NormSite::Ffn => "ffn_norm",
    }
}

impl TuningStrategy for BitFit {
    fn name(&self) -> &str {
        "bitfit"
    }

    fn canonical_options(&self) -> Option<String> {
        Some("()".into())
    }

    fn fixed_size(&self) -> bool {
        true
    }

    fn params(&self, layer: &LayerShape, _size: usize) -> usize {
        layer.linear.iter().map(|s| s.d_out).sum::<usize>()
            + layer.norms.iter().map(|n| n.width).sum::<usize>()
    }

    fn build(
        &self,
        layer: &LayerShape,
        _size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>> {
        in_layer_scope(store, layer, "bitfit", |store| {
            let linear = layer
                .linear
                .iter()
                .map(|s| {
                    Ok((
                        s.kind,
                        store.zeros(&format!("{}.bias", s.kind.short_name()), &[s.d_out])?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let norms = layer
                .norms
                .iter()
                .map(|n| {
                    Ok((
                        n.site,
                        store.zeros(&format!("{}.bias", norm_name(n.site)), &[n.width])?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(BitFitLayer { linear, norms }) as Box<dyn LayerModule>)
        })
    }
}

fn create(options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
    let _: BitFitOptions = parse_options("bitfit", options)?;
    Ok(Box::new(BitFit))
}

peftspace_core::inventory::submit! {
    StrategyEntry {
        name: "bitfit",
        code: "B",
        summary: "trainable biases of every projection and norm (zero-initialised deltas); fixed size",
        create,
    }
}

/// The bias deltas of one layer.
pub struct BitFitLayer {
    linear: Vec<(SiteKind, Var)>,
    norms: Vec<(NormSite, Var)>,
}

impl LayerModule for BitFitLayer {
    fn linear(&self, site: SiteKind, _x: &Tensor, y: Tensor) -> Result<Tensor> {
        match find_site(&self.linear, site) {
            Some(b) => add_bias(&y, b),
            None => Ok(y),
        }
    }

    fn norm(&self, site: NormSite, h: Tensor) -> Result<Tensor> {
        match self.norms.iter().find(|(s, _)| *s == site) {
            Some((_, b)) => add_bias(&h, b),
            None => Ok(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::test_support::*;

    #[test]
    fn counts_are_exact_and_match_created_vars() {
        for layer in count_shapes() {
            let mut store = store();
            BitFit.build(&layer, 0, &mut store).unwrap();
            assert_eq!(BitFit.params(&layer, 0), store.num_scalars());
            assert_eq!(
                BitFit.params(&layer, 99),
                store.num_scalars(),
                "size is ignored"
            );
        }
        // BERT-base layer: q,k,v,o (4·768) + FFN in (3072) + FFN out (768) + two LayerNorms (2·768).
        assert_eq!(
            BitFit.params(&bert_base_layer(0), 0),
            4 * 768 + 3072 + 768 + 2 * 768
        );
        assert_eq!(BitFit.params(&bert_base_layer(0), 0), 8_448);
        assert!(BitFit.fixed_size());
    }

    #[test]
    fn zero_init_leaves_output_unchanged_and_adds_where_there_was_no_bias() {
        for layer in small_shapes() {
            let mut store = store();
            let m = BitFit.build(&layer, 0, &mut store).unwrap();
            for site in &layer.linear {
                let x = input(&[2, 3, site.d_in], 0.3);
                let y = input(&[2, 3, site.d_out], 0.6);
                assert_eq!(
                    max_abs_diff(&m.linear(site.kind, &x, y.clone()).unwrap(), &y),
                    0.0
                );
            }
            for n in &layer.norms {
                let h = input(&[2, 3, n.width], 0.8);
                assert_eq!(max_abs_diff(&m.norm(n.site, h.clone()).unwrap(), &h), 0.0);
            }
        }
    }

    #[test]
    fn gradients_reach_every_var() {
        for layer in small_shapes() {
            let mut store = store();
            let m = BitFit.build(&layer, 0, &mut store).unwrap();
            let mut loss =
                Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            for site in &layer.linear {
                let x = input(&[2, 3, site.d_in], 0.3);
                let y = input(&[2, 3, site.d_out], 0.6);
                loss = (loss
                    + m.linear(site.kind, &x, y)
                        .unwrap()
                        .sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap())
                .unwrap();
            }
            for n in &layer.norms {
                let h = input(&[2, 3, n.width], 0.8);
                loss =
                    (loss + m.norm(n.site, h).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            let grads = loss.backward().unwrap();
            for (name, var) in store.named_vars() {
                assert!(grad_mass(&grads, var) > 0.0, "no gradient for {name}");
            }
        }
    }

    #[test]
    fn options_are_refused() {
        let v: ron::Value = ron::from_str("(size: 3)").unwrap();
        assert!(create(&v).is_err());
        assert!(create(&ron::Value::Unit).is_ok());
    }
}
