//! `Backbone`: a frozen pretrained transformer that calls hook sites, plus its registry keyed by HF `model_type`.

pub mod lm;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::autograd::with_input_gradient;
use crate::hooks::LayerHooks;
use crate::shapes::{BackboneInfo, SiteKind};
use crate::Result;

/// A tokenised, padded batch on the backbone's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, seq]` u32 token ids.
    pub input_ids: Tensor,
    /// `[batch, seq]` u32, 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
    /// `[batch, seq]` u32 segment ids (BERT); `None` where the model has none.
    pub token_type_ids: Option<Tensor>,
    /// `[batch, dec_seq]` u32 decoder ids for encoder-decoders; `None` = derive them (input shifted right).
    pub decoder_input_ids: Option<Tensor>,
}

/// Hidden states of one forward pass.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, seq, hidden]`: the encoder's last hidden state.
    pub encoder_hidden: Tensor,
    /// `[batch, dec_seq, hidden]`: the decoder's last hidden state (encoder-decoders only).
    pub decoder_hidden: Option<Tensor>,
}

/// Seeded dropout masks, so that a seed fixes training on CPU.
///
/// A population (K designs trained on K stacked copies of one batch, see [`crate::hooks::PopulationHooks`]) sets
/// [`Dropout::set_copies`]: every call then draws one mask for one copy and repeats it K times. The members share the
/// training seed and the backbone's sequence of dropout calls, so each member gets exactly the masks it would draw
/// trained alone.
pub struct Dropout {
    rng: Mutex<StdRng>,
    copies: AtomicUsize,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            copies: AtomicUsize::new(1),
        }
    }

    /// The number of stacked copies of one batch the next calls see along the leading axis (1: a plain batch).
    pub fn set_copies(&self, copies: usize) {
        self.copies.store(copies.max(1), Ordering::Relaxed);
    }

    /// Inverted dropout with drop probability `p` (identity when `p == 0`).
    pub fn apply(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        let Some(mask) = self.scaled_keep_mask(x.dims(), p)? else {
            return Ok(x.clone());
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        let y = (x.detach() * &mask)?;
        // The mask is a constant: only x needs a gradient.
        Ok(with_input_gradient("dropout", x, y, move |_, _, grad| {
            grad * &mask
        })?)
    }

    /// The next mask [`Dropout::apply`] would draw for a tensor of shape `dims`, row-major: `1 / (1 - p)` where an
    /// element is kept, 0 where it is dropped; `None` when `p == 0` (nothing is drawn). For a fused kernel that
    /// applies dropout inside (attention's probabilities): it consumes the stream exactly as `apply` would.
    // `is_multiple_of` is newer than the workspace's rust-version (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    pub fn scaled_keep_mask(&self, dims: &[usize], p: f64) -> Result<Option<Vec<f32>>> {
        if p <= 0.0 {
            return Ok(None);
        }
        let keep = 1.0 - p;
        let scale = (1.0 / keep) as f32;
        // An element is kept when its 32 random bits fall below keep · 2³².
        let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let copies = self.copies.load(Ordering::Relaxed);
        let count: usize = dims.iter().product();
        if count % copies != 0 || dims.first().is_none_or(|&n| n % copies != 0) {
            return Err(crate::Error::msg(format!(
                "dropout on shape {dims:?} cannot split into {copies} stacked copies"
            )));
        }
        let mut bits = vec![0u32; count / copies];
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill(&mut bits[..]);
        // The leading axis is the slowest one, so the mask of one copy repeated end to end is its tiling.
        Ok(Some(
            bits.iter()
                .map(|&b| if b < threshold { scale } else { 0.0 })
                .collect::<Vec<f32>>()
                .repeat(copies),
        ))
    }
}

/// Training (dropout on, seeded) or evaluation (dropout off).
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    Eval,
    Train { dropout: &'a Dropout },
}

impl Mode<'_> {
    /// Applies dropout in training mode; identity in evaluation.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self {
            Mode::Eval => Ok(x.clone()),
            Mode::Train { dropout } => dropout.apply(x, p),
        }
    }

    /// The dropout mask [`Mode::dropout`] would apply to a tensor of shape `dims` ([`Dropout::scaled_keep_mask`]);
    /// `None` in evaluation or when `p == 0`.
    pub fn dropout_mask(&self, dims: &[usize], p: f64) -> Result<Option<Vec<f32>>> {
        match self {
            Mode::Eval => Ok(None),
            Mode::Train { dropout } => dropout.scaled_keep_mask(dims, p),
        }
    }
}

