//! Stand-ins used by unit tests: BERT-like layer shapes and strategies with simple, known parameter counts.
//!
//! They let the budget solver and sampler be tested without the real strategies and backbones. Not part of the
//! public API.

use std::collections::BTreeMap;

use crate::allocation::{AllocationEntry, AllocationRule};
use crate::budget::Strategies;
use crate::grouping::{GroupingEntry, GroupingRule};
use crate::hooks::LayerModule;
use crate::params::ParamStore;
use crate::registry::Registries;
use crate::shapes::{BackboneInfo, LayerShape, SiteKind};
use crate::space::sample_composition;
use crate::strategy::{StrategyEntry, TuningStrategy};
use crate::{Error, Result};
use rand::RngCore;

/// A BERT encoder layer of width `hidden` and FFN width `ffn`.
pub fn bert_layer(index: usize, hidden: usize, ffn: usize, heads: usize) -> LayerShape {
    LayerShape::bert_encoder_layer(index, hidden, heads, ffn)
}

/// A BERT-like backbone: `layers` layers, with `num_params` as given.
pub fn bert_info(
    layers: usize,
    hidden: usize,
    ffn: usize,
    heads: usize,
    num_params: usize,
) -> BackboneInfo {
    BackboneInfo {
        model_type: "bert".to_string(),
        hidden,
        num_params,
        encoder_layers: layers,
        decoder_layers: 0,
        layers: (0..layers)
            .map(|i| bert_layer(i, hidden, ffn, heads))
            .collect(),
    }
}

/// MiniLM-L6-H384 shapes (22,713,216 parameters).
pub fn minilm() -> BackboneInfo {
    bert_info(6, 384, 1536, 12, 22_713_216)
}

/// BERT-base shapes (109,482,240 parameters).
pub fn bert_base() -> BackboneInfo {
    bert_info(12, 768, 3072, 12, 109_482_240)
}

/// How a fake strategy counts.
#[derive(Clone, Copy, Debug)]
pub enum Counting {
    /// LoRA on q and v: `r·(d_in + d_out)` per site.
    LoraQv,
    /// Houlsby adapter after both sub-layers: `2·(2·h·r + r + h)`.
    Adapter,
    /// Key and value prefix rows: `2·r·h`.
    Prefix,
    /// Biases of every projection and norm, fixed.
    Bitfit,
}

/// A strategy whose parameter count follows [`Counting`]; it cannot be built.
pub struct Fake {
    pub name: String,
    pub counting: Counting,
}

impl TuningStrategy for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn fixed_size(&self) -> bool {
        matches!(self.counting, Counting::Bitfit)
    }
    fn params(&self, l: &LayerShape, r: usize) -> usize {
        match self.counting {
            Counting::LoraQv => [SiteKind::Query, SiteKind::Value]
                .iter()
                .filter_map(|k| l.linear_site(*k))
                .map(|s| r * (s.d_in + s.d_out))
                .sum(),
            Counting::Adapter => l.residual.len() * (2 * l.hidden * r + r + l.hidden),
            Counting::Prefix => 2 * r * l.hidden,
            Counting::Bitfit => {
                l.linear.iter().map(|s| s.d_out).sum::<usize>()
                    + l.norms.iter().map(|n| n.width).sum::<usize>()
            }
        }
    }
    fn build(&self, _: &LayerShape, _: usize, _: &mut ParamStore) -> Result<Box<dyn LayerModule>> {
        Err(Error::msg("test double strategies cannot be built"))
    }
}

/// The four fake strategies under the built-in names.
pub fn strategies() -> Strategies {
    let mut m: Strategies = BTreeMap::new();
    for (name, counting) in [
        ("adapter", Counting::Adapter),
        ("prefix", Counting::Prefix),
        ("lora", Counting::LoraQv),
        ("bitfit", Counting::Bitfit),
    ] {
        m.insert(
            name.to_string(),
            Box::new(Fake {
                name: name.to_string(),
                counting,
            }),
        );
    }
    m
}

/// Name ↔ code map of the fake strategies.
pub fn codes() -> crate::design::StrategyCodes {
    crate::design::StrategyCodes::new([
        ("adapter", "A"),
        ("prefix", "P"),
        ("lora", "L"),
        ("bitfit", "B"),
    ])
    .expect("fixed, distinct codes")
}

