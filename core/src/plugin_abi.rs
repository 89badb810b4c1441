//! What a dynamic plugin and the host share: the C header a plugin exports, the ABI string both must agree on, the
//! [`Registrar`] through which a plugin adds registry entries, and the host tensor operations a plugin must use.
//!
//! A plugin is a `cdylib` built against this very crate. It carries its own copy of `peftspace-core`, `candle` and
//! `std`; Rust trait objects and `Tensor`s then cross the boundary, which is sound only when both sides were built by
//! the same compiler from the same crate versions with the same features — hence the exact ABI string.
//!
//! One more consequence of the separate copy: candle numbers every tensor from a counter that is private to each copy,
//! and gradients are collected by those numbers. A tensor created by the plugin's copy of candle would share numbers
//! with the host's tensors and silently corrupt gradients. So a plugin creates trainable variables only through the
//! [`ParamStore`](crate::params::ParamStore) (whose variables are always made by the host) and does every tensor
//! operation on the training path through [`ops()`], which calls the host's copy. Code written that way runs
//! unchanged when compiled into the host (then [`ops()`] is simply the local candle).

use std::ffi::c_char;
use std::sync::OnceLock;

use candle_core::{Tensor, Var};

use crate::allocation::AllocationEntry;
use crate::backbone::ArchitectureEntry;
use crate::evaluator::EvaluatorEntry;
use crate::grouping::GroupingEntry;
use crate::strategy::StrategyEntry;

/// The name of the symbol a plugin exports (a `static` [`PluginHeader`]).
pub const SYMBOL: &str = "PEFTSPACE_PLUGIN";

/// First bytes of every plugin header.
pub const MAGIC: [u8; 8] = *b"PEFTSPCE";

/// Version of the header layout itself (checked before the header's other fields are read).
pub const HEADER_VERSION: u32 = 1;

/// The candle version this crate is built against (pinned exactly in the workspace; a test keeps the two in step).
pub const CANDLE_VERSION: &str = "0.11.1";

/// The ABI string, NUL-terminated: crate version, rustc version, target, candle version and enabled features.
pub const ABI_C: &str = concat!(
    "peftspace-core ",
    env!("CARGO_PKG_VERSION"),
    "; ",
    env!("PEFTSPACE_RUSTC_VERSION"),
    "; target ",
    env!("PEFTSPACE_TARGET"),
    "; candle 0.11.1; features ",
    env!("PEFTSPACE_FEATURES"),
    "\0"
);

/// The ABI string without its NUL.
pub fn abi() -> &'static str {
    &ABI_C[..ABI_C.len() - 1]
}

/// The header a plugin exports as `#[no_mangle] static PEFTSPACE_PLUGIN`. Only C types, so the host can check it
/// before trusting anything else in the library. Write it with [`declare_plugin!`](crate::declare_plugin).
#[repr(C)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`HEADER_VERSION`].
    pub header_version: u32,
    /// NUL-terminated ABI string the plugin was built with ([`ABI_C`] of its copy of this crate).
    pub abi: *const c_char,
    /// Adds the plugin's entries; returns 0 on success. Called once, after every check passed.
    pub register: unsafe extern "C" fn(registrar: *mut Registrar) -> i32,
}

// The header is immutable static data.
unsafe impl Sync for PluginHeader {}

/// Entries a plugin registers, collected by the host. Every method calls back into the host's code, so the
/// collections are grown by the host's allocator.
pub struct Registrar {
    pub(crate) strategies: Vec<StrategyEntry>,
    pub(crate) evaluators: Vec<EvaluatorEntry>,
    pub(crate) groupings: Vec<GroupingEntry>,
    pub(crate) allocations: Vec<AllocationEntry>,
    pub(crate) architectures: Vec<ArchitectureEntry>,
    pub(crate) error: Option<String>,
    callbacks: &'static RegistrarCallbacks,
    host_ops: &'static HostOps,
}

struct RegistrarCallbacks {
    strategy: fn(&mut Registrar, StrategyEntry),
    evaluator: fn(&mut Registrar, EvaluatorEntry),
    grouping: fn(&mut Registrar, GroupingEntry),
    allocation: fn(&mut Registrar, AllocationEntry),
    architecture: fn(&mut Registrar, ArchitectureEntry),
    error: fn(&mut Registrar, String),
}

