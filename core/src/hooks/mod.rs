//! Hook sites: the one interface between backbones and PEFT strategies.
//!
//! A backbone calls [`LayerHooks`] at fixed places in every layer and never learns which method answers. Every method
//! has a no-op default, so [`NoHooks`] is the plain pretrained model.

use candle_core::{Tensor, D};

mod population;
pub use population::PopulationHooks;

use crate::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind};
use crate::Result;

/// Trainable key/value rows prepended inside attention; both `[batch, prefix_len, heads × head_dim]`.
#[derive(Debug, Clone)]
pub struct Prefix {
    pub key: Tensor,
    pub value: Tensor,
}

impl Prefix {
    /// Number of prepended positions.
    pub fn len(&self) -> Result<usize> {
        Ok(self.key.dim(1)?)
    }

    /// Whether no position is prepended.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Joins prefixes of several strategies along the position axis.
    pub fn concat(parts: Vec<Prefix>) -> Result<Option<Prefix>> {
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.into_iter().next()),
            _ => {
                let keys: Vec<&Tensor> = parts.iter().map(|p| &p.key).collect();
                let values: Vec<&Tensor> = parts.iter().map(|p| &p.value).collect();
                Ok(Some(Prefix {
                    key: Tensor::cat(&keys, 1)?,
                    value: Tensor::cat(&values, 1)?,
                }))
            }
        }
    }
}

/// What a backbone calls at its hook sites. `layer` is the global layer index.
pub trait LayerHooks: Send + Sync {
    /// After a projection: `x` is its input, `y` its output; returns the (possibly modified) output.
    fn linear(&self, _layer: usize, _site: SiteKind, _x: &Tensor, y: Tensor) -> Result<Tensor> {
        Ok(y)
    }

    /// Inside attention: key/value rows to prepend for a batch of `batch` rows, or none.
    fn prefix(&self, _layer: usize, _kind: AttentionKind, _batch: usize) -> Result<Option<Prefix>> {
        Ok(None)
    }

    /// After a sub-layer (attention or FFN), before the residual addition.
    fn residual(&self, _layer: usize, _site: ResidualSite, h: Tensor) -> Result<Tensor> {
        Ok(h)
    }

    /// After a normalisation (a trainable bias added here equals a trainable norm bias).
    fn norm(&self, _layer: usize, _site: NormSite, h: Tensor) -> Result<Tensor> {
        Ok(h)
    }
}

/// The plain pretrained model: every hook does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl LayerHooks for NoHooks {}

/// What one strategy built for one layer; the same sites as [`LayerHooks`], without the layer index.
pub trait LayerModule: Send + Sync {
    fn linear(&self, _site: SiteKind, _x: &Tensor, y: Tensor) -> Result<Tensor> {
        Ok(y)
    }

    fn prefix(&self, _kind: AttentionKind, _batch: usize) -> Result<Option<Prefix>> {
        Ok(None)
    }

    fn residual(&self, _site: ResidualSite, h: Tensor) -> Result<Tensor> {
        Ok(h)
    }

    fn norm(&self, _site: NormSite, h: Tensor) -> Result<Tensor> {
        Ok(h)
    }
}

/// The hooks of a whole design: for every global layer, the modules of the strategies it uses, applied in order.
#[derive(Default)]
pub struct DesignHooks {
    layers: Vec<Vec<Box<dyn LayerModule>>>,
}

impl DesignHooks {
    /// Hooks for `num_layers` layers, none populated yet.
    pub fn new(num_layers: usize) -> Self {
        DesignHooks {
            layers: (0..num_layers).map(|_| Vec::new()).collect(),
        }
    }

    /// Adds a module to a layer; modules of a layer run in the order they were added.
    pub fn push(&mut self, layer: usize, module: Box<dyn LayerModule>) -> Result<()> {
        let n = self.layers.len();
        self.layers
            .get_mut(layer)
            .ok_or_else(|| {
                crate::Error::msg(format!("layer {layer} out of range (model has {n} layers)"))
            })?
            .push(module);
        Ok(())
    }

    fn modules(&self, layer: usize) -> &[Box<dyn LayerModule>] {
        self.layers.get(layer).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl LayerHooks for DesignHooks {
    fn linear(&self, layer: usize, site: SiteKind, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
        for m in self.modules(layer) {
            y = m.linear(site, x, y)?;
        }
        Ok(y)
    }

    fn prefix(&self, layer: usize, kind: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
        let mut parts = Vec::new();
        for m in self.modules(layer) {
            if let Some(p) = m.prefix(kind, batch)? {
                parts.push(p);
            }
        }
        Prefix::concat(parts)
    }

    fn residual(&self, layer: usize, site: ResidualSite, mut h: Tensor) -> Result<Tensor> {
        for m in self.modules(layer) {
            h = m.residual(site, h)?;
        }
        Ok(h)
    }

    fn norm(&self, layer: usize, site: NormSite, mut h: Tensor) -> Result<Tensor> {
        for m in self.modules(layer) {
            h = m.norm(site, h)?;
        }
        Ok(h)
    }
}

/// Broadcasts a `[len, width]` parameter to `[batch, len, width]` (used by prefix-style strategies).
pub fn expand_rows(rows: &Tensor, batch: usize) -> Result<Tensor> {
    let (len, width) = rows.dims2()?;
    Ok(rows
        .unsqueeze(0)?
        .broadcast_as((batch, len, width))?
        .contiguous()?)
}

/// Adds a `[width]` bias to the last axis of `h` (used by bias-style strategies).
pub fn add_bias(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    debug_assert_eq!(h.dim(D::Minus1).ok(), bias.dim(0).ok());
    Ok(crate::autograd::bias_add(h, bias)?)
}
