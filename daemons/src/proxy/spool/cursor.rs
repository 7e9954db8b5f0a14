//! A destination's place in the spool: the TCP link and the NATS
//! publisher read through a [`Cursor`]. It waits for records on the
//! spool's watch of the newest readable sequence, which the writer bumps
//! as it makes records readable: a caught-up destination sleeps until an
//! append, and never polls.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::{Spool, SpoolError};

/// Where one destination reads next. See the module docs.
#[derive(Debug)]
pub struct Cursor {
    spool: Arc<Spool>,
    /// The next sequence to read.
    next: u64,
    /// Changes when records become readable.
    pushed: watch::Receiver<u64>,
}

impl Spool {
    /// A cursor that reads from `from` on (from the oldest record kept,
    /// when `from` is below it).
    pub fn cursor(self: &Arc<Self>, from: u64) -> Cursor {
        Cursor {
            spool: Arc::clone(self),
            next: from,
            pushed: self.shared.pushed.subscribe(),
        }
    }
}

impl Cursor {
    /// The next sequence the cursor reads: it has read every record
    /// before it.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Reads from `seq` on next (a server asked for records again).
    pub fn seek(&mut self, seq: u64) {
        self.next = seq;
    }

    /// Whether a record at or past the cursor is readable now.
    pub fn ready(&self) -> bool {
        self.next <= *self.pushed.borrow()
    }

    /// Waits until [`Cursor::ready`]. Cancel safe: a `select!` may drop
    /// it and call it again, no wake-up is lost.
    pub async fn wait(&mut self) -> Result<(), SpoolError> {
        loop {
            // Marks the value seen: a record made readable after this
            // look wakes `changed`.
            if self.next <= *self.pushed.borrow_and_update() {
                return Ok(());
            }
            self.pushed
                .changed()
                .await
                .map_err(|_| SpoolError::Failed("the spool was closed".into()))?;
        }
    }

    /// The records readable now from the cursor on, up to `max_records`
    /// / `max_bytes` (at least one when any is), and moves past them;
    /// `Ok(None)` when none is readable yet ([`Cursor::wait`], then read
    /// again). Returns the first sequence (past those no record holds:
    /// acknowledged, or unused after a jump) and the records, consecutive
    /// from it. Records in memory are read on the caller's task, those on
    /// disk on a blocking thread ([`Spool::read_async`]).
    ///
    /// Cancel safe, but a read dropped half-way is wasted: a loop that
    /// also waits for other events should `select!` on [`Cursor::wait`]
    /// and read outside the `select!`.
    pub async fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<(u64, Vec<Bytes>)>, SpoolError> {
        // Readable before the read, so still readable during it (a
        // record made readable after this look is read next time).
        let last = self.spool.last();
        let (first, records) = self
            .spool
            .read_async(self.next, max_records, max_bytes)
            .await?;
        if records.is_empty() {
            if first <= last {
                // Nothing is deleted past a destination's cursor.
                return Err(SpoolError::Missing { seq: first });
            }
            // No record holds the sequences before `first`, and none
            // from `first` on was readable.
            self.next = self.next.max(first);
            return Ok(None);
        }
        self.next = first + records.len() as u64;
        Ok(Some((first, records)))
    }

    /// Waits until records are readable from the cursor on, then reads
    /// them as [`Cursor::read`] does.
    pub async fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(u64, Vec<Bytes>), SpoolError> {
        loop {
            self.wait().await?;
            if let Some(batch) = self.read(max_records, max_bytes).await? {
                return Ok(batch);
            }
        }
    }
}
