//! The encoder-decoder backbone T5 and BART share: loading (config, weights, the checkpoint's root prefix, token
//! embeddings), running the encoder then the decoder over it, the read-out at the last EOS, and the language model
//! (the head of [`super::lm_head`], teacher-forced logits and key/value-cached decoding steps). An architecture plugs
//! in its config, where its tensors sit ([`CheckpointLayout`]) and its stack of layers ([`LayerStack`]).

use std::marker::PhantomData;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use peftspace_core::backbone::lm::{DecoderCache, LanguageModel, LayerCache, SpecialTokens};
use peftspace_core::backbone::{Backbone, Batch, Encoded, Mode, Weights};
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::{BackboneInfo, Stack};
use peftspace_core::{Error, Result};

use super::attention::{causal_bias, padding_bias};
use super::lm_head::{HeadSource, LmHead};
use super::{decoder_ids, eos_features, first_present, model_error, read_config, root_prefix};
use crate::checkpoint::Checkpoint;

/// Where an architecture's tensors sit in a checkpoint; every name is relative to the model's root prefix.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointLayout {
    /// The architecture as errors name it (`T5`, `BART`).
    pub display_name: &'static str,
    /// A tensor of the first encoder layer: the root prefix is the first of `root_prefixes` under which it exists.
    pub encoder_probe: &'static str,
    /// Prefixes the model may be saved under: none for the bare model, one (`model.`, `transformer.`) for task
    /// models.
    pub root_prefixes: &'static [&'static str],
    /// The encoder's token embedding, in order of preference; one of them must be present.
    pub encoder_embeddings: &'static [&'static str],
    /// The decoder's token embedding, in order of preference; the encoder's is shared when none is present.
    pub decoder_embeddings: &'static [&'static str],
    /// The language-model head's own weight (at the top level or under the root); the first encoder embedding
    /// found (the shared one) serves when it is absent.
    pub lm_head: &'static str,
    /// A `[1, vocab]` bias added to the logits (BART's `final_logits_bias`), when the architecture has one.
    pub logits_bias: Option<&'static str>,
}

/// The encoder or the decoder of one architecture: embeddings and layers, with their hook sites.
pub trait LayerStack: Sized + Send + Sync {
    type Config;

    /// Loads the stack under `vb` (`encoder` or `decoder`); `first_layer` is the global index of its first layer.
    fn load(
        vb: VarBuilder,
        cfg: &Self::Config,
        embed_tokens: Tensor,
        stack: Stack,
        first_layer: usize,
    ) -> candle_core::Result<Self>;

    /// The stack's last hidden state, `[batch, seq, d_model]` (in a decoding step, of the new positions only).
    fn forward(
        &self,
        input: StackInput<'_>,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor>;
}

/// What a stack needs besides its input.
pub struct StackInput<'a> {
    /// `[batch, len]` token ids.
    pub ids: &'a Tensor,
    /// Position of the first of `ids`: 0 for a whole sequence, the cache position in a decoding step.
    pub offset: usize,
    /// Self-attention bias over the real keys `0 .. offset + len`: padding (encoder) or causal (decoder), without
    /// positions.
    pub mask_bias: Tensor,
    /// Encoder output and the bias that hides its padding (decoder only).
    pub memory: Option<(&'a Tensor, Tensor)>,
    /// In a decoding step, the decoder's key/value cache, one entry per layer; `None` for a whole sequence.
    pub cache: Option<&'a mut [LayerCache]>,
}

impl StackInput<'_> {
    /// Checks that a cache, when there is one, has an entry for each of the stack's `layers`.
    pub fn check_cache(&self, layers: usize) -> Result<()> {
        match &self.cache {
            Some(cache) if cache.len() != layers => Err(Error::msg(format!(
                "a decoder cache of {} layers for a decoder of {layers}",
                cache.len()
            ))),
            _ => Ok(()),
        }
    }
}

