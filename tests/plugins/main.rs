//! Dynamic plugins, loaded into this process (kept in a binary of their own: loading changes global registries).
//!
//! One test binary of the root crate (`cargo test --test plugins`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../cargo_support/mod.rs"]
mod cargo_support;

mod plugin_loading;
