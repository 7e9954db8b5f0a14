//! Which of a target's `pool` connections each stream uses.
//!
//! A stream keeps the connection it was first given: its runs stay in
//! order, and the markers cached on that connection stay true (a stream
//! that moved and came back would find an old marker there). A stream
//! new to the target gets the connection the fewest streams use, so that
//! N streams on `pool = N` get one each; with `stream % pool`, 4 streams
//! shared 4 connections among themselves, one each only 9 % of the time
//! (4!/4⁴), and the streams sharing one waited for each other's runs.
//!
//! A stream is remembered for the life of the target (until the rules are
//! reloaded): one map entry per proxy spool that ever sent to it.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub(super) struct Assign {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Stream → connection index.
    of: HashMap<u64, usize>,
    /// Streams per connection.
    load: Vec<usize>,
}

impl Assign {
    /// For `n` connections (at least 1).
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        Self {
            inner: Mutex::new(Inner {
                of: HashMap::new(),
                load: vec![0; n],
            }),
        }
    }

    /// The connection `stream` uses; the same every time.
    pub fn slot(&self, stream: u64) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = inner.of.get(&stream) {
            return i;
        }
        let i = inner
            .load
            .iter()
            .enumerate()
            .min_by_key(|&(i, &n)| (n, i))
            .map_or(0, |(i, _)| i);
        if let Some(load) = inner.load.get_mut(i) {
            *load += 1;
        }
        inner.of.insert(stream, i);
        i
    }

    /// Whether `stream` has its connection to itself (no other stream was
    /// given it). A run sent ahead on a shared one would be discarded, its
    /// commands queued by the target for nothing, whenever the other
    /// stream's run came between.
    pub fn alone(&self, stream: u64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .of
            .get(&stream)
            .is_some_and(|&i| inner.load.get(i) == Some(&1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_many_streams_as_connections_get_one_each_and_keep_it() {
        let a = Assign::new(4);
        let streams = [0x9e37_79b9_u64, 4, 8, 12];
        let first: Vec<usize> = streams.iter().map(|&s| a.slot(s)).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        // Asked again, in another order: the same connections.
        for (&s, &i) in streams.iter().zip(&first).rev() {
            assert_eq!(a.slot(s), i);
        }
    }

    #[test]
    fn more_streams_spread_evenly() {
        let a = Assign::new(3);
        let mut per = [0usize; 3];
        for s in 0..9u64 {
            per[a.slot(s * 3)] += 1;
        }
        assert_eq!(per, [3, 3, 3]);
    }

    #[test]
    fn one_connection_serves_every_stream() {
        let a = Assign::new(1);
        assert_eq!(a.slot(7), 0);
        assert!(a.alone(7));
        assert_eq!(a.slot(u64::MAX), 0);
        assert!(!a.alone(7) && !a.alone(u64::MAX));
        let none = Assign::new(0);
        assert_eq!(none.slot(1), 0);
    }

    #[test]
    fn a_stream_is_alone_until_another_shares_its_connection() {
        let a = Assign::new(2);
        assert!(!a.alone(1), "not given a connection yet");
        a.slot(1);
        a.slot(2);
        assert!(a.alone(1) && a.alone(2));
        a.slot(3);
        let shared = [1, 2].into_iter().filter(|&s| !a.alone(s)).count();
        assert_eq!(shared, 1);
        assert!(!a.alone(3));
    }
}
