//! The library's part in a `fork()`: one set of `pthread_atfork` handlers
//! for two jobs.
//!
//! **The process id, cheaply.** `getpid(2)` is a system call (glibc
//! stopped caching it), and every send asks "am I still the process that
//! opened this?". The id is cached and the child handler refreshes it in
//! every forked child, so the check stays exact without a system call per
//! frame. If the handlers cannot be registered, every call asks the kernel.
//!
//! **No pipe read end in transit.** A connection offers the proxy the
//! read end of a new pipe and then closes its own copy
//! (`connection/pipe.rs`). A `fork()` by another thread in between gives
//! the child a copy that nothing in the child will ever close (only the
//! forking thread lives on there): the pipe keeps a reader when the proxy
//! dies, and the parent's writes go into a pipe nobody reads until its
//! send timeout, instead of failing at once. With four threads opening
//! connections, a quarter of 2,000 forked children held one
//! (`tests/e2e/test_pipe.py`). So an offer goes through a gate: the
//! prepare handler closes it and waits, a bounded time, until no offer is
//! under way; offers that come meanwhile wait for the fork to end.
//!
//! The gate is two counters, not a lock: a lock taken by the prepare
//! handler would have to be released in the child by a thread that did
//! not take it, and a fork from a signal handler that interrupted an
//! offer would wait for itself. Either side waits at most [`WAIT`]: a
//! fork then goes ahead as it did before the gate, an offer is not made
//! (the connection keeps its socket).
//!
//! The handlers are registered at the library's first use, by one thread;
//! a thread that finds another registering them, and a child forked
//! meanwhile (where that state stays for good), ask the kernel for the
//! id instead of waiting (a `Once` would leave such a child waiting for
//! ever on a registration no thread of it will finish).

use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static PID: AtomicU32 = AtomicU32::new(0);
/// Whether the handlers are registered: one of the `HOOK_*` values.
static HOOK: AtomicU8 = AtomicU8::new(HOOK_NONE);
const HOOK_NONE: u8 = 0;
const HOOK_BUSY: u8 = 1;
const HOOK_ON: u8 = 2;
const HOOK_FAILED: u8 = 3;

/// Pipe offers under way (see [`offer_gate`]).
static OFFERS: AtomicUsize = AtomicUsize::new(0);
/// Forks under way in this process (between their prepare handler and
/// their parent handler).
static FORKS: AtomicUsize = AtomicUsize::new(0);

/// The most a fork waits for the offers under way, and an offer for the
/// forks under way: an offer takes microseconds (a pipe, one `sendmsg` of
/// at most a page on a fresh socket, a `close`).
const WAIT: Duration = Duration::from_millis(100);

/// Runs in the forking thread before the fork: closes the gate, then
/// waits until no offer is under way. Calls only `sched_yield` and the
/// monotonic clock.
extern "C" fn prepare() {
    FORKS.fetch_add(1, Ordering::SeqCst);
    if OFFERS.load(Ordering::SeqCst) == 0 {
        return;
    }
    let start = Instant::now();
    while OFFERS.load(Ordering::SeqCst) > 0 && start.elapsed() < WAIT {
        std::thread::yield_now();
    }
}

/// Runs in the parent after the fork (also one that failed): opens the
/// gate again.
extern "C" fn parent() {
    FORKS.fetch_sub(1, Ordering::SeqCst);
}

/// Runs in the child right after `fork()`, before `fork()` returns there:
/// only async-signal-safe work (`getpid`, atomic stores). The child's only
/// thread is the one that forked: no offer and no other fork is under way
/// in it.
extern "C" fn child() {
    PID.store(std::process::id(), Ordering::Relaxed);
    OFFERS.store(0, Ordering::SeqCst);
    FORKS.store(0, Ordering::SeqCst);
}

/// Registers the handlers once; whether they are on.
fn hooked() -> bool {
    match HOOK.load(Ordering::Acquire) {
        HOOK_ON => return true,
        HOOK_NONE => {}
        _ => return false,
    }
    if HOOK
        .compare_exchange(HOOK_NONE, HOOK_BUSY, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return HOOK.load(Ordering::Acquire) == HOOK_ON;
    }
    PID.store(std::process::id(), Ordering::Relaxed);
    #[allow(unsafe_code)]
    // SAFETY: `pthread_atfork` only records the function pointers; the
    // handlers are plain `extern "C" fn`s without captured state, valid
    // for the life of the process (this library is never unloaded while
    // it runs: Rust cdylibs and the Python extension stay loaded), and do
    // only async-signal-safe work.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    let on = rc == 0;
    HOOK.store(if on { HOOK_ON } else { HOOK_FAILED }, Ordering::Release);
    on
}

/// The id of the calling process.
pub(crate) fn pid() -> u32 {
    if hooked() {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

/// Held while a pipe's read end exists in this process on its way to the
/// proxy: no fork starts meanwhile (see the module's text).
#[derive(Debug)]
pub(crate) struct OfferGate(());

/// Waits until no fork is under way, then holds the gate; `None` when
/// forks kept it closed for [`WAIT`] (make no offer then).
pub(crate) fn offer_gate() -> Option<OfferGate> {
    hooked();
    let mut waiting_since: Option<Instant> = None;
    loop {
        // Either this offer sees the fork's count, or the fork's prepare
        // handler sees this offer's (both sequentially consistent).
        OFFERS.fetch_add(1, Ordering::SeqCst);
        if FORKS.load(Ordering::SeqCst) == 0 {
            return Some(OfferGate(()));
        }
        leave();
        let since = *waiting_since.get_or_insert_with(Instant::now);
        while FORKS.load(Ordering::SeqCst) > 0 {
            if since.elapsed() >= WAIT {
                return None;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for OfferGate {
    fn drop(&mut self) {
        leave();
    }
}

/// An offer counts itself out. Saturating: in a child forked from a
/// signal handler that had interrupted an offer, the child handler zeroed
/// the count under it.
fn leave() {
    let _ = OFFERS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        Some(n.saturating_sub(1))
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cached_id_is_the_process_id() {
        assert_eq!(super::pid(), std::process::id());
        assert_eq!(super::pid(), std::process::id());
    }
}
