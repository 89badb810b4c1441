//! Ctrl-C. Workers run in a process group of their own, so the terminal's SIGINT reaches only the parent, which
//! decides: the first asks every trial in flight to stop after its current step (here through
//! [`peftspace_core::interrupt`], in the workers by forwarding SIGINT to their group); nothing partial is stored and
//! the run exits 130. The second kills the workers' group at once and exits 130. A worker also dies with its parent
//! (`PR_SET_PDEATHSIG`), so even a `kill -9` of the parent leaves no orphan training on.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Process group of the workers (0 while there is none).
static WORKER_GROUP: AtomicI32 = AtomicI32::new(0);

fn say(message: &[u8]) {
    // SAFETY: write(2) is async-signal-safe; a failed write of a note is of no consequence.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    let group = WORKER_GROUP.load(Ordering::SeqCst);
    if peftspace_core::interrupt::flag().swap(true, Ordering::SeqCst) {
        say(b"\ninterrupt: stopping the workers now\n");
        if group > 0 {
            // SAFETY: kill(2) and _exit(2) are async-signal-safe.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        unsafe { libc::_exit(130) };
    }
    say(b"\ninterrupt: stopping after the current training step (Ctrl-C again to stop at once)\n");
    if group > 0 {
        // SAFETY: async-signal-safe; the workers' handler sets their own stop flag.
        unsafe { libc::kill(-group, libc::SIGINT) };
    }
}

extern "C" fn on_interrupt_in_worker(_signal: libc::c_int) {
    peftspace_core::interrupt::request();
}

/// Installs the parent's handler and returns the stop flag it sets.
pub fn install_interrupt_handler() -> &'static AtomicBool {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: the handler only touches atomics and calls async-signal-safe functions (write, kill, _exit).
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
    peftspace_core::interrupt::flag()
}

/// A worker stops its trial after the current step when its parent forwards SIGINT.
pub fn install_worker_handler() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt_in_worker;
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// Makes a worker command start in the workers' process group (the first worker founds it) and die with this
/// process. Call [`joined_group`] with the first worker's pid once it is spawned.
pub fn prepare_worker(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let group = WORKER_GROUP.load(Ordering::SeqCst);
    command.process_group(group.max(0));
    // SAFETY: getpid before the fork; in the child only async-signal-safe calls (prctl, getppid, _exit).
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The parent may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
            Ok(())
        });
    }
}

/// Records the workers' process group after the first worker (its leader) started.
pub fn joined_group(first_worker_pid: u32) {
    let _ = WORKER_GROUP.compare_exchange(
        0,
        first_worker_pid as i32,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
}

/// Forgets the workers' group once they are gone.
pub fn workers_gone() {
    WORKER_GROUP.store(0, Ordering::SeqCst);
}
