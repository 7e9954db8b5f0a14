//! The counters of a connection: [`Stats`], the public snapshot, and
//! `Counters`, the atomics every send, flush and connect bumps.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a connection (or the sum over several).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames written whole to the socket (buffered ones once flushed).
    pub frames: u64,
    /// Bytes of those frames, prefixes included.
    pub bytes: u64,
    /// Sends that failed, whatever the reason, and failed flushes.
    pub errors: u64,
    /// Successful connects, the first one included.
    pub connects: u64,
    /// Successful connects after the first (the proxy restarted, a write
    /// failed, or the process forked).
    pub reconnects: u64,
    /// Frames that went into the buffer (written later, or dropped).
    pub buffered: u64,
    /// Frames in the buffer now, not yet written.
    pub pending: u64,
    /// Writes of the buffer (each carried one or more frames).
    pub flushes: u64,
    /// Buffered frames never written whole because a flush failed.
    pub dropped: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.connects += other.connects;
        self.reconnects += other.reconnects;
        self.buffered += other.buffered;
        self.pending += other.pending;
        self.flushes += other.flushes;
        self.dropped += other.dropped;
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) frames: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) buffered: AtomicU64,
    pub(super) pending: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) dropped: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// `+1` for a counter only ever changed with the state lock held
    /// (readers without the lock see the old or the new value).
    pub(super) fn bump_locked(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The counters now, each read on its own (without waiting for a send
    /// in progress).
    pub(super) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            frames: get(&self.frames),
            bytes: get(&self.bytes),
            errors: get(&self.errors),
            connects: get(&self.connects),
            reconnects: get(&self.reconnects),
            buffered: get(&self.buffered),
            pending: get(&self.pending),
            flushes: get(&self.flushes),
            dropped: get(&self.dropped),
        }
    }

    pub(super) fn bump_and_get(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}
