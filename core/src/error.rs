//! The error type of `peftspace-core`: every variant says where the problem is and, where we can, how to fix it.

use std::path::PathBuf;

/// Errors raised by the core library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    // The OS error is part of the message and deliberately not a `source`: printing the chain (`{:#}`) would
    // otherwise repeat it ("…: No such file or directory: No such file or directory").
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// An experiment file (or another user-written file) is invalid at a known place.
    #[error("{file}:{line}:{col}: {message}")]
    Spec {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },

    /// A name was looked up in a registry and not found; `known` lists what is registered.
    #[error("unknown {kind} `{name}`; known: {}", known.join(", "))]
    UnknownName {
        kind: &'static str,
        name: String,
        known: Vec<String>,
    },

    /// Two registry entries claim the same name.
    #[error("{kind} `{name}` is registered twice ({first} and {second})")]
    DuplicateName {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },

    /// A dynamic plugin could not be loaded.
    #[error("plugin {path}: {message}")]
    Plugin { path: PathBuf, message: String },

    /// The budget cannot be met by a design (the message says which group and strategy).
    #[error("budget: {0}")]
    Budget(String),

    /// A model checkpoint or config is unusable.
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },

    /// A data file is unusable.
    #[error("{path}:{line}: {message}")]
    Data {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// What the user asked for is refused as given (a results folder of another experiment, a saved design that
    /// would be overwritten); the message says why and what to do instead.
    #[error("{0}")]
    Refused(String),

    /// Something the user must provide is not there (a model or data folder, a file offline mode cannot
    /// download); the message lists what is missing and how to provide it.
    #[error("{0}")]
    Missing(String),

    /// A results directory is locked by another process; `holder` is that process's own note (pid, host).
    #[error(
        "{dir} is in use by {holder}; wait for it to finish (or stop it), or choose another --out"
    )]
    Locked { dir: PathBuf, holder: String },

    /// A stop was requested ([`crate::interrupt`]); the work in hand was abandoned after its current step.
    #[error(
        "interrupted: stopped after the current step; nothing of the unfinished work was stored"
    )]
    Interrupted,

    /// Any other invalid argument or state, with a message meant for a person.
    #[error("{0}")]
    Msg(String),
}

/// The result type of `peftspace-core`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A free-form error for a person to read.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Msg(message.into())
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}
