//! One module per subcommand; each has `Args` (clap) and `run(args, global)`. This module holds what they share:
//! the global options, the exit-code carrying error, and the calls that turn options into library objects (the
//! model and data resolver, the device).

pub mod adapter;
pub mod encode;
pub mod eval;
pub mod export;
pub mod generate;
pub mod list;
pub mod plan;
pub mod predict;
pub mod report;
pub mod run;
pub mod sample;
pub mod train;
pub mod trial;
pub mod trust;
pub mod validate;

use std::path::PathBuf;

use candle_core::Device;
use peftspace_core::device::{DeviceChoice, DEVICE_ENV};
use peftspace_core::experiment::Experiment;
use peftspace_core::model::ModelFolder;
use peftspace_core::resolve::{ModelNeeds, Resolver};
use peftspace_core::spec::TaskSpec;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Backbone folder (config.json, weights, tokenizer.json); takes precedence over an experiment file's
    /// `backbone`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PEFTSPACE_MODEL"
    )]
    pub model: Option<PathBuf>,
    /// Folder holding GLUE task folders as GLUE ships them (CoLA, SST-2, MRPC, …); takes precedence over an
    /// experiment file's `data_dir` and a saved design's data folder.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PEFTSPACE_DATA"
    )]
    pub data_dir: Option<PathBuf>,
    /// A dynamic plugin library to load (repeatable).
    #[arg(long = "plugin", global = true, help_heading = "Global options")]
    pub plugins: Vec<PathBuf>,
    /// Never touch the network; fail with a list of what is missing instead.
    #[arg(long, global = true, help_heading = "Global options")]
    pub offline: bool,
    /// Where models run: `cpu`, `cuda` or `cuda:N`. Default: `cuda:0` when this build has CUDA and a GPU is
    /// present, else `cpu`.
    #[arg(long, global = true, help_heading = "Global options", env = DEVICE_ENV)]
    pub device: Option<String>,
    /// More diagnostics on stderr: -v debug, -vv trace with span timings. `RUST_LOG` overrides the filter.
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How diagnostics are written on stderr: `text` for people, `json` (one object per line) for machines.
    #[arg(long, global = true, help_heading = "Global options", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit {
            code: 1,
            error: e.into(),
        }
    }
}

impl Exit {
    /// Invalid user input (experiment file, flags): exit code 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Exit {
            code: 2,
            error: error.into(),
        }
    }

    /// A library error: exit code 2 when the user must fix something they gave or must provide (a missing model
    /// or data folder, a file offline mode cannot download, an unusable checkpoint, a results directory another run
    /// holds), else 1.
    pub fn library(error: peftspace_core::Error) -> Self {
        use peftspace_core::Error;
        match error {
            Error::Missing(_)
            | Error::Model { .. }
            | Error::Spec { .. }
            | Error::Data { .. }
            | Error::Refused(_)
            | Error::Locked { .. } => Exit::usage(error),
            other => Exit::from(other),
        }
    }
}

/// Loads the `--plugin` libraries before any command looks at the registries.
pub fn load_plugins(global: &Global) -> Result<(), Exit> {
    // A plugin the user named that cannot be loaded is a usage error: the message names the file and the reason.
    peftspace_core::plugin_loader::load_plugins(&global.plugins).map_err(Exit::usage)?;
    Ok(())
}

/// The resolver with this invocation's `--offline` and the process environment.
pub fn resolver(global: &Global) -> Resolver {
    Resolver::from_env(global.offline)
}

/// The experiment's model folder: `--model` > `PEFTSPACE_MODEL` > the file's `backbone.path` > `backbone.hub_id`
/// from the cache or downloaded (what `needs` asks for only).
pub fn model_folder(
    global: &Global,
    experiment: &Experiment,
    needs: ModelNeeds,
) -> Result<ModelFolder, Exit> {
    resolver(global)
        .model_folder(
            global.model.as_deref(),
            &experiment.spec.backbone,
            &experiment.base_dir(),
            needs,
        )
        .map_err(Exit::library)
}

/// The model of a command that takes no experiment file (`encode`, `generate`): `--model` > `PEFTSPACE_MODEL` >
/// `hub_id` from the cache or downloaded, with what `needs` asks for (no tokenizer for token ids given as they are).
pub fn model_without_experiment(
    global: &Global,
    hub_id: Option<String>,
    needs: ModelNeeds,
) -> Result<ModelFolder, Exit> {
    let spec = peftspace_core::spec::BackboneSpec { path: None, hub_id };
    resolver(global)
        .model_folder(
            global.model.as_deref(),
            &spec,
            std::path::Path::new("."),
            needs,
        )
        .map_err(Exit::library)
}

/// The folder holding GLUE's task folders when any of `tasks` is a GLUE task (`None` when all are custom): the
/// flag, the environment, the file's `data_dir`, else the cache (downloaded when online).
pub fn glue_data_dir(
    global: &Global,
    experiment: &Experiment,
    tasks: &[TaskSpec],
) -> Result<Option<PathBuf>, Exit> {
    resolver(global)
        .glue_data_for(
            global.data_dir.as_deref(),
            experiment.spec.data_dir.as_deref(),
            &experiment.base_dir(),
            tasks,
        )
        .map_err(Exit::library)
}

/// The device `--device` (or `PEFTSPACE_DEVICE`) names, else the build's default; printed by the commands that
/// train.
pub fn device(global: &Global) -> Result<(DeviceChoice, Device), Exit> {
    let choice = match &global.device {
        Some(text) => DeviceChoice::parse(text).map_err(Exit::usage)?,
        None => DeviceChoice::default_for_build(),
    };
    let device = choice.open().map_err(Exit::usage)?;
    Ok((choice, device))
}
