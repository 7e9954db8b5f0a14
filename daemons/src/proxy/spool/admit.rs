//! Admission: pushes take their turn, get their sequences, wait for room
//! at the disk cap (or are refused, per `when_full`), and hand their
//! records to the writer; a [`Receipt`] tells how each one ended.

use bytes::Bytes;
use syncs_engine::stats;
use tokio::sync::oneshot;

use super::config::WhenFull;
use super::format::{now_ms, record_size, MAX_RECORD, RECORD_HEADER, SEGMENT_HEADER};
use super::writer::{Append, Cmd};
use super::{Spool, SpoolError};

/// Records in one request to the writer, at most (the writer's round
/// takes several requests).
const MAX_APPENDS_PER_REQUEST: usize = 1024;

/// Records handed to the spool's writer by [`Spool::admit_batch`]; `wait`
/// tells how each one ended.
#[derive(Debug)]
pub struct Receipt {
    out: Vec<Option<Result<u64, SpoolError>>>,
    /// (index in `out`, sequence) of the records handed to the writer.
    sent: Vec<(usize, u64)>,
    /// The writer's answers: each covers `sent` up to its index.
    answers: Vec<(usize, oneshot::Receiver<Result<(), String>>)>,
}

impl Receipt {
    /// The newest sequence handed to the writer, if any was.
    pub fn upto(&self) -> Option<u64> {
        self.sent.last().map(|&(_, seq)| seq)
    }

    /// One outcome per record, in order: its sequence once durable per
    /// the fsync policy, or why it was refused.
    pub async fn wait(self) -> Vec<Result<u64, SpoolError>> {
        let Receipt {
            mut out,
            sent,
            answers,
        } = self;
        let mut from = 0;
        for (upto, rx) in answers {
            let outcome = rx
                .await
                .unwrap_or_else(|_| Err("the writer thread is gone".into()));
            for &(i, seq) in sent.get(from..upto).unwrap_or_default() {
                out[i] = Some(match &outcome {
                    Ok(()) => Ok(seq),
                    Err(why) => Err(SpoolError::Failed(why.clone())),
                });
            }
            from = upto;
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Err(SpoolError::Failed("internal error: no outcome".into())))
            })
            .collect()
    }
}

impl Spool {
    /// Appends a record; returns its sequence once it is durable per the
    /// fsync policy. At the disk cap, waits or fails per `when_full`.
    /// Concurrent pushes get sequences in the order they were first
    /// polled, and share fsyncs.
    pub async fn push(&self, record: Bytes) -> Result<u64, SpoolError> {
        self.push_batch(vec![record])
            .await
            .pop()
            .unwrap_or_else(|| Err(SpoolError::Failed("internal error: no outcome".into())))
    }

    /// Appends records in order, as `push` does each of them, with one
    /// round trip to the writer for all that fit: the cheap way to push
    /// what one client read brought. Returns one outcome per record, in
    /// order; the sequences of the accepted ones are consecutive unless
    /// the spool refused some on the way (disk cap under `Refuse`).
    pub async fn push_batch(&self, records: Vec<Bytes>) -> Vec<Result<u64, SpoolError>> {
        self.admit_batch(records).await.wait().await
    }

    /// Somebody waits for every record up to `upto` to be durable (a
    /// client's SYNC): their fsync is not held back by the fsync spacing.
    pub fn hurry(&self, upto: u64) {
        self.shared.hurry.ask(upto);
    }

