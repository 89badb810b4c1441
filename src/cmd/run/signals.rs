//! Ctrl-C: the first SIGINT asks the run to stop after the trials in flight; the second exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // Second Ctrl-C: abandon in-flight trials. The store holds only complete lines, so this is safe.
        unsafe { libc::_exit(130) };
    }
    let message = b"\ninterrupt: finishing trials in flight (Ctrl-C again to abandon them)\n";
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

/// Installs the handler and returns the flag it sets.
pub fn install_interrupt_handler() -> &'static AtomicBool {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: the handler only touches an atomic and calls async-signal-safe functions (write, _exit).
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
    &STOP
}

/// Workers ignore SIGINT (the terminal sends it to the whole process group) so that they finish the trial in
/// hand; they end when the parent closes their input.
pub fn ignore_interrupts() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}
