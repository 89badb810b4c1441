//! A request to stop, process-wide: set from a signal handler (the command line's Ctrl-C), read by the training
//! loop before each step and each evaluation batch, which then returns [`Error::Interrupted`] — so a trial stops
//! after the step in hand and nothing partial is stored. Library callers that never set it are not affected.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

static STOP: AtomicBool = AtomicBool::new(false);

/// The flag itself (setting it is async-signal-safe: an atomic store).
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// Asks every trial in this process to stop after its current step.
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Error::Interrupted)` once a stop was requested.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}
