//! A plugin whose header has the right magic bytes but a layout version from another peftspace: the loader must
//! refuse it before reading any other field.

use peftspace_core::plugin_abi::{PluginHeader, Registrar, HEADER_VERSION, MAGIC};

unsafe extern "C" fn register(_registrar: *mut Registrar) -> i32 {
    // Never called: the version check comes first.
    1
}

#[no_mangle]
pub static PEFTSPACE_PLUGIN: PluginHeader = PluginHeader {
    magic: MAGIC,
    header_version: HEADER_VERSION + 1,
    abi: c"written by a newer header layout".as_ptr(),
    register,
};