static CALLBACKS: RegistrarCallbacks = RegistrarCallbacks {
    strategy: |r, e| r.strategies.push(e),
    evaluator: |r, e| r.evaluators.push(e),
    grouping: |r, e| r.groupings.push(e),
    allocation: |r, e| r.allocations.push(e),
    architecture: |r, e| r.architectures.push(e),
    error: |r, e| r.error = Some(e),
};

impl Registrar {
    /// An empty registrar whose callbacks and tensor operations are this copy's (the host's).
    pub(crate) fn new() -> Self {
        Registrar {
            strategies: Vec::new(),
            evaluators: Vec::new(),
            groupings: Vec::new(),
            allocations: Vec::new(),
            architectures: Vec::new(),
            error: None,
            callbacks: &CALLBACKS,
            host_ops: &LOCAL_OPS,
        }
    }

    pub fn add_strategy(&mut self, entry: StrategyEntry) {
        (self.callbacks.strategy)(self, entry)
    }

    pub fn add_evaluator(&mut self, entry: EvaluatorEntry) {
        (self.callbacks.evaluator)(self, entry)
    }

    pub fn add_grouping(&mut self, entry: GroupingEntry) {
        (self.callbacks.grouping)(self, entry)
    }

    pub fn add_allocation(&mut self, entry: AllocationEntry) {
        (self.callbacks.allocation)(self, entry)
    }

    pub fn add_architecture(&mut self, entry: ArchitectureEntry) {
        (self.callbacks.architecture)(self, entry)
    }

    /// Records why registration failed (the host reports it with the plugin's path).
    pub fn fail(&mut self, message: String) {
        (self.callbacks.error)(self, message)
    }

    /// Makes [`ops()`] in this (the plugin's) copy of the crate call the host's operations. Called by
    /// [`declare_plugin!`](crate::declare_plugin) before the plugin's register function.
    pub fn install_host_ops(&self) {
        // A second plugin call (never happens: each library registers once) keeps the first, identical table.
        let _ = HOST_OPS.set(self.host_ops);
    }
}

static HOST_OPS: OnceLock<&'static HostOps> = OnceLock::new();

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

/// Declares a dynamic plugin: exports the checked header and a register function that runs `$register`
/// (`fn(&mut Registrar) -> peftspace_core::Result<()>`) with panics caught, so no panic crosses the C boundary.
///
/// ```text
/// fn register(r: &mut peftspace_core::plugin_abi::Registrar) -> peftspace_core::Result<()> {
///     r.add_strategy(StrategyEntry { name: "ia3", code: "I", summary: "…", create });
///     Ok(())
/// }
/// peftspace_core::declare_plugin!(register);
/// ```
#[macro_export]
macro_rules! declare_plugin {
    ($register:path) => {
        unsafe extern "C" fn __peftspace_plugin_register(
            registrar: *mut $crate::plugin_abi::Registrar,
        ) -> i32 {
            // SAFETY: the host passes a valid, exclusive registrar for the duration of this call.
            let Some(registrar) = (unsafe { registrar.as_mut() }) else {
                return 2;
            };
            registrar.install_host_ops();
            let outcome =
                ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $register(registrar)));
            match outcome {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    registrar.fail(e.to_string());
                    1
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    registrar.fail(format!("register panicked: {what}"));
                    1
                }
            }
        }

        #[no_mangle]
        pub static PEFTSPACE_PLUGIN: $crate::plugin_abi::PluginHeader =
            $crate::plugin_abi::PluginHeader {
                magic: $crate::plugin_abi::MAGIC,
                header_version: $crate::plugin_abi::HEADER_VERSION,
                abi: $crate::plugin_abi::ABI_C.as_ptr() as *const ::std::ffi::c_char,
                register: __peftspace_plugin_register,
            };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_names_every_part() {
        let abi = abi();
        assert!(
            abi.starts_with(concat!("peftspace-core ", env!("CARGO_PKG_VERSION"))),
            "{abi}"
        );
        assert!(abi.contains("rustc "), "{abi}");
        assert!(abi.contains("candle 0.11.1"), "{abi}");
        assert!(abi.contains("features "), "{abi}");
        assert!(!abi.contains('\0'));
        assert!(ABI_C.ends_with('\0'));
    }

    #[test]
    fn candle_version_matches_the_workspace_pin() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let text = std::fs::read_to_string(manifest).unwrap();
        let pin = format!("candle-core = \"={CANDLE_VERSION}\"");
        assert!(
            text.contains(&pin),
            "workspace Cargo.toml must pin `{pin}` (update CANDLE_VERSION and the ABI string)"
        );
        assert!(ABI_C.contains(&format!("candle {CANDLE_VERSION};")));
    }
}
