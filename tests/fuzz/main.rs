//! Seeded random mutations of every kind of input must end in an error, never a panic.
//!
//! One test binary of the root crate (`cargo test --test fuzz`); each module is one former file of tests.

mod fuzz_inputs;