    /// The first half of [`Spool::push_batch`]: returns once every record
    /// has its sequence (or its refusal) and is in the writer's hands,
    /// without waiting for the write. Records of successive calls keep
    /// the order of the calls. The caller may go on (read more from its
    /// client) and await [`Receipt::wait`] later: that is how one client
    /// connection keeps the writer busy while an fsync is under way.
    pub async fn admit_batch(&self, records: Vec<Bytes>) -> Receipt {
        let limits = self.shared.limits;
        // Room for a record beside the newest segment's header and a new
        // segment's header.
        let room = limits.max_bytes - 2 * SEGMENT_HEADER;
        let mut out: Vec<Option<Result<u64, SpoolError>>> = Vec::with_capacity(records.len());
        let mut todo = Vec::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            let size = record_size(record.len());
            if record.len() as u64 > MAX_RECORD || size > room {
                out.push(Some(Err(SpoolError::TooLarge {
                    len: record.len() as u64,
                    max: (room - RECORD_HEADER).min(MAX_RECORD),
                })));
            } else {
                out.push(None);
                todo.push((i, record, size));
            }
        }
        // (index in `out`, sequence) of the records handed to the writer,
        // and the writer's answers to wait for.
        let mut sent: Vec<(usize, u64)> = Vec::with_capacity(todo.len());
        let mut answers = Vec::new();
        let admit = self.admit.lock().await;
        let mut todo = todo.into_iter().peekable();
        let mut counted = false;
        let mut waited_for_roll = false;
        while todo.peek().is_some() {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if let Some(why) = &st.failed {
                    let why = why.clone();
                    for (i, _, _) in todo.by_ref() {
                        out[i] = Some(Err(SpoolError::Failed(why.clone())));
                    }
                    break;
                }
                // Every record that fits now goes in one request, with
                // one time (a clock read per record was ~2% of the
                // proxy's CPU under an unbuffered client).
                let first_sent = sent.len();
                let mut appends = Vec::with_capacity(todo.len().min(MAX_APPENDS_PER_REQUEST));
                let time_ms = now_ms();
                while let Some((_, _, size)) = todo.peek() {
                    let used = st.disk_bytes + st.reserved;
                    if used + size + SEGMENT_HEADER > limits.max_bytes
                        || appends.len() >= MAX_APPENDS_PER_REQUEST
                    {
                        break;
                    }
                    let Some((i, data, size)) = todo.next() else {
                        break;
                    };
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    st.reserved += size;
                    sent.push((i, seq));
                    appends.push(Append {
                        seq,
                        data,
                        time_ms,
                        size,
                    });
                }
                if !appends.is_empty() {
                    let (tx, rx) = oneshot::channel();
                    // Sent under the lock: the writer gets records in
                    // sequence order.
                    if self.cmds.send(Cmd::Append(appends, tx)).is_err() {
                        let why = "the writer thread is gone".to_owned();
                        for (i, _) in sent.drain(first_sent..) {
                            out[i] = Some(Err(SpoolError::Failed(why.clone())));
                        }
                        st.failed = Some(why);
                        continue;
                    }
                    answers.push((sent.len(), rx));
                    counted = false;
                    waited_for_roll = false;
                    continue;
                }
                // Full. If all the newest segment holds is acknowledged,
                // closing it lets it be deleted.
                let used = st.disk_bytes + st.reserved;
                let newest_acked =
                    st.floor >= st.written && st.segments.back().is_some_and(|s| !s.is_empty());
                if newest_acked && !st.roll_requested && self.cmds.send(Cmd::Roll).is_ok() {
                    st.roll_requested = true;
                }
                // Stopping, nothing is held at the cap: see `stop_waiting`.
                let policy = if st.stopping {
                    WhenFull::Refuse
                } else {
                    limits.when_full
                };
                match policy {
                    // Refuse at once, unless the early close of the newest
                    // segment is about to free room.
                    WhenFull::Refuse if waited_for_roll || !st.roll_requested => {
                        self.full(used, policy);
                        if let Some((i, _, _)) = todo.next() {
                            out[i] = Some(Err(SpoolError::Full {
                                used,
                                max: limits.max_bytes,
                            }));
                        }
                        continue;
                    }
                    WhenFull::Refuse => {}
                    WhenFull::Block if !counted => {
                        counted = true;
                        self.full(used, policy);
                    }
                    WhenFull::Block => {}
                }
                waited_for_roll = st.roll_requested;
            }
            notified.await;
        }
        drop(admit);
        Receipt { out, sent, answers }
    }

    /// Counts and logs (when due) a push at the disk cap, which `policy`
    /// (the configured one, or `Refuse` when stopping) holds or refuses.
    fn full(&self, used: u64, policy: WhenFull) {
        let limits = self.shared.limits;
        metrics::counter!(stats::PROXY_SPOOL_FULL, "policy" => limits.when_full.label())
            .increment(1);
        if let Some(suppressed) = self.shared.full_logged.due() {
            let doing = match (policy, limits.when_full) {
                (WhenFull::Block, _) => "pushes wait (clients are slowed down)",
                (WhenFull::Refuse, WhenFull::Refuse) => "records are refused",
                (WhenFull::Refuse, WhenFull::Block) => {
                    "the proxy stops: records are refused, no longer held"
                }
            };
            tracing::warn!(
                dir = %self.shared.dir.display(), used, max_bytes = limits.max_bytes,
                more_since_last_line = suppressed,
                "spool at its disk cap: {doing} until the servers acknowledge"
            );
        }
    }
}
