//! Markers that went back: the highest marker each place (a stream, or a
//! stream's slot on a cluster) had when a run was confirmed, against the
//! marker read from the target later, after a reconnect or a failover.
//!
//! A lower marker than one confirmed means records the target had applied,
//! and WAIT had seen reach replicas, are gone: a replica without them was
//! promoted, or someone deleted the marker. Nothing can bring them back
//! here (the proxy deleted them once acknowledged), so it is logged as an
//! error with the exact range and counted, and the target goes on from the
//! marker it has: nothing is applied twice.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::stats;

/// The highest confirmed marker per place `K`.
#[derive(Debug)]
pub(super) struct Confirmed<K> {
    target: String,
    high: Mutex<HashMap<K, u64>>,
}

impl<K: Hash + Eq> Confirmed<K> {
    pub(super) fn new(target: &str) -> Self {
        Self {
            target: target.to_owned(),
            high: Mutex::new(HashMap::new()),
        }
    }

    /// A run at `place` was confirmed with marker `value`.
    pub(super) fn confirm(&self, place: K, value: u64) {
        let mut high = self.high.lock().unwrap_or_else(|p| p.into_inner());
        let h = high.entry(place).or_insert(value);
        *h = (*h).max(value);
    }

    /// `value` was read from the target for `place` (described by
    /// `describe` in the log): whether it went back from a confirmed one
    /// (logged and counted; it becomes the new high).
    pub(super) fn read(&self, place: K, value: u64, describe: impl FnOnce() -> String) -> bool {
        let mut high = self.high.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = high.get_mut(&place) else {
            return false;
        };
        if value >= *h {
            return false;
        }
        tracing::error!(
            target = %self.target,
            "the marker of {} went back from {h} to {value}: records {}..={h} confirmed by WAIT are missing at the target (a replica without them was promoted, or the marker was deleted); going on from {value}",
            describe(),
            value + 1,
        );
        metrics::counter!(stats::SERVER_REDIS_MARKER_REGRESSIONS, "target" => self.target.clone())
            .increment(1);
        *h = value;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lower_marker_than_confirmed_is_a_regression() {
        let c = Confirmed::new("t");
        assert!(!c.read(1u64, 5, String::new), "nothing confirmed yet");
        c.confirm(1, 10);
        c.confirm(1, 7);
        assert!(!c.read(1, 10, String::new));
        assert!(!c.read(1, 12, String::new), "moved on (another server)");
        assert!(c.read(1, 9, String::new));
        assert!(
            !c.read(1, 9, String::new),
            "counted once, then the new high"
        );
        assert!(!c.read(2, 0, String::new), "another place");
    }
}
