//! Who writes a buffer when its caller does not: one background thread per
//! buffering connection (the linger), and [`flush_all`] at exit over every
//! buffering connection of the process.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::stats::Counters;
use super::{Inner, State};
use crate::error::ClientError;

/// How long the flusher sleeps when its buffer is empty before looking
/// whether its connection was dropped (a wake-up also comes with every
/// first frame of a buffer and with the drop itself).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Every connection that buffers, for [`flush_all`].
fn buffered_connections() -> &'static Mutex<Vec<Weak<Inner>>> {
    static ALL: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    ALL.get_or_init(|| Mutex::new(Vec::new()))
}

/// Flushes the buffer of every connection of this process that buffers
/// (the bindings call it at exit). Buffers filled by a parent process
/// before `fork()` are dropped, never written. Returns the first error;
/// every connection is tried.
pub fn flush_all() -> Result<(), ClientError> {
    let all: Vec<Arc<Inner>> = {
        let list = buffered_connections()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.iter().filter_map(Weak::upgrade).collect()
    };
    let pid = crate::fork::pid();
    let mut first = None;
    for inner in all {
        if inner.owner.load(Ordering::Relaxed) != pid {
            continue;
        }
        if let Err(e) = inner.flush() {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

impl Inner {
    /// Starts this process's flusher thread; false when it cannot.
    pub(super) fn start_flusher(&self, this: &Arc<Inner>, state: &mut State, pid: u32) -> bool {
        let weak = Arc::downgrade(this);
        let inner = Arc::clone(this);
        let spawned = std::thread::Builder::new()
            .name("intc-flush".into())
            .spawn(move || inner.run_flusher(pid));
        if spawned.is_err() {
            return false;
        }
        state.flusher_pid = pid;
        self.owner.store(pid, Ordering::Relaxed);
        let mut all = buffered_connections()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(weak);
        true
    }

    /// The flusher: writes the buffer once its oldest frame has waited the
    /// linger; ends when the connection is dropped.
    fn run_flusher(&self, pid: u32) {
        let mut state = self.lock();
        loop {
            if self.closed.load(Ordering::Relaxed) || state.flusher_pid != pid {
                return;
            }
            let due = match (state.oldest, state.config.buffering) {
                (Some(oldest), Some(b)) if !state.buf.is_empty() => Some(oldest + b.linger),
                // Buffering was turned off with frames in: write them now.
                (Some(_), None) if !state.buf.is_empty() => Some(Instant::now()),
                _ => None,
            };
            let wait = match due {
                None => IDLE_WAIT,
                Some(due) => {
                    let now = Instant::now();
                    if now >= due {
                        if let Err(e) = self.flush_locked(&mut state) {
                            Counters::bump(&self.counters.errors, 1);
                            state.deferred = Some(format!(
                                "a background flush failed and its frames were dropped: {e}"
                            ));
                        }
                        continue;
                    }
                    due - now
                }
            };
            state = self.wait_timeout(&self.wake, state, wait);
        }
    }
}
