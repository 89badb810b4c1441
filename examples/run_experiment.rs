//! Runs an experiment from Rust with the library calls `peftspace run` makes (serially, without progress bars):
//! read and check the file, resolve the model and data, build the executor and the design space, run the stages
//! into a result store, and render the reports.
//!
//! `cargo run --release --example run_experiment -- experiments/quickstart.ron [RESULTS_DIR]`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use peftspace_core::device::DeviceChoice;
use peftspace_core::experiment;
use peftspace_core::plugin_loader::{self, load_plugins};
use peftspace_core::refine::{self, ExperimentSpace, NoProgress, SerialPool};
use peftspace_core::registry::registries;
use peftspace_core::report;
use peftspace_core::resolve::{ModelNeeds, Resolver};
use peftspace_core::saved::SavingExecutor;
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::train::executor::TrainingExecutor;

// The built-in strategies, rules, evaluators and architectures register themselves when their crates are linked.
use peftspace_backbones as _;
use peftspace_plugins as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = PathBuf::from(
        args.next()
            .ok_or("usage: run_experiment EXP.ron [RESULTS_DIR]")?,
    );

    // 1. The experiment file: syntax, then names and values against the registries (its plugins loaded first).
    let parsed = experiment::parse(&file)?;
    load_plugins(&parsed.plugin_paths())?;
    let registries = registries()?;
    let experiment = parsed.validate(&registries)?;
    let spec = &experiment.spec;

    // 2. Model and data: environment, experiment file, then the cache or a download.
    let resolver = Resolver::from_env(false);
    let base = experiment.base_dir();
    let model = resolver.model_folder(None, &spec.backbone, &base, ModelNeeds::Everything)?;
    let data = resolver.glue_data_for(None, spec.data_dir.as_deref(), &base, &spec.tasks)?;
    let info = model.describe(&registries)?;

    // 3. Who trains a trial, and where designs come from.
    let device = DeviceChoice::default_for_build().open()?;
    // Wrapped as `peftspace run` does, so that `final_runs: (save: true)` writes the final runs' designs.
    let executor = SavingExecutor::new(
        TrainingExecutor::new(&experiment, model, data, device)?,
        spec.backbone.hub_id.clone(),
    );
    let space = ExperimentSpace::for_experiment(&experiment, info, &registries)?;

    // 4. The stages, into a resumable result store.
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    std::fs::create_dir_all(&out)?;
    // Opening the store takes the directory's lock; the manifest is checked under it.
    let mut results = ResultStore::open(&out)?;
    results.check_manifest(
        &refine::manifest(spec, &executor)?,
        &CodeProvenance::new(
            env!("CARGO_PKG_VERSION"),
            &plugin_loader::loaded_libraries(),
        )?,
        false,
    )?;
    let outcome = refine::run_experiment(
        spec,
        &space,
        &executor,
        &mut SerialPool {
            executor: &executor,
            population: 1,
        },
        &mut results,
        &mut NoProgress,
        &AtomicBool::new(false),
    )?;

    // 5. trials.csv, stages.csv, final.csv and the EDF plots.
    let written = report::write_reports_for(&results)?;
    println!("{}", report::decisions_table(&written.decisions));
    println!(
        "{} trials run, {} reused; results in {}",
        outcome.trials_run,
        outcome.trials_reused,
        out.display()
    );
    Ok(())
}
