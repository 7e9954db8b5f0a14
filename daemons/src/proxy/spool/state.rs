//! The spool's accounting, kept under one lock: the sequences handed out,
//! written and readable, each destination's acknowledgement and the floor
//! below which everything is acknowledged, the segments and their bytes,
//! the newest records kept in memory, and where readers stopped. Also the
//! acknowledgements themselves ([`Spool::ack`]) and what is pending.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use syncs_engine::stats;

use super::format::now_ms;
use super::segment::{IndexEntry, Segment};
use super::writer::Cmd;
use super::Spool;

/// Read positions remembered for readers that go on where they stopped.
pub(super) const HINTS: usize = 16;

/// A record kept in memory.
#[derive(Debug)]
pub(super) struct Cached {
    pub seq: u64,
    pub data: Bytes,
    pub time_ms: u64,
    /// Spool byte position of the record.
    pub pos: u64,
}

impl Cached {
    /// Memory the record takes in the cache: its bytes and its entry
    /// (what counts against `memory_bytes`).
    pub fn cost(&self) -> usize {
        self.data.len() + std::mem::size_of::<Cached>()
    }
}

/// Where a reader stopped: the next record's place in a segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hint {
    pub segment_base: u64,
    pub next: IndexEntry,
}

/// What callers and the writer thread share, under `Shared`'s lock.
#[derive(Debug)]
pub(super) struct State {
    /// The next sequence to hand out.
    pub next_seq: u64,
    /// The newest record written to a file.
    pub written: u64,
    /// Spool byte position after the newest record written.
    pub written_pos: u64,
    /// The newest record readers may see (written, its sequence reserved).
    pub visible: u64,
    /// Per destination, the highest sequence it acknowledged.
    pub acked: Vec<u64>,
    /// Every destination acknowledged up to here.
    pub floor: u64,
    /// Oldest first; the last one is being appended to and is never
    /// deleted (it carries the sequence on across restarts).
    pub segments: VecDeque<Segment>,
    /// Bytes of all segment files, including those being deleted.
    pub disk_bytes: u64,
    /// Bytes of records handed to the writer, not yet written.
    pub reserved: u64,
    /// The newest records, contiguous, at most `memory_bytes`.
    pub ram: VecDeque<Cached>,
    pub ram_bytes: usize,
    /// Where recent disk reads stopped (at most `HINTS`).
    pub hints: VecDeque<Hint>,
    /// Set when the writer failed: pushes fail from then on.
    pub failed: Option<String>,
    /// A push asked the writer to close an acknowledged segment early.
    pub roll_requested: bool,
    /// The proxy stops: pushes at the disk cap are refused, not held
    /// (acknowledgements that would free room may never come now).
    pub stopping: bool,
}

impl State {
    /// Removes the segments (never the newest) every destination has
    /// acknowledged entirely; the caller has the writer delete them.
    pub fn take_deletable(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.last <= self.floor)
        {
            out.extend(self.segments.pop_front());
        }
        out
    }

    /// Stores a record just written, dropping the oldest ones past the
    /// memory budget.
    pub fn cache(&mut self, rec: Cached, memory_bytes: usize) {
        if rec.cost() > memory_bytes {
            // Kept records must stay contiguous.
            self.ram.clear();
            self.ram_bytes = 0;
            return;
        }
        self.ram_bytes += rec.cost();
        self.ram.push_back(rec);
        while self.ram_bytes > memory_bytes {
            match self.ram.pop_front() {
                Some(old) => self.ram_bytes -= old.cost(),
                None => break,
            }
        }
    }

    pub fn cached(&self, seq: u64) -> Option<&Cached> {
        let front = self.ram.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.ram.get(i)
    }

    pub fn segment_index(&self, seq: u64) -> Option<usize> {
        self.segments
            .partition_point(|s| s.base <= seq)
            .checked_sub(1)
    }

    /// The best known place at or before record `seq` in its segment.
    pub fn nearest(&self, seg: &Segment, seq: u64) -> IndexEntry {
        let mut best = seg.nearest(seq);
        for h in &self.hints {
            if h.segment_base == seg.base && h.next.seq <= seq && h.next.seq > best.seq {
                best = h.next;
            }
        }
        best
    }

    /// Spool byte position and append time of record `seq` (written),
    /// exact when it is in memory or where a reader stopped, otherwise
    /// those of the nearest indexed record before it.
    pub fn locate(&self, seq: u64) -> Option<(u64, u64)> {
        if let Some(c) = self.cached(seq) {
            return Some((c.pos, c.time_ms));
        }
        let seg = self.segments.get(self.segment_index(seq)?)?;
        let e = self.nearest(seg, seq);
        Some((seg.pos(e.offset), e.time_ms))
    }

    /// The first sequence at or after `seq` that a record may hold:
    /// `seq`, or the base of the next segment when `seq` falls in the
    /// unused sequences of a jump (see the module docs).
    pub fn held_from(&self, seq: u64) -> u64 {
        let i = self.segment_index(seq).unwrap_or(0);
        let mut at = seq;
        for seg in self.segments.range(i..) {
            if at <= seg.last || seg.base > at {
                return at.max(seg.base);
            }
            at = at.max(seg.last + 1);
        }
        at
    }

    /// Records written and not acknowledged by every destination (the
    /// unused sequences of a jump are not records).
    pub fn pending(&self) -> u64 {
        let mut n = 0;
        for seg in self.segments.iter().rev() {
            if seg.last <= self.floor {
                break;
            }
            n += seg.last - self.floor.max(seg.base - 1);
        }
        n
    }

    pub fn pending_bytes(&self) -> u64 {
        if self.pending() == 0 {
            return 0;
        }
        match self.locate(self.held_from(self.floor + 1)) {
            Some((pos, _)) => self.written_pos.saturating_sub(pos),
            None => 0,
        }
    }

    pub fn oldest_pending_age(&self) -> Option<Duration> {
        if self.pending() == 0 {
            return None;
        }
        let (_, time_ms) = self.locate(self.held_from(self.floor + 1))?;
        Some(Duration::from_millis(now_ms().saturating_sub(time_ms)))
    }

    /// Sets the gauges (a few arithmetic operations and lookups).
    pub fn publish_gauges(&self) {
        metrics::gauge!(stats::PROXY_SPOOL_BYTES).set(self.disk_bytes as f64);
        metrics::gauge!(stats::PROXY_PENDING).set(self.pending() as f64);
        let age = self.oldest_pending_age().map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(stats::PROXY_OLDEST_PENDING_SECONDS).set(age);
    }
}