/// What distinguishes one encoder-decoder architecture from another for [`EncoderDecoder`].
pub trait Architecture: Send + Sync + 'static {
    /// The parsed `config.json`.
    type Config: Send + Sync;
    /// The architecture's encoder or decoder.
    type Stack: LayerStack<Config = Self::Config>;

    /// Where the architecture's tensors sit in its checkpoints.
    const LAYOUT: CheckpointLayout;

    /// Parses and checks the text of `config.json`.
    fn parse_config(text: &str) -> std::result::Result<Self::Config, String>;
    /// Layers, sites, shapes and the parameter count, from the config alone.
    fn describe(cfg: &Self::Config) -> std::result::Result<BackboneInfo, String>;
    /// `[vocab, d_model]`: the shape of the token embedding.
    fn embedding_shape(cfg: &Self::Config) -> (usize, usize);
    /// Number of encoder layers: the global index of the first decoder layer.
    fn encoder_layers(cfg: &Self::Config) -> usize;
    /// The token the decoder input starts with when the batch gives none.
    fn decoder_start_id(cfg: &Self::Config) -> u32;
    /// The end-of-sequence token whose decoder state [`Backbone::features`] reads.
    fn eos_id(cfg: &Self::Config) -> u32;
    /// The token ids decoding needs.
    fn special_tokens(cfg: &Self::Config) -> SpecialTokens;
    /// Whether the config says the language-model head has weights of its own (`tie_word_embeddings: false`).
    fn lm_head_declared_untied(cfg: &Self::Config) -> bool;
    /// The factor on the decoder output before the language-model head; `None`: 1.
    fn decoder_output_scale(cfg: &Self::Config) -> Option<f64>;
    /// See [`Backbone::max_positions`].
    fn max_positions(cfg: &Self::Config) -> Option<usize>;
}

/// An encoder-decoder with hook sites; frozen, or trainable (every weight a `Var`).
pub struct EncoderDecoder<A: Architecture> {
    cfg: A::Config,
    info: BackboneInfo,
    device: Device,
    encoder: A::Stack,
    decoder: A::Stack,
    head: LmHead,
    trainable: Vec<Var>,
    /// `A` itself holds nothing; it only selects the config and stack types above.
    architecture: PhantomData<A>,
}

impl<A: Architecture> EncoderDecoder<A> {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Weights::Frozen)
    }

    /// [`Self::load`] with frozen or trainable weights.
    pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Self> {
        if device.is_cpu() {
            crate::ops::heap::keep_freed_buffers();
        }
        let cfg = read_config(dir, A::parse_config)?;
        let info = A::describe(&cfg).map_err(|message| Error::Model {
            path: dir.join("config.json"),
            message,
        })?;
        let checkpoint = Checkpoint::open(dir)?;
        let (vb, trainable) = checkpoint.var_builder_for(device, weights);
        let (constants, _) = checkpoint.var_builder_for(device, Weights::Frozen);
        let layout = A::LAYOUT;
        let root =
            root_prefix(&vb, layout.encoder_probe, layout.root_prefixes).ok_or_else(|| {
                model_error(
                    dir,
                    format!(
                        "no {} encoder found (expected `{}`)",
                        layout.display_name, layout.encoder_probe
                    ),
                )
            })?;
        let (vocab, d) = A::embedding_shape(&cfg);
        let under_root = |names: &[&str]| -> Vec<String> {
            names.iter().map(|name| format!("{root}{name}")).collect()
        };
        let encoder_embed = first_present(&vb, &under_root(layout.encoder_embeddings), vocab, d)
            .map_err(|e| model_error(dir, e))?;
        let decoder_embed = first_present(&vb, &under_root(layout.decoder_embeddings), vocab, d)
            .unwrap_or_else(|_| encoder_embed.clone());
        let head = LmHead::load(
            HeadSource {
                weights: &vb,
                constants: &constants,
                root,
                layout: &layout,
                declared_untied: A::lm_head_declared_untied(&cfg),
                input_scale: A::decoder_output_scale(&cfg),
            },
            &encoder_embed,
        )
        .map_err(|e| model_error(dir, e))?;
        let vb = if root.is_empty() {
            vb
        } else {
            vb.pp(root.trim_end_matches('.'))
        };
        let encoder = A::Stack::load(vb.pp("encoder"), &cfg, encoder_embed, Stack::Encoder, 0)
            .map_err(|e| model_error(dir, e))?;
        let decoder = A::Stack::load(
            vb.pp("decoder"),
            &cfg,
            decoder_embed,
            Stack::Decoder,
            A::encoder_layers(&cfg),
        )
        .map_err(|e| model_error(dir, e))?;
        Ok(EncoderDecoder {
            cfg,
            info,
            device: device.clone(),
            encoder,
            decoder,
            head,
            trainable: trainable.vars(),
            architecture: PhantomData,
        })
    }

    pub fn config(&self) -> &A::Config {
        &self.cfg
    }
}

