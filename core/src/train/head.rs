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
        })
    }

    /// A regression head starts at the mean of the training targets (its bias; the weight stays small), so the first
    /// steps fit the signal, not the offset: from 0, targets around 3 (STS-B) or 50 give losses dominated by their
    /// mean, which a short run spends on moving the bias. No-op for classification and for no targets.
    pub fn start_at_mean(&self, targets: &[f32]) -> Result<()> {
        if !self.regression || targets.is_empty() {
            return Ok(());
        }
        let mean = targets.iter().map(|&t| f64::from(t)).sum::<f64>() / targets.len() as f64;
        if !mean.is_finite() {
            return Ok(());
        }
        let value = Tensor::new(&[mean as f32], self.bias.as_tensor().device())?;
        self.bias.set(&value)?;
        Ok(())
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
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// Mean cross-entropy (classification) or mean squared error (regression) against `labels`.
    pub fn loss(&self, outputs: &Tensor, labels: &[f32]) -> Result<Tensor> {
        let device = outputs.device();
        if self.regression {
            let target = Tensor::from_slice(labels, (labels.len(),), device)?;
            let diff = (outputs.squeeze(1)? - target)?;
            return Ok(diff.sqr()?.mean_all()?);
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
