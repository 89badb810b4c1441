//! The command-line interface, run as a user would: every command, its messages and exit codes.
//!
//! One test binary of the root crate (`cargo test --test cli`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../cargo_support/mod.rs"]
mod cargo_support;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../refine_support/mod.rs"]
mod refine_support;

mod cli_encode;
mod cli_encode_seq2seq;
mod cli_first_use;
mod cli_generate;
mod cli_generation;
mod cli_logging;
mod cli_messages;
mod cli_plan;
mod cli_resolve;
mod cli_space;
mod docs_examples;