impl Spool {
    /// Destination `dest` has applied everything up to `seq` (counted in
    /// `syncs_proxy_records_acked_total`). Segments
    /// every destination has acknowledged entirely are deleted (by the
    /// writer thread; this does no file IO).
    pub fn ack(&self, dest: usize, seq: u64) {
        let mut st = self.shared.lock();
        // A server may have applied records lost with the machine's page
        // cache: their sequences are below the jump (`next_seq`), and
        // nothing is sent again for them.
        let seq = if seq > st.visible {
            let log = if seq >= st.next_seq {
                self.shared.beyond_logged.due()
            } else {
                None
            };
            if let Some(suppressed) = log {
                tracing::error!(
                    dest,
                    acked = seq,
                    newest = st.visible,
                    more_since_last_line = suppressed,
                    "a server acknowledges records this spool never sent (was the spool directory replaced?); \
                     it will skip the records up to its acknowledgement"
                );
            }
            st.visible
        } else {
            seq
        };
        let Some(a) = st.acked.get_mut(dest) else {
            return;
        };
        if seq <= *a {
            return;
        }
        // Every way an acknowledgement comes (ACK, WELCOME, a NATS PubAck)
        // is counted here, once.
        metrics::counter!(syncs_engine::stats::PROXY_RECORDS_ACKED).increment(seq - *a);
        *a = seq;
        let floor = st.acked.iter().copied().min().unwrap_or(0);
        if floor <= st.floor {
            return;
        }
        st.floor = floor;
        let now = now_ms();
        let latency = metrics::histogram!(syncs_engine::stats::PROXY_REPLICATION_SECONDS);
        while st.ram.front().is_some_and(|c| c.seq <= floor) {
            if let Some(c) = st.ram.pop_front() {
                st.ram_bytes -= c.cost();
                latency.record(now.saturating_sub(c.time_ms) as f64 / 1000.0);
            }
        }
        st.hints.retain(|h| h.next.seq > floor);
        let gone = st.take_deletable();
        if !gone.is_empty() {
            // If the writer is gone the files stay; the next run deletes
            // them.
            let _ = self.cmds.send(Cmd::Delete(gone));
        }
        st.publish_gauges();
        drop(st);
        // A push waiting for room may now close the newest segment.
        self.shared.room.notify_waiters();
    }

    /// The highest sequence `dest` has acknowledged.
    pub fn acked(&self, dest: usize) -> u64 {
        self.shared.lock().acked.get(dest).copied().unwrap_or(0)
    }

    /// Records not yet acknowledged by every destination.
    pub fn pending(&self) -> usize {
        usize::try_from(self.shared.lock().pending()).unwrap_or(usize::MAX)
    }

    /// Bytes on disk (headers included) of the records not yet
    /// acknowledged by every destination; exact to within the index
    /// spacing (1 MiB) when the oldest of them is no longer in memory.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.lock().pending_bytes()
    }

    /// Age of the oldest record not acknowledged by every destination
    /// (its append time; when it is no longer in memory, that of an
    /// indexed record at most 1 MiB before it).
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        self.shared.lock().oldest_pending_age()
    }
}
