//! At most N connections at once. A connection over the limit is accepted
//! and closed at once (rather than left in the kernel's backlog, where its
//! peer would wait without knowing why), counted, and logged — the first
//! one, then at most one line every 10 seconds with the count since
//! ([`LogThrottle`], also used for peers `allow` refuses).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Admits connections up to a limit.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    /// Metric counting refusals (label `reason="<what>"`).
    counter: &'static str,
    what: &'static str,
    log: LogThrottle,
}

/// Paces the log lines of an event that may repeat fast (a refused
/// connection): the first one, then at most one every 10 seconds, carrying
/// the number of events since the previous line.
#[derive(Debug, Default)]
pub struct LogThrottle(Mutex<LogState>);

#[derive(Debug, Default)]
struct LogState {
    last: Option<Instant>,
    since: u64,
}

impl LogThrottle {
    /// Counts one event; `Some(n)` when a line is due, `n` being the events
    /// since the last line, this one included.
    pub fn due(&self) -> Option<u64> {
        let mut log = self.0.lock().ok()?;
        log.since += 1;
        if log.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        log.last = Some(Instant::now());
        Some(std::mem::take(&mut log.since))
    }
}

/// Held by a connection while it lives; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    /// `what` names the limit in logs and in the counter's `reason` label
    /// (`max_clients`, `max_connections`).
    pub fn new(limit: usize, counter: &'static str, what: &'static str) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            counter,
            what,
            log: LogThrottle::default(),
        }
    }

    /// A slot, or `None` (counted and logged) when `limit` connections are
    /// open: the caller then drops the connection.
    pub fn admit(&self, peer: &dyn std::fmt::Debug) -> Option<Slot> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(Slot(permit));
        }
        metrics::counter!(self.counter, "reason" => self.what).increment(1);
        if let Some(refused) = self.log.due() {
            tracing::warn!(
                ?peer,
                limit = self.limit,
                refused,
                "{} connections already open ({} = {}): connection closed",
                self.limit,
                self.what,
                self.limit
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let a = Admission::new(2, "test_refused_total", "max_test");
        let one = a.admit(&"p1").expect("first");
        let _two = a.admit(&"p2").expect("second");
        assert!(a.admit(&"p3").is_none());
        drop(one);
        assert!(a.admit(&"p4").is_some());
    }

    #[test]
    fn throttle_logs_the_first_then_counts() {
        let t = LogThrottle::default();
        assert_eq!(t.due(), Some(1));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        if let Ok(mut s) = t.0.lock() {
            s.last = Instant::now().checked_sub(LOG_EVERY);
        }
        assert_eq!(t.due(), Some(3), "the two held back and this one");
    }
}
