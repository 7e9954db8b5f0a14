//! Reading records back: from memory when they are still there, else from
//! the segment files (on a blocking thread for async callers), and the
//! newest readable sequence that readers wait on.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::segment::{self, ReadPlan};
use super::state::{Hint, HINTS};
use super::{Spool, SpoolError};
use syncs_engine::stats;

/// A read as planned under the lock.
#[derive(Debug)]
enum Planned {
    /// The first sequence and the records (from memory; none readable).
    Done(u64, Vec<Bytes>),
    /// The first sequence, and where to read the records on disk.
    Disk(u64, ReadPlan),
}

impl Spool {
    /// Up to `max_records` / `max_bytes` records from `from` on (at least
    /// one when any is there), from memory or from the segment files;
    /// returns the first sequence, `max(from, oldest unacknowledged)`
    /// (past the unused sequences of a jump, if it falls in them), and the
    /// records, consecutive from it. Records are readable once written and
    /// reserved, before their fsync. A read from disk is blocking file IO
    /// of about `max_bytes`.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(u64, Vec<Bytes>), SpoolError> {
        match self.plan_read(from, max_records, max_bytes) {
            Planned::Done(first, records) => Ok((first, records)),
            Planned::Disk(first, plan) => self.read_disk(first, &plan, max_records, max_bytes),
        }
    }

    /// The disk half of a read: the records `plan` locates, and where the
    /// reader stopped remembered for its next read.
    fn read_disk(
        &self,
        first: u64,
        plan: &ReadPlan,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(u64, Vec<Bytes>), SpoolError> {
        let out = segment::read_records(plan, first, max_records, max_bytes)?;
        metrics::counter!(stats::PROXY_SPOOL_READ_RECORDS, "from" => "disk")
            .increment(out.records.len() as u64);
        {
            let mut st = self.shared.lock();
            if st.hints.len() >= HINTS {
                st.hints.pop_front();
            }
            st.hints.push_back(Hint {
                segment_base: plan.segment_base,
                next: out.next,
            });
        }
        Ok((first, out.records))
    }

    /// [`Spool::read`] for async callers: records in memory are read on
    /// the caller's task (a link caught up never leaves it); records on
    /// disk are read on a blocking thread, off the async workers.
    pub async fn read_async(
        self: &Arc<Self>,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(u64, Vec<Bytes>), SpoolError> {
        let (first, plan) = match self.plan_read(from, max_records, max_bytes) {
            Planned::Done(first, records) => return Ok((first, records)),
            Planned::Disk(first, plan) => (first, plan),
        };
        let spool = Arc::clone(self);
        tokio::task::spawn_blocking(move || spool.read_disk(first, &plan, max_records, max_bytes))
            .await
            .map_err(|e| SpoolError::Failed(format!("spool reader task: {e}")))?
    }

    /// The part of a read done under the lock: the records from memory,
    /// or where on disk to find them.
    fn plan_read(&self, from: u64, max_records: usize, max_bytes: usize) -> Planned {
        let st = self.shared.lock();
        let first = st.held_from(from.max(st.floor + 1));
        if first > st.visible {
            return Planned::Done(first, Vec::new());
        }
        if let Some(skip) = st.ram.front().and_then(|c| first.checked_sub(c.seq)) {
            let skip = usize::try_from(skip)
                .unwrap_or(usize::MAX)
                .min(st.ram.len());
            let mut out = Vec::with_capacity(max_records.min(st.ram.len() - skip));
            let mut bytes = 0;
            for c in st.ram.range(skip..) {
                if c.seq > st.visible
                    || (!out.is_empty()
                        && (out.len() >= max_records || bytes + c.data.len() > max_bytes))
                {
                    break;
                }
                bytes += c.data.len();
                out.push(c.data.clone());
            }
            drop(st);
            if !out.is_empty() {
                metrics::counter!(stats::PROXY_SPOOL_READ_RECORDS, "from" => "memory")
                    .increment(out.len() as u64);
            }
            return Planned::Done(first, out);
        }
        let Some(seg) = st.segment_index(first).and_then(|i| st.segments.get(i)) else {
            return Planned::Done(first, Vec::new());
        };
        let plan = ReadPlan {
            path: Arc::clone(&seg.path),
            file: Arc::clone(&seg.file),
            segment_base: seg.base,
            start: st.nearest(seg, first),
            last: seg.last.min(st.visible),
            len: seg.len,
        };
        Planned::Disk(first, plan)
    }

    /// The newest readable sequence (0: none ever): the newest written.
    pub fn last(&self) -> u64 {
        *self.shared.pushed.borrow()
    }

    /// A receiver that changes when records become readable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.pushed.subscribe()
    }
}
