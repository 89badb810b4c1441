//! Runs of experiments: stages, races, final runs, results folders, resumption, executors (processes, Slurm).
//!
//! One test binary of the root crate (`cargo test --test refine`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../refine_support/mod.rs"]
mod refine_support;

mod refine_cli;
mod refine_final;
mod refine_narrowing;
mod refine_prune;
mod refine_race;
mod refine_runner;
mod refine_ties;
mod results_dir;
mod run_devices;
mod run_interrupt;
mod run_population;
mod slurm;
