//! What a dynamic plugin and the host share: the C header a plugin exports, the ABI string both must agree on, the
//! [`Registrar`] through which a plugin adds registry entries and receives the host's tensor operations
//! ([`crate::tensor_ops`]).
//!
//! A plugin is a `cdylib` built against this very crate. It carries its own copy of `peftspace-core`, `candle` and
//! `std`; Rust trait objects and `Tensor`s then cross the boundary, which is sound only when both sides were built by
//! the same compiler from the same crate versions with the same features — hence the exact ABI string.
//!
//! One more consequence of the separate copy: candle numbers every tensor from a counter that is private to each copy,
//! and gradients are collected by those numbers. A tensor created by the plugin's copy of candle would share numbers
//! with the host's tensors and silently corrupt gradients. So a plugin creates trainable variables only through the
//! [`ParamStore`](crate::params::ParamStore) (whose variables are always made by the host) and does every tensor
//! operation on the training path through [`crate::tensor_ops::ops()`], which calls the host's copy. Code written that
//! way runs unchanged when compiled into the host (then `ops()` is simply the local candle).

use std::ffi::c_char;

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
    host_ops: &'static crate::tensor_ops::HostOps,
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
            host_ops: crate::tensor_ops::local(),
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

    /// Makes [`crate::tensor_ops::ops()`] in this (the plugin's) copy of the crate call the host's operations. Called by
    /// [`declare_plugin!`](crate::declare_plugin) before the plugin's register function.
    pub fn install_host_ops(&self) {
        // A second plugin call (never happens: each library registers once) keeps the first, identical table.
        crate::tensor_ops::install(self.host_ops);
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