/// A pretrained model with hook sites. Loaded frozen (the usual case) its weights are plain tensors, never `Var`s, and
/// one instance serves every trial; loaded with [`Weights::Trainable`] (full fine-tuning) its weights are `Var`s that
/// one trial's optimiser updates in place.
pub trait Backbone: Send + Sync {
    /// Layers, shapes and parameter count.
    fn info(&self) -> &BackboneInfo;

    fn device(&self) -> &Device;

    /// Last hidden states of the encoder (and decoder).
    fn encode(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Encoded>;

    /// `[batch, features]`: what a task head reads (pooled CLS, or the decoder state at the last EOS).
    fn features(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor>;

    /// Width of [`Backbone::features`].
    fn feature_dim(&self) -> usize {
        self.info().hidden
    }

    /// The weights as variables when the model was loaded with [`Weights::Trainable`], each shared tensor once;
    /// empty for a frozen model.
    fn trainable_weights(&self) -> Vec<Var> {
        Vec::new()
    }

    /// The longest input (in tokens, special tokens included) the model can encode, when it has a hard limit
    /// (learned absolute positions); `None` for relative positions. The trainer truncates inputs to it.
    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// The model's language-model head and incremental decoding, for sequence-to-sequence tasks and generation;
    /// `None` for a backbone without one (encoder-only models).
    fn language_model(&self) -> Option<&dyn lm::LanguageModel> {
        None
    }
}

/// How a backbone's weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Plain tensors: no gradient is computed for them, one loaded model serves every trial.
    Frozen,
    /// `Var`s (full fine-tuning): every weight trains, so each trial needs its own freshly loaded model.
    Trainable,
}

/// A registry entry for an architecture; `model_types` are the HF `config.json` values it accepts.
#[derive(Clone, Copy)]
pub struct ArchitectureEntry {
    pub name: &'static str,
    pub model_types: &'static [&'static str],
    pub summary: &'static str,
    /// Layers and parameter count from the text of `config.json` alone (no weights needed).
    pub describe: fn(config_json: &str) -> Result<BackboneInfo>,
    /// Loads the model from a Hugging Face folder (`config.json`, `model.safetensors`).
    pub load: fn(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>>,
    /// Loads the model with every weight a `Var` ([`Weights::Trainable`], full fine-tuning); `None` when the
    /// architecture only supports frozen weights.
    pub load_trainable: Option<fn(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>>>,
    /// Where the projections sit in transformers' module tree, to exchange adapters with Hugging Face PEFT; `None`
    /// when the architecture does not say.
    pub hf_modules: Option<HfModules>,
}

/// The Hugging Face module names of an architecture's projections (the names transformers gives the modules, which
/// PEFT adapters are keyed by).
#[derive(Clone, Copy)]
pub struct HfModules {
    /// The base model's attribute in transformers' `…ForSequenceClassification` for a `model_type` (`bert`,
    /// `roberta`; `model` for BART, `transformer` for T5).
    pub base_prefix: fn(model_type: &str) -> &'static str,
    /// The module path, relative to the base model, of projection `site` in global layer `layer`
    /// (`encoder.layer.3.attention.self.query`); `None` when that layer has no such projection.
    pub linear: fn(info: &BackboneInfo, layer: usize, site: SiteKind) -> Option<String>,
}

impl ArchitectureEntry {
    /// Loads the model from a Hugging Face folder with frozen or trainable weights.
    pub fn load_weights(
        &self,
        dir: &Path,
        device: &Device,
        weights: Weights,
    ) -> Result<Box<dyn Backbone>> {
        match (weights, self.load_trainable) {
            (Weights::Frozen, _) => (self.load)(dir, device),
            (Weights::Trainable, Some(load)) => load(dir, device),
            (Weights::Trainable, None) => Err(crate::Error::msg(format!(
                "architecture `{}` cannot load trainable weights, so full fine-tuning is not available for it; use \
                 a PEFT design or baseline",
                self.name
            ))),
        }
    }
}

inventory::collect!(ArchitectureEntry);
