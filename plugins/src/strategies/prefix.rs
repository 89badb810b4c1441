//! Prefix tuning (Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"): trainable
//! key/value rows prepended inside attention.
//!
//! Size = prefix length `n`. Per attention block that gets a prefix (self-attention; cross-attention in decoder layers
//! when `cross` is on) there are `2·n·inner` parameters, `inner = heads × head_dim`.
//!
//! With `reparameterize`, the rows are produced by Li & Liang's MLP from a smaller embedding, per attention block:
//! `E [n, mlp_hidden] → Linear(mlp_hidden → mlp_hidden) → tanh → Linear(mlp_hidden → 2·inner)`; the count is then
//! `n·h + (h·h + h) + (h·2·inner + 2·inner)` with `h = mlp_hidden`. The MLP only eases optimisation: after training
//! it is dropped and only the rows it produces are kept ([`PrefixLayer::materialize`]).

use candle_core::{Tensor, Var};
use serde::Deserialize;

use peftspace_core::hooks::{expand_rows, LayerModule, Prefix as PrefixRows};
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{AttentionKind, AttentionShape, LayerShape};
use peftspace_core::strategy::{parse_options, StrategyEntry, TuningStrategy};
use peftspace_core::{Error, Result};

use super::in_layer_scope;

/// Options of `prefix`, e.g. `(name: "prefix", options: (reparameterize: true, mlp_hidden: 256))`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixOptions {
    /// Also prepend rows to cross-attention in decoder layers. Default: `true`.
    pub cross: bool,
    /// Produce the rows with Li & Liang's MLP (its parameters count in the budget). Default: `false`.
    pub reparameterize: bool,
    /// Width of the reparameterisation MLP and of its input embedding; used only with `reparameterize`.
    /// Default: `512` (Li & Liang's setting).
    pub mlp_hidden: usize,
    /// Standard deviation of the normal initialisation of the rows (or, with `reparameterize`, of the embedding).
    /// Default: `0.02`.
    pub init_std: f64,
}

impl Default for PrefixOptions {
    fn default() -> Self {
        PrefixOptions {
            cross: true,
            reparameterize: false,
            mlp_hidden: 512,
            init_std: 0.02,
        }
    }
}

/// The prefix-tuning strategy.
#[derive(Debug, Clone, Default)]
pub struct PrefixTuning {
    pub options: PrefixOptions,
}

impl PrefixTuning {
    pub fn new(options: PrefixOptions) -> Result<Self> {
        if options.reparameterize && options.mlp_hidden == 0 {
            return Err(Error::msg(
                "options of strategy `prefix`: mlp_hidden must be ≥ 1 with reparameterize",
            ));
        }
        if !(options.init_std.is_finite() && options.init_std > 0.0) {
            return Err(Error::msg(format!(
                "options of strategy `prefix`: init_std must be a finite number > 0, got {}",
                options.init_std
            )));
        }
        Ok(PrefixTuning { options })
    }

    /// The attention blocks of `layer` that get a prefix.
    pub fn blocks<'a>(&self, layer: &'a LayerShape) -> Vec<&'a AttentionShape> {
        layer
            .attention
            .iter()
            .filter(|a| a.kind == AttentionKind::SelfAttention || self.options.cross)
            .collect()
    }

    fn block_params(&self, inner: usize, size: usize) -> usize {
        if self.options.reparameterize {
            let h = self.options.mlp_hidden;
            size * h + (h * h + h) + (h * 2 * inner + 2 * inner)
        } else {
            2 * size * inner
        }
    }
}

fn kind_name(kind: AttentionKind) -> &'static str {
    match kind {
        AttentionKind::SelfAttention => "self",
        AttentionKind::CrossAttention => "cross",
    }
}

impl TuningStrategy for PrefixTuning {
    fn name(&self) -> &str {
        "prefix"
    }

    fn canonical_options(&self) -> Option<String> {
        let o = &self.options;
        Some(format!(
            "(cross: {}, reparameterize: {}, mlp_hidden: {}, init_std: {:?})",
            o.cross, o.reparameterize, o.mlp_hidden, o.init_std
        ))
    }

    fn params(&self, layer: &LayerShape, size: usize) -> usize {
        self.blocks(layer)
            .iter()
            .map(|a| self.block_params(a.inner_dim(), size))
            .sum()
    }

