//! The `peftspace` command line: parsing and dispatch only; the work happens in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod logging;

// The built-in plugins and backbones register themselves with `inventory`; naming the crates here makes sure the
// linker keeps them in the binary.
use peftspace_backbones as _;
use peftspace_plugins as _;

/// Parameter-efficient fine-tuning design spaces.
#[derive(Parser, Debug)]
#[command(name = "peftspace", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Backbone folder (config.json, model.safetensors, tokenizer.json); overrides the experiment file.
    #[arg(long, global = true, env = "PEFTSPACE_MODEL")]
    pub model: Option<PathBuf>,
    /// Folder holding GLUE task folders as GLUE ships them (CoLA, SST-2, MRPC, …); overrides the experiment file.
    #[arg(long, global = true, env = "PEFTSPACE_DATA")]
    pub data_dir: Option<PathBuf>,
    /// A dynamic plugin library to load (repeatable).
    #[arg(long = "plugin", global = true)]
    pub plugins: Vec<PathBuf>,
    /// Never touch the network; fail with a list of what is missing instead.
    #[arg(long, global = true)]
    pub offline: bool,
    /// More diagnostics on stderr: -v debug, -vv trace with span timings. `RUST_LOG` overrides the filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How diagnostics are written on stderr: `text` for people, `json` (one object per line) for machines.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List registered strategies, grouping rules, allocation rules, evaluators and architectures.
    List(cmd::list::Args),
    /// Parse and check an experiment file.
    Validate(cmd::validate::Args),
    /// Print sampled designs with their per-layer sizes and parameter counts, without training.
    Sample(cmd::sample::Args),
    /// Run the frozen backbone once and write its hidden states (parity checks).
    Encode(cmd::encode::Args),
    /// Fine-tune one design or baseline on the experiment's tasks.
    Train(cmd::train::Args),
    /// Run a whole experiment (resumable).
    Run(cmd::run::Args),
    /// Re-render tables and plots from stored results.
    Report(cmd::report::Args),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.global.verbose, cli.global.log_format);
    let result = cmd::load_plugins(&cli.global).and_then(|()| match cli.command {
        Command::List(a) => cmd::list::run(a, &cli.global),
        Command::Validate(a) => cmd::validate::run(a, &cli.global),
        Command::Sample(a) => cmd::sample::run(a, &cli.global),
        Command::Encode(a) => cmd::encode::run(a, &cli.global),
        Command::Train(a) => cmd::train::run(a, &cli.global),
        Command::Run(a) => cmd::run::run(a, &cli.global),
        Command::Report(a) => cmd::report::run(a, &cli.global),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            eprintln!("error: {:#}", exit.error);
            ExitCode::from(exit.code)
        }
    }
}
