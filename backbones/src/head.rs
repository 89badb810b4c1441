//! Task heads on a backbone's [`Backbone::features`](peftspace_core::backbone::Backbone::features): classification
//! (one logit per label) or regression (one score), trainable, initialised from the seeded [`ParamStore`].
//!
//! Two layouts, as transformers has them: `Linear` on the features (`BertForSequenceClassification`, which reads the
//! pooler output), or `Linear → tanh → Linear` (`RobertaClassificationHead`, which reads the raw first token because
//! RoBERTa checkpoints have no pooler). Dropout comes before each `Linear` in training.

use candle_core::{Tensor, Var};

use peftspace_core::backbone::Mode;
use peftspace_core::params::ParamStore;
use peftspace_core::{Error, Result};

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTask {
    /// `num_labels` logits (at least 2).
    Classification { num_labels: usize },
    /// One real-valued score (STS-B).
    Regression,
}

impl HeadTask {
    /// Width of the head's output.
    pub fn outputs(self) -> usize {
        match self {
            HeadTask::Classification { num_labels } => num_labels,
            HeadTask::Regression => 1,
        }
    }
}

/// Standard deviation of the initial weights (transformers' `initializer_range` default); biases start at zero.
pub const HEAD_INIT_STD: f64 = 0.02;

/// A trainable head. Its variables live in the [`ParamStore`] under `head.` (`head.dense.weight`,
/// `head.out_proj.weight`, …), so the optimiser gets them with the PEFT weights.
pub struct TaskHead {
    hidden: Option<(Var, Var)>,
    out_weight: Var,
    out_bias: Var,
    dropout: f64,
    task: HeadTask,
}

impl TaskHead {
    /// Creates the head's variables for features of width `feature_dim`. With `hidden_layer`, a `dense` layer of
    /// the same width and a tanh come first (RoBERTa-style; use it when the backbone has no pooler).
    pub fn new(store: &mut ParamStore, feature_dim: usize, task: HeadTask, hidden_layer: bool, dropout: f64) -> Result<Self> {
        if let HeadTask::Classification { num_labels } = task {
            if num_labels < 2 {
                return Err(Error::msg(format!(
                    "a classification head needs at least 2 labels, got {num_labels} (use a regression head for one score)"
                )));
            }
        }
        if feature_dim == 0 {
            return Err(Error::msg("a head needs features of width at least 1"));
        }
        store.scoped("head", |store| {
            let hidden = if hidden_layer {
                Some((
                    store.normal("dense.weight", &[feature_dim, feature_dim], HEAD_INIT_STD)?,
                    store.zeros("dense.bias", &[feature_dim])?,
                ))
            } else {
                None
            };
            Ok(TaskHead {
                hidden,
                out_weight: store.normal("out_proj.weight", &[task.outputs(), feature_dim], HEAD_INIT_STD)?,
                out_bias: store.zeros("out_proj.bias", &[task.outputs()])?,
                dropout,
                task,
            })
        })
    }

    pub fn task(&self) -> HeadTask {
        self.task
    }

    /// Number of trainable scalars (reported apart from the PEFT budget).
    pub fn num_params(&self) -> usize {
        let mut n = self.out_weight.elem_count() + self.out_bias.elem_count();
        if let Some((w, b)) = &self.hidden {
            n += w.elem_count() + b.elem_count();
        }
        n
    }

    /// `[batch, outputs]` from `[batch, feature_dim]` features.
    pub fn forward(&self, features: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        let mut x = features.clone();
        if let Some((w, b)) = &self.hidden {
            x = mode.dropout(&x, self.dropout)?;
            x = x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?.tanh()?;
        }
        let x = mode.dropout(&x, self.dropout)?;
        Ok(x.matmul(&self.out_weight.as_tensor().t()?)?.broadcast_add(self.out_bias.as_tensor())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use peftspace_core::backbone::Dropout;

    #[test]
    fn sizes_and_seeded_init() -> Result<()> {
        let dev = Device::Cpu;
        let mut a = ParamStore::new(&dev, 3);
        let head = TaskHead::new(&mut a, 8, HeadTask::Classification { num_labels: 3 }, true, 0.1)?;
        assert_eq!(head.num_params(), 8 * 8 + 8 + 3 * 8 + 3);
        assert_eq!(a.num_scalars(), head.num_params());
        assert!(a.named_vars().iter().all(|(n, _)| n.starts_with("head.")));
        let mut b = ParamStore::new(&dev, 3);
        let again = TaskHead::new(&mut b, 8, HeadTask::Classification { num_labels: 3 }, true, 0.1)?;
        let same = (head.out_weight.as_tensor() - again.out_weight.as_tensor())?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(same, 0.0, "the seed fixes the initial weights");
        let mut c = ParamStore::new(&dev, 3);
        let reg = TaskHead::new(&mut c, 8, HeadTask::Regression, false, 0.1)?;
        assert_eq!(reg.num_params(), 9);
        assert!(TaskHead::new(&mut c, 8, HeadTask::Classification { num_labels: 1 }, false, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn every_head_variable_gets_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 11);
        let head = TaskHead::new(&mut store, 6, HeadTask::Classification { num_labels: 2 }, true, 0.1)?;
        let features = Tensor::randn(0f32, 1., (4, 6), &dev)?;
        let dropout = Dropout::new(5);
        let logits = head.forward(&features, Mode::Train { dropout: &dropout })?;
        assert_eq!(logits.dims(), [4, 2]);
        let target = Tensor::ones((4, 2), DType::F32, &dev)?;
        let grads = (logits - target)?.sqr()?.sum_all()?.backward()?;
        for (name, var) in store.named_vars() {
            let g = grads.get(var).ok_or_else(|| Error::msg(format!("{name} has no gradient")))?;
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name}");
        }
        Ok(())
    }
}
