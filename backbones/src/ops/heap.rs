//! The C allocator's settings for training on the CPU.
//!
//! A training step allocates and frees hundreds of activation-sized buffers, megabytes each. By default glibc's
//! `malloc` serves blocks above its (adaptive) mmap threshold with a fresh `mmap` and hands them back with `munmap`
//! on free, and trims the free top of its heap back to the system: each such buffer then costs page faults, the
//! kernel zeroing its pages, and, with two threads, TLB shoot-downs when it is unmapped. On the LoRA training step of
//! BENCHMARKS.md that was about half of the step's time. Pinning the mmap threshold at glibc's largest (32 MiB) and
//! the trim threshold out of reach keeps freed buffers in the heap for the next op; peak memory stays the same, and
//! the process keeps its peak until it exits. `PEFTSPACE_MALLOC_TUNING=0` leaves the allocator as it is (to measure
//! the difference).

use std::sync::Once;

/// Applies the settings above once per process; a no-op where the C library is not glibc.
pub fn keep_freed_buffers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("PEFTSPACE_MALLOC_TUNING").is_ok_and(|v| v == "0") {
            return;
        }
        tune();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() {
    /// glibc's ceiling for `M_MMAP_THRESHOLD` on 64-bit systems (`DEFAULT_MMAP_THRESHOLD_MAX`).
    const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;
    // SAFETY: `mallopt` only changes allocator parameters; it is safe to call at any time. A refused value
    // (return 0) leaves glibc's default in place, which is correct, only slower.
    let (mmap, trim) = unsafe {
        (
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
        )
    };
    tracing::debug!(mmap, trim, "malloc keeps freed buffers (1 = applied)");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() {}