/// Any composition (what the `s0` plugin rule does), so the core can be tested alone.
struct AnyGrouping;
impl GroupingRule for AnyGrouping {
    fn name(&self) -> &str {
        "s0"
    }
    fn admits(&self, _: &[usize]) -> bool {
        true
    }
    fn sample(&self, layers: usize, groups: usize, rng: &mut dyn RngCore) -> Result<Vec<usize>> {
        sample_composition("s0", &|_| true, layers, groups, rng)
    }
}

/// Only compositions whose first group is the largest (a stand-in for a constraining rule).
struct FirstLargest;
impl GroupingRule for FirstLargest {
    fn name(&self) -> &str {
        "first_largest"
    }
    fn admits(&self, s: &[usize]) -> bool {
        s.iter().all(|&x| x <= s[0])
    }
    fn sample(&self, layers: usize, groups: usize, rng: &mut dyn RngCore) -> Result<Vec<usize>> {
        sample_composition("first_largest", &|s| self.admits(s), layers, groups, rng)
    }
}

/// Equal per-layer budget.
struct EqualPerLayer;
impl AllocationRule for EqualPerLayer {
    fn name(&self) -> &str {
        "s0"
    }
    fn admits(&self, _: &[f64], _: &[usize], _: &[bool]) -> bool {
        true
    }
    fn sample(&self, sizes: &[usize], tuned: &[bool], _: &mut dyn RngCore) -> Result<Vec<f64>> {
        let n: usize = sizes
            .iter()
            .zip(tuned)
            .filter(|(_, &t)| t)
            .map(|(n, _)| n)
            .sum();
        Ok(sizes
            .iter()
            .zip(tuned)
            .map(|(&s, &t)| if t { s as f64 / n as f64 } else { 0.0 })
            .collect())
    }
}

/// Fake strategies (codes A, P, L, B) and the rules above, registered as `test`.
pub fn registries() -> Registries {
    let mut r = Registries::default();
    for (name, code) in [
        ("adapter", "A"),
        ("prefix", "P"),
        ("lora", "L"),
        ("bitfit", "B"),
    ] {
        let create: fn(&ron::Value) -> Result<Box<dyn TuningStrategy>> = match name {
            "adapter" => |_| {
                Ok(Box::new(Fake {
                    name: "adapter".into(),
                    counting: Counting::Adapter,
                }))
            },
            "prefix" => |_| {
                Ok(Box::new(Fake {
                    name: "prefix".into(),
                    counting: Counting::Prefix,
                }))
            },
            "lora" => |o| match o {
                ron::Value::Unit => Ok(Box::new(Fake {
                    name: "lora".into(),
                    counting: Counting::LoraQv,
                })),
                _ => Err(Error::msg("lora takes no options here")),
            },
            _ => |_| {
                Ok(Box::new(Fake {
                    name: "bitfit".into(),
                    counting: Counting::Bitfit,
                }))
            },
        };
        r.add_strategy(
            StrategyEntry {
                name,
                code,
                summary: "",
                create,
            },
            "test",
        )
        .expect("distinct fake strategies");
    }
    r.add_grouping(
        GroupingEntry {
            name: "s0",
            summary: "",
            create: || Box::new(AnyGrouping),
        },
        "test",
    )
    .expect("distinct test rules");
    r.add_grouping(
        GroupingEntry {
            name: "first_largest",
            summary: "",
            create: || Box::new(FirstLargest),
        },
        "test",
    )
    .expect("distinct test rules");
    r.add_allocation(
        AllocationEntry {
            name: "s0",
            summary: "",
            create: || Box::new(EqualPerLayer),
        },
        "test",
    )
    .expect("distinct test rules");
    r
}

/// A trial of `design` on SST-2 with default training, seed 1, scored on the dev set: what the pools' grouping tests
/// need (the backbone and data identities are placeholders).
pub fn sst2_trial(design: &str) -> crate::trial::TrialSpec {
    let task = crate::spec::TaskSpec {
        id: "sst2".into(),
        max_train: None,
        max_eval: None,
        custom: None,
        generation: None,
    };
    crate::trial::TrialSpec::new(
        design,
        &task,
        1,
        &crate::spec::TrainingSpec::default(),
        0.01,
        &[],
        "bb",
        "data",
        crate::trial::Split::Dev,
    )
    .expect("a trial id")
}
