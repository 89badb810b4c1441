//! A toy backbone, tokenizer and task for testing the trainer without a pretrained model.
//!
//! The backbone is a real (small) transformer encoder with random frozen weights that calls every hook site, so the
//! trainer's logic and the strategies' wiring are exercised independently of any checkpoint.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, D};
use peftspace_backbones::ops::{layer_norm, mask_bias, softmax_last_dim};
use peftspace_core::backbone::{Backbone, Batch, Encoded, Mode};
use peftspace_core::data::{Example, TaskData, TaskKind, Tokenize, Tokens};
use peftspace_core::evaluator::{Evaluator, EvaluatorEntry, Metrics};
use peftspace_core::hooks::LayerHooks;
use peftspace_core::registry::{registries, with_registries_mut};
use peftspace_core::shapes::{
    AttentionKind, BackboneInfo, LayerShape, NormSite, ResidualSite, SiteKind,
};
use peftspace_core::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const VOCAB: usize = 64;
pub const PAD: u32 = 0;
pub const CLS: u32 = 1;

struct Frozen {
    weight: Tensor,
    bias: Tensor,
}

impl Frozen {
    fn random(rng: &mut StdRng, d_out: usize, d_in: usize, device: &Device) -> Result<Self> {
        let bound = 1.0 / (d_in as f32).sqrt();
        let w: Vec<f32> = (0..d_out * d_in)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let b: Vec<f32> = (0..d_out)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Ok(Frozen {
            weight: Tensor::from_vec(w, (d_out, d_in), device)?,
            bias: Tensor::from_vec(b, d_out, device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?)
    }
}

struct ToyLayer {
    q: Frozen,
    k: Frozen,
    v: Frozen,
    o: Frozen,
    ffn_in: Frozen,
    ffn_out: Frozen,
    norm_weight: Tensor,
    norm_bias: Tensor,
}

/// A post-norm transformer encoder: token + position embeddings, `layers` layers, features = the first token.
pub struct ToyBackbone {
    info: BackboneInfo,
    device: Device,
    embeddings: Tensor,
    positions: Tensor,
    layers: Vec<ToyLayer>,
    heads: usize,
}

pub const HIDDEN: usize = 16;
pub const HEADS: usize = 2;
pub const MAX_LEN: usize = 32;

fn layer_shape(index: usize) -> LayerShape {
    LayerShape::bert_encoder_layer(index, HIDDEN, HEADS, 2 * HIDDEN)
}

impl ToyBackbone {
    pub fn new(layers: usize, seed: u64) -> Result<Self> {
        let device = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut table =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let embeddings = Tensor::from_vec(table(VOCAB * HIDDEN), (VOCAB, HIDDEN), &device)?;
        let positions =
            (Tensor::from_vec(table(MAX_LEN * HIDDEN), (MAX_LEN, HIDDEN), &device)? * 0.1)?;
        let mut built = Vec::new();
        for _ in 0..layers {
            built.push(ToyLayer {
                q: Frozen::random(&mut rng, HIDDEN, HIDDEN, &device)?,
                k: Frozen::random(&mut rng, HIDDEN, HIDDEN, &device)?,
                v: Frozen::random(&mut rng, HIDDEN, HIDDEN, &device)?,
                o: Frozen::random(&mut rng, HIDDEN, HIDDEN, &device)?,
                ffn_in: Frozen::random(&mut rng, 2 * HIDDEN, HIDDEN, &device)?,
                ffn_out: Frozen::random(&mut rng, HIDDEN, 2 * HIDDEN, &device)?,
                norm_weight: Tensor::ones(HIDDEN, DType::F32, &device)?,
                norm_bias: Tensor::zeros(HIDDEN, DType::F32, &device)?,
            });
        }
        let per_layer =
            4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * (2 * HIDDEN * HIDDEN) + 3 * HIDDEN + 2 * HIDDEN;
        let info = BackboneInfo {
            model_type: "toy".into(),
            hidden: HIDDEN,
            num_params: VOCAB * HIDDEN + MAX_LEN * HIDDEN + layers * per_layer,
            encoder_layers: layers,
            decoder_layers: 0,
            layers: (0..layers).map(layer_shape).collect(),
        };
        Ok(ToyBackbone {
            info,
            device,
            embeddings,
            positions,
            layers: built,
            heads: HEADS,
        })
    }

    fn layer(
        &self,
        index: usize,
        l: &ToyLayer,
        h: Tensor,
        mask: &Tensor,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor> {
        let (b, s, _) = h.dims3()?;
        let d = HIDDEN / self.heads;
        let q = hooks.linear(index, SiteKind::Query, &h, l.q.forward(&h)?)?;
        let mut k = hooks.linear(index, SiteKind::Key, &h, l.k.forward(&h)?)?;
        let mut v = hooks.linear(index, SiteKind::Value, &h, l.v.forward(&h)?)?;
        let mut mask = mask.clone();
        if let Some(prefix) = hooks.prefix(index, AttentionKind::SelfAttention, b)? {
            let p = prefix.len()?;
            k = Tensor::cat(&[&prefix.key, &k], 1)?;
            v = Tensor::cat(&[&prefix.value, &v], 1)?;
            mask = Tensor::cat(
                &[&Tensor::ones((b, p), mask.dtype(), &self.device)?, &mask],
                1,
            )?;
        }
        let keys = k.dim(1)?;
        let split = |t: &Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (qh, kh, vh) = (split(&q, s)?, split(&k, keys)?, split(&v, keys)?);
        let scores = (qh.matmul(&kh.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?;
        let scores = scores.broadcast_add(&mask_bias(&mask, DType::F32)?)?;
        let probs = softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&vh)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, HIDDEN))?;
        let attn = hooks.linear(index, SiteKind::AttnOut, &ctx, l.o.forward(&ctx)?)?;
        let attn = hooks.residual(index, ResidualSite::Attention, mode.dropout(&attn, 0.1)?)?;
        let h = layer_norm(&(h + attn)?, &l.norm_weight, Some(&l.norm_bias), 1e-5)?;
        let h = hooks.norm(index, NormSite::Attention, h)?;
        let up = hooks
            .linear(index, SiteKind::FfnIn, &h, l.ffn_in.forward(&h)?)?
            .gelu_erf()?;
        let down = hooks.linear(index, SiteKind::FfnOut, &up, l.ffn_out.forward(&up)?)?;
        let down = hooks.residual(index, ResidualSite::Ffn, mode.dropout(&down, 0.1)?)?;
        let h = layer_norm(&(h + down)?, &l.norm_weight, Some(&l.norm_bias), 1e-5)?;
        hooks.norm(index, NormSite::Ffn, h)
    }
}

impl Backbone for ToyBackbone {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn encode(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Encoded> {
        let (b, s) = batch.input_ids.dims2()?;
        let tokens = self
            .embeddings
            .index_select(&batch.input_ids.flatten_all()?, 0)?
            .reshape((b, s, HIDDEN))?;
        let mut h = tokens.broadcast_add(&self.positions.narrow(0, 0, s)?)?;
        for (i, l) in self.layers.iter().enumerate() {
            h = self.layer(i, l, h, &batch.attention_mask, hooks, mode)?;
        }
        Ok(Encoded {
            encoder_hidden: h,
            decoder_hidden: None,
        })
    }

    fn features(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        // Mean over real tokens: keeps a single cue word visible, so the toy task is learnable in a few steps.
        let h = self.encode(batch, hooks, mode)?.encoder_hidden;
        let mask = batch.attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = h.broadcast_mul(&mask)?.sum(1)?;
        Ok(summed.broadcast_div(&mask.sum(1)?)?)
    }
}

/// Words are `w<number>`; a word's id is its number (mod the vocabulary), after `[CLS]`.
pub struct ToyTokenizer;

impl Tokenize for ToyTokenizer {
    fn encode(&self, text: &str, pair: Option<&str>, max_len: usize) -> Result<Tokens> {
        let word = |w: &str| {
            2 + w.trim_start_matches('w').parse::<u32>().unwrap_or(0) % (VOCAB as u32 - 2)
        };
        let mut ids = vec![CLS];
        let mut type_ids = vec![0];
        ids.extend(text.split_whitespace().map(word));
        type_ids.resize(ids.len(), 0);
        if let Some(p) = pair {
            ids.extend(p.split_whitespace().map(word));
            type_ids.resize(ids.len(), 1);
        }
        ids.truncate(max_len.min(MAX_LEN));
        type_ids.truncate(ids.len());
        Ok(Tokens { ids, type_ids })
    }

    fn pad_id(&self) -> u32 {
        PAD
    }
}

/// A separable two-class task: class-1 sentences contain the cue word `w2` twice in a row, class-0 sentences `w3`;
/// the rest is noise. Lengths vary so that bucketing and padding matter.
pub fn synthetic_task(train: usize, eval: usize, seed: u64) -> TaskData {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut make = |n: usize| -> Vec<Example> {
        (0..n)
            .map(|i| {
                let label = (i % 2) as u32;
                let len = rng.random_range(3..12);
                let cue_at = rng.random_range(0..len - 1);
                let words: Vec<String> = (0..len)
                    .map(|j| {
                        let id = if j == cue_at || j == cue_at + 1 {
                            if label == 1 {
                                2
                            } else {
                                3
                            }
                        } else {
                            rng.random_range(10..60)
                        };
                        format!("w{id}")
                    })
                    .collect();
                Example {
                    text: words.join(" "),
                    pair: None,
                    label: label as f32,
                    target: None,
                }
            })
            .collect()
    };
    TaskData {
        id: "synthetic".into(),
        kind: TaskKind::Classification {
            labels: vec!["0".into(), "1".into()],
        },
        evaluator: "accuracy".into(),
        train: make(train),
        eval: make(eval),
        sources: Vec::new(),
    }
}

struct TestAccuracy;

impl Evaluator for TestAccuracy {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn score(&self, predictions: &[f64], labels: &[f64]) -> Result<Metrics> {
        let right = predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        let accuracy = right as f64 / labels.len().max(1) as f64;
        let mut m = Metrics {
            primary: accuracy,
            ..Default::default()
        };
        m.values.insert("accuracy".into(), accuracy);
        Ok(m)
    }
}

/// Makes sure an `accuracy` evaluator is registered (the built-in one when the plugins provide it).
pub fn ensure_accuracy_evaluator() {
    let present = registries()
        .map(|r| r.evaluators.contains_key("accuracy"))
        .unwrap_or(false);
    if !present {
        let _ = with_registries_mut(|r| {
            if r.evaluators.contains_key("accuracy") {
                return Ok(());
            }
            r.add_evaluator(
                EvaluatorEntry {
                    name: "accuracy",
                    summary: "test accuracy",
                    create: || Box::new(TestAccuracy),
                },
                "test",
            )
        });
    }
}

/// Mean of the last axis (a small helper for assertions on features).
pub fn mean_last(t: &Tensor) -> Result<Tensor> {
    Ok(t.mean(D::Minus1)?)
}

/// The real assets of the real-data suite: `PEFTSPACE_SHARED`, else the `shared` folder next to the checkout.
pub fn shared() -> std::path::PathBuf {
    std::env::var_os("PEFTSPACE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("shared")
        })
}
