//! Retry waits: exponential, capped, with decorrelated jitter. The one
//! backoff every reconnect and retry loop of the daemons uses, so that a
//! restarted server is not hit by every proxy in the same millisecond.
//!
//! Each wait is drawn between the base and three times the previous wait,
//! then capped ("decorrelated jitter": spread out like full jitter, but
//! never shorter than the base).

use std::time::Duration;

/// The waits of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    last: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            last: base,
        }
    }

    /// The next wait (grows until the cap).
    pub fn next_wait(&mut self) -> Duration {
        let high = (self.last * 3).min(self.cap).max(self.base);
        let span = high.saturating_sub(self.base).as_nanos() as u64;
        let wait = self.base + Duration::from_nanos(fastrand::u64(0..=span));
        self.last = wait;
        wait
    }

    /// After a success: the next wait starts from the base again.
    pub fn reset(&mut self) {
        self.last = self.base;
    }

    /// Sleeps the next wait.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_between_base_and_cap_and_spread_out() {
        let (base, cap) = (Duration::from_millis(50), Duration::from_secs(5));
        let mut b = Backoff::new(base, cap);
        let waits: Vec<Duration> = (0..200).map(|_| b.next_wait()).collect();
        assert!(waits.iter().all(|w| *w >= base && *w <= cap), "{waits:?}");
        // Jitter: not every wait the same, and they reach the upper range.
        assert!(waits.windows(2).any(|w| w[0] != w[1]));
        assert!(waits.iter().any(|w| *w > cap / 2), "{waits:?}");
        b.reset();
        assert!(b.next_wait() <= base * 3);
    }

    #[test]
    fn two_loops_do_not_wait_in_step() {
        let mk = || Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let (mut a, mut b) = (mk(), mk());
        let same = (0..20).filter(|_| a.next_wait() == b.next_wait()).count();
        assert!(same < 5, "{same} of 20 waits equal");
    }
}