    fn build(
        &self,
        layer: &LayerShape,
        size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>> {
        Ok(Box::new(self.build_layer(layer, size, store)?))
    }
}

impl PrefixTuning {
    /// [`TuningStrategy::build`] with the concrete type, for callers that want [`PrefixLayer::materialize`].
    pub fn build_layer(
        &self,
        layer: &LayerShape,
        size: usize,
        store: &mut ParamStore,
    ) -> Result<PrefixLayer> {
        if size == 0 {
            return Err(Error::msg(format!(
                "strategy `prefix` in layer {}: prefix length must be ≥ 1",
                layer.index
            )));
        }
        let o = &self.options;
        let blocks: Vec<AttentionShape> = self.blocks(layer).into_iter().copied().collect();
        let rows = in_layer_scope(store, layer, "prefix", |store| {
            blocks
                .iter()
                .map(|a| {
                    let inner = a.inner_dim();
                    store.scoped(kind_name(a.kind), |s| {
                        let rows = if o.reparameterize {
                            let h = o.mlp_hidden;
                            Rows::Mlp {
                                embedding: s.normal("embedding", &[size, h], o.init_std)?,
                                w1: s.linear_weight("mlp.0.weight", h, h)?,
                                b1: s.zeros("mlp.0.bias", &[h])?,
                                w2: s.linear_weight("mlp.2.weight", 2 * inner, h)?,
                                b2: s.zeros("mlp.2.bias", &[2 * inner])?,
                                inner,
                            }
                        } else {
                            Rows::Direct {
                                key: s.normal("key", &[size, inner], o.init_std)?,
                                value: s.normal("value", &[size, inner], o.init_std)?,
                            }
                        };
                        Ok((a.kind, rows))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(PrefixLayer { rows })
    }
}

fn create(options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
    Ok(Box::new(PrefixTuning::new(parse_options(
        "prefix", options,
    )?)?))
}

peftspace_core::inventory::submit! {
    StrategyEntry {
        name: "prefix",
        code: "P",
        summary: "trainable key/value rows prepended in attention (optional MLP reparameterisation); size = prefix length",
        create,
    }
}

enum Rows {
    Direct {
        key: Var,
        value: Var,
    },
    Mlp {
        embedding: Var,
        w1: Var,
        b1: Var,
        w2: Var,
        b2: Var,
        inner: usize,
    },
}

impl Rows {
    /// The `[n, inner]` key and value rows.
    fn key_value(&self) -> Result<(Tensor, Tensor)> {
        match self {
            Rows::Direct { key, value } => Ok((key.as_tensor().clone(), value.as_tensor().clone())),
            Rows::Mlp {
                embedding,
                w1,
                b1,
                w2,
                b2,
                inner,
            } => {
                let hid = embedding.matmul(&w1.t()?)?.broadcast_add(b1)?.tanh()?;
                let kv = hid.matmul(&w2.t()?)?.broadcast_add(b2)?;
                Ok((kv.narrow(1, 0, *inner)?, kv.narrow(1, *inner, *inner)?))
            }
        }
    }
}

/// The prefixes of one layer.
pub struct PrefixLayer {
    rows: Vec<(AttentionKind, Rows)>,
}

impl PrefixLayer {
    /// The key and value rows (`[n, inner]` each, detached) of the given attention block: what is kept after
    /// training. With `reparameterize` this runs the MLP once; the MLP itself can then be dropped.
    pub fn materialize(&self, kind: AttentionKind) -> Result<Option<(Tensor, Tensor)>> {
        match self.rows.iter().find(|(k, _)| *k == kind) {
            Some((_, r)) => {
                let (k, v) = r.key_value()?;
                Ok(Some((k.detach(), v.detach())))
            }
            None => Ok(None),
        }
    }
}

impl LayerModule for PrefixLayer {
    fn prefix(&self, kind: AttentionKind, batch: usize) -> Result<Option<PrefixRows>> {
        match self.rows.iter().find(|(k, _)| *k == kind) {
            Some((_, r)) => {
                let (key, value) = r.key_value()?;
                Ok(Some(PrefixRows {
                    key: expand_rows(&key, batch)?,
                    value: expand_rows(&value, batch)?,
                }))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::test_support::*;
    use candle_core::D;

    fn with(o: &str) -> PrefixTuning {
        let v: ron::Value = ron::from_str(o).unwrap();
        PrefixTuning::new(parse_options("prefix", &v).unwrap()).unwrap()
    }

    #[test]
    fn counts_are_exact_and_match_created_vars() {
        for o in [
            "()",
            "(cross: false)",
            "(reparameterize: true, mlp_hidden: 16)",
        ] {
            let p = if o == "()" {
                PrefixTuning::default()
            } else {
                with(o)
            };
            for layer in count_shapes() {
                for size in [1, 5, 20] {
                    let mut store = store();
                    p.build(&layer, size, &mut store).unwrap();
                    assert_eq!(
                        p.params(&layer, size),
                        store.num_scalars(),
                        "{o} {layer:?} {size}"
                    );
                }
            }
        }
        // BERT-base, 10 rows: 2·10·768.
        assert_eq!(
            PrefixTuning::default().params(&bert_base_layer(0), 10),
            15_360
        );
        // Decoder (inner 8·64 = 512): self + cross, or self only.
        let dec = t5_decoder_layer(6, 512, 8, 64, 2048);
        assert_eq!(PrefixTuning::default().params(&dec, 10), 2 * 2 * 10 * 512);
        assert_eq!(with("(cross: false)").params(&dec, 10), 2 * 10 * 512);
        // Reparameterised, BERT-base, 10 rows, MLP 512: 10·512 + (512·512 + 512) + (512·1536 + 1536).
        assert_eq!(
            with("(reparameterize: true)").params(&bert_base_layer(0), 10),
            5_120 + 262_656 + 787_968
        );
    }

    #[test]
    fn rows_are_expanded_to_the_batch() {
        for o in ["(cross: true)", "(reparameterize: true, mlp_hidden: 8)"] {
            let layer = t5_decoder_layer(1, 12, 2, 10, 24);
            let p = with(o);
            let m = p.build(&layer, 4, &mut store()).unwrap();
            let rows = m.prefix(AttentionKind::CrossAttention, 3).unwrap().unwrap();
            assert_eq!(rows.key.dims(), &[3, 4, 20]);
            assert_eq!(rows.value.dims(), &[3, 4, 20]);
            assert_eq!(
                max_abs_diff(&rows.key.get(0).unwrap(), &rows.key.get(2).unwrap()),
                0.0
            );
            assert!(max_abs_diff(&rows.key, &rows.value) > 0.0);
        }
        let m = with("(cross: false)")
            .build(&t5_decoder_layer(1, 12, 2, 10, 24), 4, &mut store())
            .unwrap();
        assert!(m
            .prefix(AttentionKind::CrossAttention, 3)
            .unwrap()
            .is_none());
        assert!(m.prefix(AttentionKind::SelfAttention, 3).unwrap().is_some());
    }

    #[test]
    fn materialized_rows_equal_what_the_hook_returns() {
        let layer = t5_decoder_layer(1, 12, 2, 10, 24);
        let p = with("(reparameterize: true, mlp_hidden: 8)");
        let built = p.build_layer(&layer, 3, &mut store()).unwrap();
        for kind in [AttentionKind::SelfAttention, AttentionKind::CrossAttention] {
            let hooked = built.prefix(kind, 2).unwrap().unwrap();
            let (k, v) = built.materialize(kind).unwrap().unwrap();
            assert_eq!(k.dims(), &[3, 20]);
            assert_eq!(max_abs_diff(&k, &hooked.key.get(1).unwrap()), 0.0);
            assert_eq!(max_abs_diff(&v, &hooked.value.get(1).unwrap()), 0.0);
        }
    }

    /// Single-head attention of `q` over `[prefix; kv]`, enough to carry gradients to the rows.
    fn attend(q: &Tensor, k: &Tensor, v: &Tensor, prefix: &PrefixRows) -> Tensor {
        let k = Tensor::cat(&[&prefix.key, k], 1).unwrap();
        let v = Tensor::cat(&[&prefix.value, v], 1).unwrap();
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let e = scores.exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(&v).unwrap()
    }

    #[test]
    fn gradients_reach_every_var() {
        for o in ["(cross: true)", "(reparameterize: true, mlp_hidden: 8)"] {
            for layer in small_shapes() {
                let p = with(o);
                let mut store = store();
                let m = p.build(&layer, 3, &mut store).unwrap();
                let mut loss =
                    Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
                for a in &layer.attention {
                    let inner = a.inner_dim();
                    let rows = m.prefix(a.kind, 2).unwrap().unwrap();
                    let q = input(&[2, 4, inner], 0.1);
                    let k = input(&[2, 4, inner], 0.5);
                    let v = input(&[2, 4, inner], 0.9);
                    let out = attend(&q, &k, &v, &rows);
                    loss = (loss + out.sqr().unwrap().sum_all().unwrap()).unwrap();
                }
                let grads = loss.backward().unwrap();
                for (name, var) in store.named_vars() {
                    assert!(grad_mass(&grads, var) > 0.0, "{o}: no gradient for {name}");
                }
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let v: ron::Value = ron::from_str("(length: 3)").unwrap();
        assert!(parse_options::<PrefixOptions>("prefix", &v).is_err());
        let v: ron::Value = ron::from_str("(reparameterize: true, mlp_hidden: 0)").unwrap();
        assert!(PrefixTuning::new(parse_options("prefix", &v).unwrap()).is_err());
        assert!(PrefixTuning::default()
            .build(&bert_layer(0, 16, 4, 40), 0, &mut store())
            .is_err());
    }
}
