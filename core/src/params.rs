//! Trainable parameters: every PEFT weight and task head is a named `Var` in one [`ParamStore`].
//!
//! Initial values come from the store's own seeded RNG (not candle's), so a seed fixes initialisation on any device.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::{Error, Result};

/// Tensors by variable name: the values of a design's and head's variables (saved designs, imported adapters).
pub type Tensors = std::collections::BTreeMap<String, Tensor>;

/// Named trainable variables, in creation order, plus the RNG that initialises them.
pub struct ParamStore {
    device: Device,
    rng: StdRng,
    prefix: Vec<String>,
    vars: Vec<(String, Var)>,
}

impl ParamStore {
    /// An empty store whose initialisation is fixed by `seed`.
    pub fn new(device: &Device, seed: u64) -> Self {
        ParamStore {
            device: device.clone(),
            rng: StdRng::seed_from_u64(seed),
            prefix: Vec::new(),
            vars: Vec::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `f` with `segment` appended to the name prefix (`encoder.layer.3` → `….lora_A`).
    pub fn scoped<T>(
        &mut self,
        segment: impl Into<String>,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.prefix.push(segment.into());
        let out = f(self);
        self.prefix.pop();
        out
    }

    fn full_name(&self, name: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    /// Registers an existing tensor as a trainable variable.
    pub fn from_tensor(&mut self, name: &str, init: &Tensor) -> Result<Var> {
        let full = self.full_name(name);
        if self.vars.iter().any(|(n, _)| *n == full) {
            return Err(Error::msg(format!(
                "trainable parameter `{full}` created twice"
            )));
        }
        // Made by the host's copy of candle even when called from a dynamic plugin (see `plugin_abi`).
        let var = crate::tensor_ops::ops()
            .var_from_tensor(&init.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        self.vars.push((full, var.clone()));
        Ok(var)
    }

    /// A variable filled with zeros.
    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        let t = Tensor::zeros(shape, DType::F32, &self.device)?;
        self.from_tensor(name, &t)
    }

    /// A variable filled with a constant.
    pub fn constant(&mut self, name: &str, shape: &[usize], value: f32) -> Result<Var> {
        let t = (Tensor::ones(shape, DType::F32, &self.device)? * value as f64)?;
        self.from_tensor(name, &t)
    }

    /// A variable drawn from N(0, std²).
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> Result<Var> {
        let n: usize = shape.iter().product();
        let dist = Normal::new(0.0f64, std)
            .map_err(|e| Error::msg(format!("normal init of {name}: {e}")))?;
        let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut self.rng) as f32).collect();
        let t = Tensor::from_vec(data, shape, &self.device)?;
        self.from_tensor(name, &t)
    }

    /// A variable drawn from U(-bound, bound).
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64) -> Result<Var> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-bound..=bound) as f32)
            .collect();
        let t = Tensor::from_vec(data, shape, &self.device)?;
        self.from_tensor(name, &t)
    }

    /// PyTorch's default `nn.Linear` weight init (Kaiming-uniform with a = √5): U(±1/√fan_in).
    pub fn linear_weight(&mut self, name: &str, d_out: usize, d_in: usize) -> Result<Var> {
        self.uniform(name, &[d_out, d_in], 1.0 / (d_in as f64).sqrt())
    }

    /// All variables with their full names, in creation order.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// All variables, in creation order (what the optimiser gets).
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Number of trainable scalars.
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Sets variables to given values, by name: every name in `values` must be a variable of this store with the same
    /// shape (a saved design or an imported adapter that does not fit the design is refused, naming the tensor).
    /// Variables `values` does not name keep their initial values.
    pub fn assign(&self, values: &Tensors) -> Result<()> {
        for (name, value) in values {
            let var = self
                .vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    Error::msg(format!(
                        "tensor `{name}` has no place in this design (its variables are named like `{}`)",
                        self.vars.first().map_or("head.weight", |(n, _)| n.as_str())
                    ))
                })?;
            if var.dims() != value.dims() {
                return Err(Error::msg(format!(
                    "tensor `{name}` has shape {:?} but the design's variable has shape {:?}",
                    value.dims(),
                    var.dims()
                )));
            }
            var.set(&value.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// A copy of every variable's current value, by name (what a saved design stores).
    pub fn snapshot(&self) -> Result<Tensors> {
        self.vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect()
    }

    /// Number of trainable scalars whose name starts with `prefix`.
    pub fn num_scalars_under(&self, prefix: &str) -> usize {
        self.vars
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, v)| v.elem_count())
            .sum()
    }
}
