//! Real data (MiniLM and GLUE/SICK from `../shared`): ignored by default, run with `-- --ignored`.
//!
//! One test binary of the root crate (`cargo test --test real`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../refine_support/mod.rs"]
mod refine_support;

mod refine_real_data;
mod saved_real;
mod train_real;
