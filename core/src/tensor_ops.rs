//! The tensor operations code that may be compiled into a dynamic plugin must use on the training path.
//!
//! A plugin carries its own copy of candle, whose tensor ids come from a counter private to that copy; gradients are
//! collected by those ids, so a tensor made by the plugin's copy would silently corrupt them (see
//! [`crate::plugin_abi`]). [`ops()`] is a table of function pointers into the host's copy: inside a loaded plugin it
//! is the table the host handed over at registration, everywhere else this crate's own candle.

use std::sync::OnceLock;

use candle_core::{Tensor, Var};

static HOST_OPS: OnceLock<&'static HostOps> = OnceLock::new();

/// Makes [`ops()`] call `host`'s table: done once by a plugin's copy of this crate, when it is registered.
pub(crate) fn install(host: &'static HostOps) {
    // A second call (never happens: each library registers once) keeps the first, identical table.
    let _ = HOST_OPS.set(host);
}

/// This copy's own table (what the host hands to a plugin).
pub(crate) fn local() -> &'static HostOps {
    &LOCAL_OPS
}

/// The tensor operations to use on the training path of code that may be compiled into a dynamic plugin: the host's
/// copy when running inside a loaded plugin, this crate's own otherwise. Every function creates its result in the
/// host's copy of candle (see the module documentation for why).
pub fn ops() -> &'static HostOps {
    HOST_OPS.get().copied().unwrap_or(&LOCAL_OPS)
}

type Unary = fn(&Tensor) -> candle_core::Result<Tensor>;
type Binary = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// Function pointers into one copy of candle. Obtain it with [`ops()`]; the methods mirror candle's.
pub struct HostOps {
    var_from_tensor: fn(&Tensor) -> candle_core::Result<Var>,
    add: Binary,
    sub: Binary,
    mul: Binary,
    div: Binary,
    matmul: Binary,
    t: Unary,
    gelu_erf: Unary,
    relu: Unary,
    tanh: Unary,
    exp: Unary,
    sqr: Unary,
    affine: fn(&Tensor, f64, f64) -> candle_core::Result<Tensor>,
    narrow: fn(&Tensor, usize, usize, usize) -> candle_core::Result<Tensor>,
    cat: fn(&[Tensor], usize) -> candle_core::Result<Tensor>,
    reshape: fn(&Tensor, &[usize]) -> candle_core::Result<Tensor>,
    expand_rows: fn(&Tensor, usize) -> candle_core::Result<Tensor>,
    sum_keepdim: fn(&Tensor, usize) -> candle_core::Result<Tensor>,
    from_vec: fn(Vec<f32>, &[usize], &candle_core::Device) -> candle_core::Result<Tensor>,
}

static LOCAL_OPS: HostOps = HostOps {
    var_from_tensor: Var::from_tensor,
    add: |a, b| a.broadcast_add(b),
    sub: |a, b| a.broadcast_sub(b),
    mul: |a, b| a.broadcast_mul(b),
    div: |a, b| a.broadcast_div(b),
    matmul: |a, b| a.broadcast_matmul(b),
    t: |a| a.t(),
    gelu_erf: |a| a.gelu_erf(),
    relu: |a| a.relu(),
    tanh: |a| a.tanh(),
    exp: |a| a.exp(),
    sqr: |a| a.sqr(),
    affine: |a, mul, add| a.affine(mul, add),
    narrow: |a, dim, start, len| a.narrow(dim, start, len),
    cat: |parts, dim| Tensor::cat(parts, dim),
    reshape: |a, shape| a.reshape(shape),
    expand_rows: |rows, batch| {
        let (len, width) = rows.dims2()?;
        rows.unsqueeze(0)?
            .broadcast_as((batch, len, width))?
            .contiguous()
    },
    sum_keepdim: |a, dim| a.sum_keepdim(dim),
    from_vec: |data, shape, device| Tensor::from_vec(data, shape, device),
};

impl HostOps {
    /// A new trainable variable holding a copy of `init` (use [`ParamStore`](crate::params::ParamStore) instead,
    /// which calls this).
    pub fn var_from_tensor(&self, init: &Tensor) -> candle_core::Result<Var> {
        (self.var_from_tensor)(init)
    }
    /// `a + b` with broadcasting.
    pub fn add(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        (self.add)(a, b)
    }
    /// `a - b` with broadcasting.
    pub fn sub(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        (self.sub)(a, b)
    }
    /// `a * b` (element-wise) with broadcasting.
    pub fn mul(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        (self.mul)(a, b)
    }
    /// `a / b` (element-wise) with broadcasting.
    pub fn div(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        (self.div)(a, b)
    }
    /// Matrix product over the last two axes, broadcasting the others.
    pub fn matmul(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        (self.matmul)(a, b)
    }
    /// Swaps the last two axes.
    pub fn t(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.t)(a)
    }
    pub fn gelu_erf(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.gelu_erf)(a)
    }
    pub fn relu(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.relu)(a)
    }
    pub fn tanh(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.tanh)(a)
    }
    pub fn exp(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.exp)(a)
    }
    pub fn sqr(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        (self.sqr)(a)
    }
    /// `a * mul + add`.
    pub fn affine(&self, a: &Tensor, mul: f64, add: f64) -> candle_core::Result<Tensor> {
        (self.affine)(a, mul, add)
    }
    pub fn narrow(
        &self,
        a: &Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> candle_core::Result<Tensor> {
        (self.narrow)(a, dim, start, len)
    }
    pub fn cat(&self, parts: &[Tensor], dim: usize) -> candle_core::Result<Tensor> {
        (self.cat)(parts, dim)
    }
    pub fn reshape(&self, a: &Tensor, shape: &[usize]) -> candle_core::Result<Tensor> {
        (self.reshape)(a, shape)
    }
    /// Broadcasts `[len, width]` rows to `[batch, len, width]` (prefix-style strategies).
    pub fn expand_rows(&self, rows: &Tensor, batch: usize) -> candle_core::Result<Tensor> {
        (self.expand_rows)(rows, batch)
    }
    pub fn sum_keepdim(&self, a: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
        (self.sum_keepdim)(a, dim)
    }
    /// A constant tensor (e.g. a mask) made by the host.
    pub fn from_vec(
        &self,
        data: Vec<f32>,
        shape: &[usize],
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        (self.from_vec)(data, shape, device)
    }
}
