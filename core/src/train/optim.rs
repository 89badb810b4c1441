//! AdamW with per-group learning rates, the linear warm-up/decay schedule, and global gradient-norm clipping.
//!
//! Written here rather than taken from `candle_nn::AdamW`, which has one learning rate for all its variables:
//! strategies and the task head each get their own (Loshchilov & Hutter, "Decoupled Weight Decay Regularization").

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::Result;

/// Variables sharing a peak learning rate and weight decay.
pub struct ParamGroup {
    /// What the group is (`lora`, `head`), for messages.
    pub name: String,
    pub vars: Vec<Var>,
    /// Peak learning rate (the schedule scales it).
    pub learning_rate: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

struct Moments {
    first: Tensor,
    second: Tensor,
}

/// AdamW (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, bias-corrected), PyTorch's defaults.
pub struct AdamW {
    groups: Vec<ParamGroup>,
    moments: Vec<Vec<Option<Moments>>>,
    steps: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>) -> Self {
        let moments = groups
            .iter()
            .map(|g| g.vars.iter().map(|_| None).collect())
            .collect();
        AdamW {
            groups,
            moments,
            steps: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// One update. `lr_scale` multiplies every group's peak rate (the schedule); `grad_scale` multiplies every
    /// gradient (clipping). Variables without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self, grads: &GradStore, lr_scale: f64, grad_scale: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        for (group, moments) in self.groups.iter().zip(self.moments.iter_mut()) {
            let lr = group.learning_rate * lr_scale;
            for (var, slot) in group.vars.iter().zip(moments.iter_mut()) {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let grad = if grad_scale != 1.0 {
                    (grad * grad_scale)?
                } else {
                    grad.clone()
                };
                let (first, second) = match slot.take() {
                    Some(m) => (
                        ((m.first * self.beta1)? + (&grad * (1.0 - self.beta1))?)?,
                        ((m.second * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?,
                    ),
                    None => (
                        (&grad * (1.0 - self.beta1))?,
                        (grad.sqr()? * (1.0 - self.beta2))?,
                    ),
                };
                let update =
                    ((&first / correction1)? / ((&second / correction2)?.sqrt()? + self.eps)?)?;
                let decayed = if group.weight_decay != 0.0 {
                    (var.as_tensor() * (1.0 - lr * group.weight_decay))?
                } else {
                    var.as_tensor().clone()
                };
                var.set(&(decayed - (update * lr)?)?)?;
                *slot = Some(Moments { first, second });
            }
        }
        Ok(())
    }
}

/// Linear warm-up over `warmup_steps` to the peak, then linear decay to 0 at `total_steps`.
#[derive(Debug, Clone, Copy)]
pub struct LinearSchedule {
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    /// `warmup` is the fraction of all steps spent warming up (rounded up).
    pub fn new(total_steps: usize, warmup: f64) -> Self {
        let warmup_steps = ((total_steps as f64) * warmup.clamp(0.0, 1.0)).ceil() as usize;
        LinearSchedule {
            warmup_steps,
            total_steps,
        }
    }

    /// Multiplier of the peak rate for the 0-based `step`. The first step already moves (1/warmup of the peak),
    /// so no step is spent at rate 0.
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return (step + 1) as f64 / self.warmup_steps as f64;
        }
        let remaining = self.total_steps.saturating_sub(step) as f64;
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        (remaining / span).clamp(0.0, 1.0)
    }
}

/// The L2 norm of all gradients of `vars` together (missing gradients count as zero).
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(total.sqrt())
}

/// The factor that brings the gradient norm down to `max_norm` (1 when it is already below, or clipping is off).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule::new(100, 0.1);
        assert_eq!(s.warmup_steps, 10);
        assert!((s.factor(0) - 0.1).abs() < 1e-12);
        assert!((s.factor(9) - 1.0).abs() < 1e-12);
        assert!((s.factor(10) - 1.0).abs() < 1e-12);
        assert!((s.factor(55) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(100), 0.0);
    }

    #[test]
    fn adamw_first_step_moves_by_learning_rate_and_decays() -> Result<()> {
        // With bias correction the first Adam update is lr·sign(g) (up to ε); decay shrinks the weight first.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &dev)?)?;
        let loss = (w.as_tensor() * 3.0)?.sum_all()?;
        let grads = loss.backward()?;
        let mut opt = AdamW::new(vec![ParamGroup {
            name: "w".into(),
            vars: vec![w.clone()],
            learning_rate: 0.1,
            weight_decay: 0.5,
        }]);
        opt.step(&grads, 1.0, 1.0)?;
        let got = w.as_tensor().to_vec1::<f32>()?;
        let want = [1.0 * (1.0 - 0.05) - 0.1, -2.0 * (1.0 - 0.05) - 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn clipping_scales_norm_to_the_limit() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[0.0f32, 0.0], &dev)?)?;
        let target = Tensor::new(&[3.0f32, 4.0], &dev)?;
        let loss = (w.as_tensor() * &target)?.sum_all()?;
        let grads = loss.backward()?;
        let norm = global_grad_norm(&grads, &[w])?;
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((clip_factor(norm, 1.0) * norm - 1.0).abs() < 1e-5);
        assert_eq!(clip_factor(norm, 0.0), 1.0);
        assert_eq!(clip_factor(norm, 10.0), 1.0);
        Ok(())
    }
}
