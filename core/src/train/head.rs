//! Task heads on [`crate::backbone::Backbone::features`]: a linear layer to class logits or one regression value.

use candle_core::{DType, Tensor, Var, D};

use crate::backbone::Mode;
use crate::data::TaskKind;
use crate::params::ParamStore;
use crate::Result;

/// `dropout → linear` from the backbone's features to the task's outputs (BERT's classifier on the pooled output).
pub struct TaskHead {
    weight: Var,
    bias: Var,
    regression: bool,
    /// A regression head's target scale: the linear layer fits standardised targets and its outputs are mapped back
    /// to the task's units. `None` leaves outputs as they are (classification, or a design saved before targets
    /// were standardised).
    scale: Option<TargetScale>,
}

/// Mean and standard deviation of a regression task's training targets. The head learns `(target − mean) / sd`, so
/// the loss and the initial outputs are on the same scale for every task (scores 1–5 or 0–100 alike): with raw
/// targets a short run spends its steps on the offset and the scale, and a loss of order 10–1000 swamps the
/// gradient of the signal. Outputs are `mean + sd · linear(x)`, in the task's units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetScale {
    pub mean: f64,
    /// Population standard deviation (ddof = 0, as scikit-learn's `StandardScaler`); 1 when the targets are constant.
    pub sd: f64,
}

impl TargetScale {
    /// The scale of `targets`; `None` when there are none or they are not finite.
    pub fn of(targets: &[f32]) -> Option<TargetScale> {
        if targets.is_empty() {
            return None;
        }
        let n = targets.len() as f64;
        let mean = targets.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
        let var = targets
            .iter()
            .map(|&t| (f64::from(t) - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = var.sqrt();
        if !(mean.is_finite() && sd.is_finite()) {
            return None;
        }
        Some(TargetScale {
            mean,
            sd: if sd > 0.0 { sd } else { 1.0 },
        })
    }
}

impl TaskHead {
    /// Creates the head's variables under `head.` in `store`: weight N(0, 0.02²) as in BERT's initialiser, bias 0.
    pub fn new(store: &mut ParamStore, features: usize, kind: &TaskKind) -> Result<Self> {
        let outputs = kind.outputs();
        let (weight, bias) = store.scoped("head", |s| {
            Ok((
                s.normal("weight", &[outputs, features], 0.02)?,
                s.zeros("bias", &[outputs])?,
            ))
        })?;
        Ok(TaskHead {
            weight,
            bias,
            regression: matches!(kind, TaskKind::Regression),
            scale: None,
        })
    }

    /// Sets a regression head's target scale (no-op for classification): training passes
    /// [`TargetScale::of`] its training targets, a saved design the scale it was trained with.
    pub fn set_scale(&mut self, scale: Option<TargetScale>) {
        if self.regression {
            self.scale = scale;
        }
    }

    /// The regression head's target scale, if any.
    pub fn scale(&self) -> Option<TargetScale> {
        self.scale
    }

    /// The head's variables.
    pub fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }

    /// Number of trainable scalars in the head.
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    /// `[batch, outputs]` logits (or values) from `[batch, features]`.
    pub fn forward(&self, features: &Tensor, mode: Mode<'_>, dropout: f64) -> Result<Tensor> {
        let x = mode.dropout(&features.to_dtype(DType::F32)?, dropout)?;
        self.project(&x)
    }

    /// The linear layer alone, on `[batch, features]` f32 features after dropout (a population draws the dropout of
    /// all its heads at once).
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let linear = x
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?;
        match self.scale {
            Some(TargetScale { mean, sd }) => Ok(linear.affine(sd, mean)?),
            None => Ok(linear),
        }
    }

    /// Mean cross-entropy (classification) or mean squared error (regression) against `labels`.
    pub fn loss(&self, outputs: &Tensor, labels: &[f32]) -> Result<Tensor> {
        let device = outputs.device();
        if self.regression {
            let target = Tensor::from_slice(labels, (labels.len(),), device)?;
            let diff = (outputs.squeeze(1)? - target)?;
            // Outputs are in the task's units; dividing by sd makes this the squared error of the standardised
            // targets, whose gradient the linear layer sees.
            let sd = self.scale.map_or(1.0, |s| s.sd);
            return Ok(diff.affine(1.0 / sd, 0.0)?.sqr()?.mean_all()?);
        }
        // log-softmax from elementary ops (all with gradients): x − max − log Σ exp(x − max).
        let max = outputs.max_keepdim(D::Minus1)?.detach();
        let shifted = outputs.broadcast_sub(&max)?;
        let log_norm = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let log_probs = shifted.broadcast_sub(&log_norm)?;
        let classes: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let index = Tensor::from_vec(classes, (labels.len(), 1), device)?;
        let picked = log_probs.gather(&index, 1)?;
        Ok(picked.mean_all()?.neg()?)
    }

    /// Predicted class indices (argmax) or values, one per row.
    pub fn predictions(&self, outputs: &Tensor) -> Result<Vec<f64>> {
        if self.regression {
            return Ok(outputs.squeeze(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        let classes = outputs
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        Ok(classes.into_iter().map(f64::from).collect())
    }
}
