//! The proxy's queue of accepted records, numbered in order of acceptance.
//!
//! Each destination reads with its own cursor and acknowledges on its own;
//! a record leaves memory once every destination has acknowledged it. The
//! queue is bounded in bytes: when full, `push` waits, which stops reading
//! from clients, whose writes then block or time out (back-pressure).
//!
//! This queue lives in memory: records not yet acknowledged are lost if
//! the proxy process dies. The durable spool replaces it.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{watch, Notify};

#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    /// The newest sequence pushed; destinations wait on it.
    pushed: watch::Sender<u64>,
    /// Room was freed; clients waiting in `push` retry.
    room: Notify,
    max_bytes: usize,
}

#[derive(Debug)]
struct Inner {
    /// Sequence of `records[0]`.
    base: u64,
    records: VecDeque<Bytes>,
    bytes: usize,
    /// Highest sequence acknowledged by each destination.
    acked: Vec<u64>,
}

impl Queue {
    /// A queue for `destinations` readers holding at most `max_bytes`.
    pub fn new(destinations: usize, max_bytes: usize) -> Self {
        let (pushed, _) = watch::channel(0);
        Self {
            inner: Mutex::new(Inner {
                base: 1,
                records: VecDeque::new(),
                bytes: 0,
                acked: vec![0; destinations],
            }),
            pushed,
            room: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave Inner half-updated
        // (every update is a few plain assignments), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record, waiting for room; returns its sequence.
    pub async fn push(&self, record: Bytes) -> u64 {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                // A record larger than the whole cap still goes in alone.
                if inner.bytes == 0 || inner.bytes + record.len() <= self.max_bytes {
                    inner.bytes += record.len();
                    inner.records.push_back(record);
                    let seq = inner.base + inner.records.len() as u64 - 1;
                    metrics::gauge!(syncs_engine::stats::PROXY_PENDING)
                        .set(inner.records.len() as f64);
                    self.pushed.send_replace(seq);
                    return seq;
                }
            }
            notified.await;
        }
    }

    /// Up to `max_records` / `max_bytes` records from `from` on (at least
    /// one when any is there); returns the first sequence and the records.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> (u64, Vec<Bytes>) {
        let inner = self.lock();
        let start = from.max(inner.base);
        let skip = (start - inner.base) as usize;
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in inner.records.iter().skip(skip) {
            if !out.is_empty() && (out.len() >= max_records || bytes + r.len() > max_bytes) {
                break;
            }
            bytes += r.len();
            out.push(r.clone());
        }
        (start, out)
    }

    /// The newest sequence pushed so far (0: none).
    pub fn last(&self) -> u64 {
        *self.pushed.borrow()
    }

    /// A receiver that changes when records are pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pushed.subscribe()
    }

    /// Destination `dest` has applied everything up to `seq`.
    pub fn ack(&self, dest: usize, seq: u64) {
        let mut inner = self.lock();
        if let Some(a) = inner.acked.get_mut(dest) {
            *a = (*a).max(seq);
        }
        let floor = inner.acked.iter().copied().min().unwrap_or(0);
        let mut freed = false;
        while inner.base <= floor {
            match inner.records.pop_front() {
                Some(r) => {
                    inner.bytes -= r.len();
                    inner.base += 1;
                    freed = true;
                }
                None => {
                    inner.base = floor + 1;
                    break;
                }
            }
        }
        metrics::gauge!(syncs_engine::stats::PROXY_PENDING).set(inner.records.len() as f64);
        drop(inner);
        if freed {
            self.room.notify_waiters();
        }
    }

    /// The highest sequence `dest` has acknowledged.
    pub fn acked(&self, dest: usize) -> u64 {
        self.lock().acked.get(dest).copied().unwrap_or(0)
    }

    /// Records not yet acknowledged by every destination.
    pub fn pending(&self) -> usize {
        self.lock().records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_leave_when_every_destination_acked() {
        let q = Queue::new(2, 1 << 20);
        for i in 0..5u8 {
            assert_eq!(q.push(Bytes::from(vec![i])).await, u64::from(i) + 1);
        }
        let (first, recs) = q.read(2, 2, 1 << 20);
        assert_eq!((first, recs.len()), (2, 2));
        q.ack(0, 4);
        assert_eq!(q.pending(), 5);
        q.ack(1, 3);
        assert_eq!(q.pending(), 2);
        let (first, recs) = q.read(1, 10, 1 << 20);
        assert_eq!(
            (first, recs),
            (4, vec![Bytes::from(vec![3u8]), Bytes::from(vec![4u8])])
        );
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let q = std::sync::Arc::new(Queue::new(1, 4));
        q.push(Bytes::from_static(b"abcd")).await;
        let q2 = std::sync::Arc::clone(&q);
        let blocked = tokio::spawn(async move { q2.push(Bytes::from_static(b"ef")).await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        q.ack(0, 1);
        assert_eq!(blocked.await.expect("joined"), 2);
    }
}
