//! Paces the log lines of an event that may repeat fast (a refused
//! connection, a spool at its disk cap): per reason, the first line, then
//! at most one per interval, carrying the number of lines held back since
//! the previous one. One [`LogThrottle`] per reason; [`LogThrottles`]
//! holds one per reason for a caller with many (refused client frames,
//! by their `reason` label).
//!
//! It paces only the log: the caller counts every event in its metric
//! before asking, so counters always carry the full count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval of [`LogThrottle::default`].
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// At most one log line per interval for one reason. See the module docs.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line was logged (`None`: never).
    last: Option<Instant>,
    /// Events held back since then.
    suppressed: u64,
}

impl Default for LogThrottle {
    /// One line every [`LOG_EVERY`] at most.
    fn default() -> Self {
        Self::every(LOG_EVERY)
    }
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn every(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts one event; `Some(suppressed)` when its line is due (the
    /// first event, or the interval has passed since the last line),
    /// `suppressed` being the events held back since the last line (not
    /// counting this one). `None`: hold this line back.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        // A few assignments that cannot panic half-way: a poisoned lock
        // still holds a sound state.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            st.suppressed += 1;
            return None;
        }
        st.last = Some(now);
        Some(std::mem::take(&mut st.suppressed))
    }
}

/// One [`LogThrottle`] per reason, each made on the reason's first event:
/// reasons are paced apart, at [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct LogThrottles {
    by_reason: Mutex<HashMap<&'static str, LogThrottle>>,
}

impl LogThrottles {
    /// [`LogThrottle::due`] for `reason`.
    pub fn due(&self, reason: &'static str) -> Option<u64> {
        self.due_at(reason, Instant::now())
    }

    fn due_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        // An insert or a lookup: a poisoned lock still holds a sound map.
        let mut by_reason = self.by_reason.lock().unwrap_or_else(|p| p.into_inner());
        by_reason.entry(reason).or_default().due_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_then_one_per_interval_with_the_count_held_back() {
        let t = LogThrottle::every(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.due_at(t0), Some(0), "the first event is logged");
        assert_eq!(t.due_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.due_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            t.due_at(t0 + Duration::from_secs(10)),
            Some(2),
            "the two held back"
        );
        assert_eq!(t.due_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.due_at(t0 + Duration::from_secs(25)), Some(1));
        assert_eq!(t.due_at(t0 + Duration::from_secs(40)), Some(0));
    }

    #[test]
    fn reasons_are_paced_apart() {
        let full = LogThrottle::default();
        let beyond = LogThrottle::default();
        assert_eq!(full.due(), Some(0));
        assert_eq!(full.due(), None);
        assert_eq!(
            beyond.due(),
            Some(0),
            "one reason does not hold back another"
        );
    }

    #[test]
    fn throttles_pace_each_reason_on_its_own() {
        let t = LogThrottles::default();
        let t0 = Instant::now();
        assert_eq!(t.due_at("oversize", t0), Some(0));
        assert_eq!(t.due_at("oversize", t0 + Duration::from_secs(1)), None);
        assert_eq!(
            t.due_at("bad_resp", t0 + Duration::from_secs(2)),
            Some(0),
            "another reason has its own pace"
        );
        assert_eq!(t.due_at("bad_resp", t0 + Duration::from_secs(3)), None);
        assert_eq!(t.due_at("oversize", t0 + LOG_EVERY), Some(1));
        assert_eq!(t.due_at("bad_resp", t0 + LOG_EVERY), None);
        assert_eq!(
            t.due_at("bad_resp", t0 + LOG_EVERY + Duration::from_secs(2)),
            Some(2)
        );
    }
}
