//! The current process id, cheaply.
//!
//! `getpid(2)` is a system call (glibc stopped caching it), and every send
//! asks "am I still the process that opened this?". The id is cached and a
//! `pthread_atfork` child handler refreshes it in every forked child, so
//! the check stays exact without a system call per frame. If the handler
//! cannot be registered, every call asks the kernel.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
static CACHED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Runs in the child right after `fork()`, before `fork()` returns there:
/// only async-signal-safe work (`getpid`, an atomic store).
extern "C" fn refresh_in_child() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// The id of the calling process.
pub(crate) fn current() -> u32 {
    HOOK.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        #[allow(unsafe_code)]
        // SAFETY: `pthread_atfork` only records the function pointers; the
        // child handler is a plain `extern "C" fn` without captured state,
        // valid for the life of the process (this library is never
        // unloaded while it runs: Rust cdylibs and the Python extension
        // stay loaded), and does only async-signal-safe work.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(refresh_in_child)) };
        CACHED.store(rc == 0, Ordering::Release);
    });
    if CACHED.load(Ordering::Acquire) {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cached_id_is_the_process_id() {
        assert_eq!(super::current(), std::process::id());
        assert_eq!(super::current(), std::process::id());
    }
}
