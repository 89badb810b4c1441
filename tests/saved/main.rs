//! Saved designs and exchange with Hugging Face transformers and PEFT (parity with generated references).
//!
//! One test binary of the root crate (`cargo test --test saved`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../refine_support/mod.rs"]
mod refine_support;

mod final_saved;
mod generate_parity;
mod peft_parity;
mod saved_designs;
