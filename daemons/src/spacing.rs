//! Spacing: the least time between the starts of two events of one kind
//! (the spool's fsyncs under `--fsync-spacing`, a link's partial batches
//! under `--batch-spacing`). The one mechanism both use: whatever comes
//! due during the wait is gathered into the next event, so a steady
//! stream pays the event's fixed cost at most once per spacing, and the
//! first event after a quiet spell starts at once.

use std::time::{Duration, Instant};

/// The most any spacing may be: what it holds back (a client's SYNC, a
/// record on its way to the servers) waits up to it.
pub const MAX: Duration = Duration::from_secs(1);

/// When the next event of one kind may start.
#[derive(Debug, Clone)]
pub struct Spacing {
    every: Duration,
    last: Option<Instant>,
}

impl Spacing {
    /// Events at least `every` apart (`Duration::ZERO`: never held).
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// When the next event may start, if that is still ahead; `None`: it
    /// may start now.
    pub fn held_until(&self) -> Option<Instant> {
        let at = self.last? + self.every;
        (at > Instant::now()).then_some(at)
    }

    /// Records that an event starts now.
    pub fn start(&mut self) {
        if !self.every.is_zero() {
            self.last = Some(Instant::now());
        }
    }
}

/// Checks a spacing given on the command line or in a config: at most
/// [`MAX`]. `what` names it in the message (`fsync spacing`).
pub fn check(what: &str, every: Duration) -> Result<(), String> {
    if every > MAX {
        return Err(format!(
            "{what} {every:?} is over the most allowed, {MAX:?} (what it holds back waits up to it)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_spacing_never_holds() {
        let mut s = Spacing::new(Duration::ZERO);
        assert_eq!(s.held_until(), None);
        s.start();
        assert_eq!(s.held_until(), None);
    }

    #[test]
    fn the_first_event_starts_at_once_and_the_next_one_waits_out_the_spacing() {
        let mut s = Spacing::new(Duration::from_secs(60));
        assert_eq!(s.held_until(), None);
        let before = Instant::now();
        s.start();
        let at = s.held_until().expect("held right after a start");
        assert!(at >= before + Duration::from_secs(60));
        assert!(at <= Instant::now() + Duration::from_secs(60));
    }

    #[test]
    fn a_spacing_that_has_passed_holds_nothing() {
        let mut s = Spacing::new(Duration::from_millis(1));
        s.start();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(s.held_until(), None);
    }

    #[test]
    fn a_spacing_is_at_most_a_second() {
        assert_eq!(check("batch spacing", Duration::from_secs(1)), Ok(()));
        let err = check("batch spacing", Duration::from_millis(1001)).expect_err("over the most");
        assert!(
            err.starts_with("batch spacing 1.001s is over the most allowed, 1s"),
            "{err}"
        );
    }
}
