//! The `peftspace` command line: parsing and dispatch only; the work happens in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod logging;

use cmd::Global;

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

#[derive(Subcommand, Debug)]
enum Command {
    /// List registered strategies, grouping rules, allocation rules, evaluators and architectures.
    List(cmd::list::Args),
    /// Parse and check an experiment file.
    Validate(cmd::validate::Args),
    /// Print sampled designs with their per-layer sizes and parameter counts, without training.
    Sample(cmd::sample::Args),
    /// Count an experiment's trials, epochs and examples per stage, and estimate its wall time.
    Plan(cmd::plan::Args),
    /// Run the frozen backbone once and write its hidden states (parity checks).
    Encode(cmd::encode::Args),
    /// Generate text from one input with an encoder-decoder (greedy or beam search), optionally with an adapter.
    Generate(cmd::generate::Args),
    /// Fine-tune one design or baseline on the experiment's tasks.
    Train(cmd::train::Args),
    /// Run a whole experiment (resumable).
    Run(cmd::run::Args),
    /// Re-render tables and plots from stored results.
    Report(cmd::report::Args),
    /// Score a file of texts with a saved design or a PEFT adapter.
    Predict(cmd::predict::Args),
    /// Score a saved design on a task's evaluation set.
    Eval(cmd::eval::Args),
    /// Write a saved design as a Hugging Face PEFT adapter.
    Export(cmd::export::Args),
    /// Trust plugin libraries so that experiment files naming them may load them.
    Trust(cmd::trust::Args),
    /// Run the trials of one task file and write their results (what `run --executor slurm` submits).
    Trial(cmd::trial::Args),
    /// Print a shell completion script (`peftspace completions bash > ~/.local/share/bash-completion/completions/peftspace`).
    Completions(CompletionsArgs),
}

#[derive(clap::Args, Debug)]
struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// `peftspace validate FILE | head -1`: a reader that closes the pipe ends the process quietly, as for any Unix
/// filter, instead of a panic on the next write (Rust ignores SIGPIPE, so the write fails with EPIPE). `run` and
/// `trial` keep their handlers: they store trials, and a failed print must not end them between two writes.
fn quiet_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Trial(_)) {
        quiet_on_closed_pipe();
    }
    logging::init(cli.global.verbose, cli.global.log_format);
    let result = cmd::load_plugins(&cli.global).and_then(|()| match cli.command {
        Command::List(a) => cmd::list::run(a, &cli.global),
        Command::Validate(a) => cmd::validate::run(a, &cli.global),
        Command::Sample(a) => cmd::sample::run(a, &cli.global),
        Command::Plan(a) => cmd::plan::run(a, &cli.global),
        Command::Encode(a) => cmd::encode::run(a, &cli.global),
        Command::Generate(a) => cmd::generate::run(a, &cli.global),
        Command::Train(a) => cmd::train::run(a, &cli.global),
        Command::Run(a) => cmd::run::run(a, &cli.global),
        Command::Report(a) => cmd::report::run(a, &cli.global),
        Command::Predict(a) => cmd::predict::run(a, &cli.global),
        Command::Eval(a) => cmd::eval::run(a, &cli.global),
        Command::Export(a) => cmd::export::run(a, &cli.global),
        Command::Trust(a) => cmd::trust::run(a, &cli.global),
        Command::Trial(a) => cmd::trial::run(a, &cli.global),
        Command::Completions(a) => {
            use clap::CommandFactory;
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "peftspace",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            eprintln!("error: {:#}", exit.error);
            ExitCode::from(exit.code)
        }
    }
}
