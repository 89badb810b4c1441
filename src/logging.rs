//! Diagnostics through `tracing`, always on stderr: stdout carries command output, and in `run --worker` mode it is
//! the protocol channel to the parent, so no log line may ever reach it.
//!
//! The default shows warnings and errors only, so a command's normal output stays exactly what it prints itself.
//! `-v` adds debug events of the peftspace crates, `-vv` trace events plus one line per closed span with its timing
//! (trial, epoch, step, forward, backward, …). `RUST_LOG`, when set, replaces the filter (not the span timings).

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
}

impl LogFormat {
    /// The value `--log-format` takes for this format (worker processes get the same flag).
    pub fn flag_value(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The filter used when `RUST_LOG` is not set. Target directives match by prefix, so `peftspace` covers the binary
/// and every `peftspace_*` crate, but not the dependencies, which stay at warnings.
fn default_filter(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "warn",
        1 => "warn,peftspace=debug",
        _ => "warn,peftspace=trace",
    }
}

/// Installs the global subscriber. Call once, before any command runs.
pub fn init(verbosity: u8, format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                eprintln!("warning: ignoring RUST_LOG={directives:?} ({e})");
                EnvFilter::new(default_filter(verbosity))
            }),
        _ => EnvFilter::new(default_filter(verbosity)),
    };
    // Span timings are one extra line per span (several per training step), so only -vv asks for them and -v stays
    // readable on a long run.
    let span_events = if verbosity >= 2 {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    // Colour codes are noise in a file or a pipe (and in the parent's captured stderr).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(span_events);
    // This fails only when a subscriber is already installed; logging then stays as that one set it up.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