impl<A: Architecture> Backbone for EncoderDecoder<A> {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn encode(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Encoded> {
        let decoder_input = decoder_ids(batch, A::decoder_start_id(&self.cfg))?;
        let (encoder_hidden, padding) =
            self.run_encoder(&batch.input_ids, &batch.attention_mask, hooks, mode)?;
        // transformers' default: the decoder self-attention is causal only (no decoder padding mask).
        let causal = causal_bias(0, decoder_input.dim(1)?, DType::F32, &self.device)?;
        let decoder_hidden = self.decoder.forward(
            StackInput {
                ids: &decoder_input,
                offset: 0,
                mask_bias: causal,
                memory: Some((&encoder_hidden, padding)),
                cache: None,
            },
            hooks,
            mode,
        )?;
        Ok(Encoded {
            encoder_hidden,
            decoder_hidden: Some(decoder_hidden),
        })
    }

    fn features(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        eos_features(
            self.encode(batch, hooks, mode)?,
            batch,
            A::eos_id(&self.cfg),
        )
    }

    fn trainable_weights(&self) -> Vec<Var> {
        self.trainable.clone()
    }

    fn max_positions(&self) -> Option<usize> {
        A::max_positions(&self.cfg)
    }

    fn language_model(&self) -> Option<&dyn LanguageModel> {
        Some(self)
    }
}

impl<A: Architecture> EncoderDecoder<A> {
    /// The encoder's last hidden state over `[batch, source]` inputs, and the bias that hides their padding from
    /// the decoder's cross-attention.
    fn run_encoder(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<(Tensor, Tensor)> {
        if attention_mask.dims2()? != input_ids.dims2()? {
            return Err(Error::msg(format!(
                "attention_mask has shape {:?}, input_ids {:?}",
                attention_mask.dims(),
                input_ids.dims()
            )));
        }
        let padding = padding_bias(attention_mask, DType::F32)?;
        let hidden = self.encoder.forward(
            StackInput {
                ids: input_ids,
                offset: 0,
                mask_bias: padding.clone(),
                memory: None,
                cache: None,
            },
            hooks,
            mode,
        )?;
        Ok((hidden, padding))
    }
}

/// Teacher forcing runs [`Backbone::encode`] and the head; a decoding step runs the same decoder stack over the new
/// tokens with the cache (see [`super::attention`]), so both give the same logits.
impl<A: Architecture> LanguageModel for EncoderDecoder<A> {
    fn special_tokens(&self) -> SpecialTokens {
        A::special_tokens(&self.cfg)
    }

    fn vocab_size(&self) -> usize {
        self.head.vocab_size()
    }

    fn logits(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        let hidden = self
            .encode(batch, hooks, mode)?
            .decoder_hidden
            .ok_or_else(|| Error::msg("an encoder-decoder must return a decoder hidden state"))?;
        Ok(self.head.forward(&hidden)?)
    }

    fn start(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<DecoderCache> {
        let (hidden, _) = self.run_encoder(input_ids, attention_mask, hooks, Mode::Eval)?;
        // Decoding is evaluation: the cache carries values, not the encoder's graph.
        Ok(DecoderCache::new(
            hidden.detach(),
            attention_mask.to_dtype(DType::U32)?,
            self.info.decoder_layers,
        ))
    }

    /// After an error the cache may hold some layers' keys of the failed step: start again.
    fn step(
        &self,
        cache: &mut DecoderCache,
        ids: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<Tensor> {
        let (batch, new) = ids.dims2()?;
        let rows = cache.batch()?;
        if batch != rows || new == 0 {
            return Err(Error::msg(format!(
                "decoding step over ids of shape {:?} for a cache of {rows} rows (expected [{rows}, n ≥ 1])",
                ids.dims()
            )));
        }
        let offset = cache.position;
        let memory_bias = padding_bias(&cache.encoder_mask, DType::F32)?;
        let causal = causal_bias(offset, new, DType::F32, &self.device)?;
        let hidden = self.decoder.forward(
            StackInput {
                ids,
                offset,
                mask_bias: causal,
                memory: Some((&cache.encoder_hidden, memory_bias)),
                cache: Some(&mut cache.layers),
            },
            hooks,
            Mode::Eval,
        )?;
        cache.position += new;
        let last = hidden.narrow(1, new - 1, 1)?.squeeze(1)?;
        Ok(self.head.forward(&last)?)
    }
}

/// [`peftspace_core::backbone::ArchitectureEntry::describe`] for an encoder-decoder architecture.
pub fn describe<A: Architecture>(config_json: &str) -> Result<BackboneInfo> {
    A::parse_config(config_json)
        .and_then(|cfg| A::describe(&cfg))
        .map_err(crate::checkpoint::config_error)
}

/// [`peftspace_core::backbone::ArchitectureEntry::load`] for an encoder-decoder architecture.
pub fn load<A: Architecture>(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(EncoderDecoder::<A>::load(dir, device)?))
}

/// [`peftspace_core::backbone::ArchitectureEntry::load_trainable`] for an encoder-decoder architecture.
pub fn load_trainable<A: Architecture>(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(EncoderDecoder::<A>::load_with(
        dir,
        device,
        Weights::Trainable,
    )?))
}
