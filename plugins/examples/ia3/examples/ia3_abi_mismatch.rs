//! A plugin whose header claims a different ABI (as if built by another rustc): the loader must refuse it.

use peftspace_core::plugin_abi::{PluginHeader, Registrar, HEADER_VERSION, MAGIC};

unsafe extern "C" fn register(_registrar: *mut Registrar) -> i32 {
    // Never called: the ABI check comes first.
    1
}

#[no_mangle]
pub static PEFTSPACE_PLUGIN: PluginHeader = PluginHeader {
    magic: MAGIC,
    header_version: HEADER_VERSION,
    abi: c"peftspace-core 0.0.0; rustc 1.0.0 (another compiler); candle 0.0.0; features none"
        .as_ptr(),
    register,
};
