//! At most N connections at once. A connection over the limit is accepted
//! and closed at once (rather than left in the kernel's backlog, where its
//! peer would wait without knowing why), counted, and logged — the first
//! one, then at most one line every 10 seconds with the count held back
//! since ([`LogThrottle`]).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_throttle::LogThrottle;

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
        if let Some(suppressed) = self.log.due() {
            tracing::warn!(
                ?peer,
                limit = self.limit,
                more_since_last_line = suppressed,
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
}
