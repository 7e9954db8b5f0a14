//! One client library connection on the unix socket.
//!
//! Frames are cut from the byte stream and validated with the engine's
//! decoder; the valid ones of each read are appended to the spool together
//! (one fsync covers them). A bad frame is counted and the stream goes on
//! with the next one; its log line is paced per reason across all clients
//! (the `LogThrottle` pace: the first, then one per 10 s with the number
//! held back). An oversized length prefix is skipped
//! without buffering its payload, so the stream stays in step.
//!
//! A SYNC control frame is answered on the same socket once every frame
//! before it is in the spool, with the number of frames refused since the
//! previous SYNC: that is how a client learns its writes are safe.
//!
//! A client may offer a pipe with its first bytes and SWITCH to it (see
//! [`super::pipe`]): the frames then come through the pipe, the replies
//! still go on the socket.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};
use syncs_engine::stats;
use syncs_engine::wire::client::{
    check_payload, parse_control, sync_reply, Control, FrameDecoder, FrameError, Framed,
    CONTROL_MARK, MONGO_JSON_MARK, MONGO_MARK,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::pipe::{self, Input};
use super::spool::{Spool, SpoolError};
use crate::log_throttle::LogThrottles;
use crate::telemetry::GaugeHeld;

/// Bytes asked of the socket per read, at least.
const READ_CHUNK: usize = 64 * 1024;

/// What every client connection shares: the frame size limit, one budget
/// for the large frames being read from all clients together, and the pace
/// of the log lines about refused frames.
#[derive(Debug, Clone)]
pub struct Limits {
    max_frame: u32,
    /// Permits are bytes.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// Per `reason` label of a refused frame.
    refusal_logs: Arc<LogThrottles>,
}

impl Limits {
    pub fn new(max_frame: u32, budget: usize) -> Self {
        // Each frame is reserved whole, so the budget must hold the largest.
        let budget_bytes = budget
            .max(max_frame as usize + 4)
            .min(Semaphore::MAX_PERMITS);
        Self {
            max_frame,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            refusal_logs: Arc::default(),
        }
    }

    /// Reserves `total` bytes of the budget for one frame in progress; waits
    /// while other clients' frames hold it. A frame is reserved whole, at
    /// once, so frames in progress always complete and no set of clients
    /// can wait on each other.
    /// While it waits, it counts in `syncs_proxy_frame_budget_waiting`.
    async fn reserve(&self, total: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(total.min(self.budget_bytes)).ok()?;
        if let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(n) {
            return Some(permit);
        }
        let _waiting = GaugeHeld::new(stats::PROXY_FRAME_BUDGET_WAITING);
        Arc::clone(&self.budget).acquire_many_owned(n).await.ok()
    }
}

pub async fn serve(
    mut sock: UnixStream,
    spool: Arc<Spool>,
    limits: Limits,
    stop: CancellationToken,
) {
    let max_frame = limits.max_frame;
    let peer = peer_pid(&sock);
    metrics::gauge!(stats::PROXY_CLIENTS).increment(1.0);
    let mut conn = Conn {
        spool,
        peer,
        refusal_logs: Arc::clone(&limits.refusal_logs),
        refused_since_sync: 0,
        accepted: Vec::new(),
        inflight: FuturesOrdered::new(),
        inflight_bytes: 0,
        admitted_upto: 0,
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = FrameDecoder::new(max_frame);
    // The budget held for the large frame in progress: (its size, permit).
    let mut held: Option<(usize, OwnedSemaphorePermit)> = None;
    // The first read takes a pipe offer's descriptor with the bytes.
    let mut first = true;
    // The pipe taken from the client's offer, until its SWITCH.
    let mut offered: Option<tokio::net::unix::pipe::Receiver> = None;
    let mut input = Input::Socket;
    // Reading from the pipe, the socket is watched for the client's close.
    let mut socket_open = true;
    // Once the client closed its socket (or it failed, or the proxy
    // stops): the reads left, each of what is there now, before the end.
    let mut drain: Option<usize> = None;
    // When the batches still in flight are looked at again if nothing is
    // read before then (they are not waited for: see `SETTLE_LAG`).
    let settle = tokio::time::sleep(SETTLE_LAG);
    tokio::pin!(settle);
    let mut settle_armed = false;
    loop {
        // Frames are split off the front of `buf`, which leaves it less
        // room each time: make room for a full-size read again (reuses
        // the allocation once the split-off frames are released).
        buf.reserve(READ_CHUNK);
        // What is done since the last read is counted, and no longer counts
        // against the bound (nor asks for an fsync out of the spacing).
        // The batches left are polled with a waker that does nothing, so
        // their completion does not wake this task.
        conn.settle_ready();
        if conn.at_bound() {
            while conn.at_bound() {
                conn.hurry();
                conn.settle_one().await;
            }
            // `settle_one` left this task's waker with the batches left.
            conn.settle_ready();
        }
        if conn.inflight.is_empty() {
            settle_armed = false;
        } else if !settle_armed {
            // A deadline still ahead (at most `SETTLE_LAG` away) is kept:
            // no timer reset per quiet spell.
            if settle.is_elapsed() {
                settle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SETTLE_LAG);
            }
            settle_armed = true;
        }
        // A large frame in progress: its bytes count against the shared
        // budget, reserved whole before more of it is read.
        match decoder.pending(&buf) {
            Some(total) if total > READ_CHUNK => {
                if held.as_ref().is_none_or(|(t, _)| *t != total) {
                    // The previous frame's share goes back first.
                    drop(held.take());
                    // Not cut short by a stop: the connections holding the
                    // budget end soon after it (each reads what is there
                    // and ends), and what this client wrote is taken then.
                    held = limits.reserve(total).await.map(|permit| (total, permit));
                }
            }
            _ => held = None,
        }
        let read = if first {
            first = false;
            let read = tokio::select! {
                _ = stop.cancelled() => break,
                r = pipe::first_read(&mut sock, &mut buf, READ_CHUNK, peer, &limits.refusal_logs) => r,
            };
            read.map(|(n, rx)| {
                offered = rx;
                n
            })
        } else if let Some(left) = drain.as_mut() {
            match left.checked_sub(1) {
                Some(l) => {
                    *left = l;
                    input.read_now(&sock, &mut buf, READ_CHUNK)
                }
                None => Ok(0),
            }
        } else {
            let mut stray = [0u8; 512];
            tokio::select! {
                // Stopping: what the client wrote so far is taken.
                _ = stop.cancelled() => {
                    drain = Some(MAX_DRAIN_READS);
                    continue;
                }
                () = &mut settle, if settle_armed => {
                    settle_armed = false;
                    continue;
                }
                r = input.read_buf(&sock, &mut buf) => r,
                r = sock.readable(), if socket_open && matches!(input, Input::Pipe(_)) => {
                    // After a SWITCH nothing more comes on the socket but
                    // its close. The client wrote every frame into the
                    // pipe before closing it: what is in the pipe then is
                    // the rest. (Waiting for the pipe's end instead would
                    // wait for ever on a pipe that has another writer.)
                    match r.and_then(|()| sock.try_read(&mut stray)) {
                        Ok(0) => {
                            socket_open = false;
                            drain = Some(MAX_DRAIN_READS);
                        }
                        Ok(_) => conn.refuse_after_switch(),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            socket_open = false;
                            drain = Some(MAX_DRAIN_READS);
                        }
                    }
                    continue;
                }
            }
        };
        let ended = match read {
            Ok(n) => n == 0,
            // The client closed with a reply it had not read (a PIPE
            // reply, say): its bytes were all read before this.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => {
                tracing::warn!(?peer, "client read failed: {e}");
                true
            }
        };
        if ended {
            if !decoder.is_idle(&buf) {
                conn.truncated(buf.len());
            }
            break;
        }
        // A large frame split off `buf` shares its allocation with what is
        // left of `buf`: once one was decoded, the rest moves to a buffer
        // of its own, so that the large allocation lives only as long as
        // that frame, not as long as the connection.
        let mut large_done = false;
        while let Some(item) = decoder.decode(&mut buf) {
            if matches!(&item, Framed::Frame(p) if p.len() > READ_CHUNK) {
                large_done = true;
            }
            match item {
                Framed::Frame(payload) if payload.first() == Some(&CONTROL_MARK) => {
                    let control = parse_control(&payload);
                    if control == Some(Control::Switch) {
                        if let Some(rx) = offered.take() {
                            // Frames come through the pipe from here on;
                            // none may follow the SWITCH on the socket.
                            input = Input::Pipe(rx);
                            if !buf.is_empty() {
                                buf.clear();
                                conn.refuse_after_switch();
                            }
                            break;
                        }
                    }
                    let Some(Control::Sync(token)) = control else {
                        if let Some(suppressed) = conn.refuse("bad_control") {
                            tracing::warn!(
                                ?peer,
                                more_since_last_line = suppressed,
                                "unknown control frame refused (or a SWITCH without a pipe)"
                            );
                        }
                        continue;
                    };
                    // Everything before the SYNC must be in the spool.
                    conn.admit().await;
                    conn.hurry();
                    conn.settle_all().await;
                    let reply = sync_reply(token, conn.refused_since_sync);
                    conn.refused_since_sync = 0;
                    if !socket_open {
                        continue;
                    }
                    if let Err(e) = answer(&mut sock, &reply, &stop).await {
                        // Gone, or not reading: what it wrote before is
                        // taken, and the connection ends.
                        tracing::warn!(?peer, "cannot answer a SYNC: {e}");
                        socket_open = false;
                        drain.get_or_insert(MAX_DRAIN_READS);
                    }
                }
                Framed::Frame(payload) => match validate(&payload) {
                    Ok(kind) => conn.accepted.push((payload, kind)),
                    Err(e) => {
                        if let Some(suppressed) = conn.refuse(e.reason()) {
                            tracing::warn!(
                                ?peer,
                                reason = e.reason(),
                                more_since_last_line = suppressed,
                                "bad frame refused: {e}"
                            );
                        }
                    }
                },
                Framed::Oversize { len } => {
                    if let Some(suppressed) = conn.refuse("oversize") {
                        tracing::warn!(
                            ?peer,
                            len,
                            max_frame,
                            more_since_last_line = suppressed,
                            "frame larger than max_frame refused; its bytes are skipped"
                        );
                    }
                }
            }
        }
        if large_done {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(buf.len()));
            fresh.extend_from_slice(&buf);
            buf = fresh;
        }
        conn.admit().await;
    }
    // What was admitted is in the writer's hands whatever happens to this
    // client; wait for the outcomes so that the counters are right.
    conn.settle_all().await;
    metrics::gauge!(stats::PROXY_CLIENTS).decrement(1.0);
}

/// How long a SYNC's reply may wait for the client to read its earlier
/// ones, at most: a socket's buffer holds hundreds of them, so a client
/// that stays this far behind is not reading them at all.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes a SYNC's reply, unless the client leaves it unread past
/// [`REPLY_TIMEOUT`] or the proxy stops meanwhile: a connection is not
/// held for ever by a client that does not read (nor is the proxy's stop).
async fn answer(
    sock: &mut UnixStream,
    reply: &[u8],
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let write = tokio::time::timeout(REPLY_TIMEOUT, sock.write_all(reply));
    tokio::select! {
        // A reply the socket takes now is written, stopping or not.
        biased;
        r = write => r.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read no reply for {REPLY_TIMEOUT:?}"),
            ))
        }),
        () = stop.cancelled() => Err(std::io::Error::other(
            "the proxy stops, and the client reads no reply",
        )),
    }
}

/// Checks a payload as the server will decode it (the same payloads
/// accepted, the same errors); returns its kind for the metrics. Redis
/// and BSON Mongo payloads are checked in place, without building the
/// operation; both formats of the original system are checked too (and
/// forwarded as they are: the server decodes them to the same operations).
fn validate(payload: &Bytes) -> Result<&'static str, FrameError> {
    let kind = match payload.first() {
        Some(&MONGO_MARK | &MONGO_JSON_MARK) => "mongo",
        _ => "redis",
    };
    check_payload(payload).map(|()| kind)
}

/// Reads of what a client wrote before it closed (or before the proxy
/// stopped), at most: more than a full pipe's 256 KiB in 64 KiB reads,
/// and a bound on a writer that goes on.
const MAX_DRAIN_READS: usize = 16;

/// What one connection may have admitted to the spool and not yet seen
/// durable, at most, in batches (one per read) and in bytes: past either
/// the connection stops reading until the oldest batch is durable. The
/// bytes bound what waits in the writer's queue when the disk is slow
/// (as the former bound of 64 batches did with full 64 KiB reads); the
/// batches bound the bookkeeping. An fsync that stalls (20–30 ms while
/// the file system frees a deleted segment) must not stop the reading,
/// since records become readable, and are replicated, before their
/// fsync: 64 batches of an unbuffered client at 100,000 writes/s were
/// under a millisecond of its writes, and stopped replication with it.
const MAX_INFLIGHT_BATCHES: usize = 4096;
const MAX_INFLIGHT_BYTES: usize = 4 << 20;

/// How late a connection that reads nothing more looks at the batches it
/// admitted, at most. A connection does not wait for its batches to be
/// durable (only a SYNC, or its bound of batches in flight, waits): it
/// looks at them whenever it reads, and counts those done then. Waiting
/// for each one woke it once more per record at a steady rate, where each
/// read is one record (its own batch), for nothing but a counter: ~20 µs
/// of CPU per wake-up on a VM. So `syncs_proxy_frames_accepted` and the
/// spool's refusals (`spool_full`, ...) are counted up to this late.
const SETTLE_LAG: std::time::Duration = std::time::Duration::from_millis(50);

/// A settled batch: an outcome and a kind per record, and its bytes.
type Settled = (Vec<Result<u64, SpoolError>>, Vec<&'static str>, usize);

/// One client connection's bookkeeping.
struct Conn {
    spool: Arc<Spool>,
    peer: Option<i32>,
    refusal_logs: Arc<LogThrottles>,
    refused_since_sync: u32,
    /// Valid frames of the current read, not yet admitted.
    accepted: Vec<(Bytes, &'static str)>,
    /// Admitted batches waiting to be durable, oldest first.
    inflight: FuturesOrdered<BoxFuture<'static, Settled>>,
    /// Bytes of the records in `inflight`.
    inflight_bytes: usize,
    /// The newest sequence admitted.
    admitted_upto: u64,
}

impl Conn {
    /// Counts a refused frame (every one, in the metric and for the next
    /// SYNC); `Some(held back)` when its log line is due, see
    /// [`LogThrottles::due`].
    #[must_use = "the caller logs the refusal when it is due"]
    fn refuse(&mut self, reason: &'static str) -> Option<u64> {
        self.refused_since_sync = self.refused_since_sync.saturating_add(1);
        metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => reason).increment(1);
        self.refusal_logs.due(reason)
    }

    /// Counts (and logs, when due) the frame a connection ends in the
    /// middle of, `bytes` of it read: the client closed, its connection
    /// failed, or the proxy stops.
    fn truncated(&mut self, bytes: usize) {
        if let Some(suppressed) = self.refuse("truncated") {
            tracing::warn!(
                peer = ?self.peer,
                bytes,
                more_since_last_line = suppressed,
                "connection ended in the middle of a frame (the client closed, or the proxy stops); partial frame discarded"
            );
        }
    }

    /// Counts (and logs, when due) bytes a client sent on its socket after
    /// its SWITCH to the pipe: they are discarded.
    fn refuse_after_switch(&mut self) {
        if let Some(suppressed) = self.refuse("after_switch") {
            tracing::warn!(
                peer = ?self.peer,
                more_since_last_line = suppressed,
                "bytes on the socket after a SWITCH to the pipe: discarded"
            );
        }
    }

    /// Hands the accepted frames to the spool (they get their sequences
    /// now, in order) without waiting for them to be durable.
    async fn admit(&mut self) {
        if self.accepted.is_empty() {
            return;
        }
        let (records, kinds): (Vec<Bytes>, Vec<&'static str>) = self.accepted.drain(..).unzip();
        let records = compact(records);
        let bytes = records.iter().map(Bytes::len).sum();
        self.inflight_bytes += bytes;
        let receipt = self.spool.admit_batch(records).await;
        self.admitted_upto = receipt.upto().unwrap_or(self.admitted_upto);
        self.inflight.push_back(Box::pin(
            async move { (receipt.wait().await, kinds, bytes) },
        ));
    }

    /// This connection waits for what it admitted to be durable: its
    /// fsync is not held back by the fsync spacing.
    fn hurry(&self) {
        if !self.inflight.is_empty() {
            self.spool.hurry(self.admitted_upto);
        }
    }

    /// Counts the batches done by now, oldest first, without waiting. The
    /// batches still in flight are then polled with a waker that does
    /// nothing: their completion wakes no one.
    fn settle_ready(&mut self) {
        while let Some(Some(done)) = self.inflight.next().now_or_never() {
            self.account(done);
        }
    }

    /// Whether the batches in flight reached [`MAX_INFLIGHT_BATCHES`] or
    /// [`MAX_INFLIGHT_BYTES`]: nothing more is read until one is durable.
    fn at_bound(&self) -> bool {
        self.inflight.len() >= MAX_INFLIGHT_BATCHES || self.inflight_bytes >= MAX_INFLIGHT_BYTES
    }

    async fn settle_one(&mut self) {
        if let Some(done) = self.inflight.next().await {
            self.account(done);
        }
    }

    async fn settle_all(&mut self) {
        while let Some(done) = self.inflight.next().await {
            self.account(done);
        }
    }

    /// Counts a settled batch: accepted, or refused by the spool.
    fn account(&mut self, (results, kinds, bytes): Settled) {
        self.inflight_bytes -= bytes;
        // Accepted frames are counted per kind once per batch: a registry
        // lookup per frame was ~6% of the proxy's CPU.
        let mut accepted: Vec<(&'static str, u64)> = Vec::new();
        for (kind, result) in kinds.into_iter().zip(results) {
            match result {
                Ok(_) => match accepted.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => accepted.push((kind, 1)),
                },
                Err(e) => {
                    let reason = match e {
                        SpoolError::Full { .. } => "spool_full",
                        SpoolError::TooLarge { .. } => "spool_too_large",
                        _ => "spool_failed",
                    };
                    if let Some(suppressed) = self.refuse(reason) {
                        tracing::error!(
                            peer = ?self.peer,
                            reason,
                            more_since_last_line = suppressed,
                            "frame not accepted: {e}"
                        );
                    }
                }
            }
        }
        for (kind, n) in accepted {
            metrics::counter!(stats::PROXY_FRAMES_ACCEPTED, "kind" => kind).increment(n);
        }
    }
}

/// Copies the frames of one read into one allocation of their exact size.
///
/// A frame cut from the read buffer shares that buffer's whole 64 KiB
/// allocation, and the spool keeps recent records in memory: one small
/// frame per read (an unbuffered client) would pin 64 KiB for each cached
/// record, hundreds of times its size, and force a new read buffer for
/// every read. One copy of the read's frames (at most one read's bytes)
/// frees the read buffer for reuse and bounds the spool's memory by the
/// bytes it counts.
///
/// A frame larger than one read has an allocation of its own once the
/// read buffer is renewed after it (see `serve`): it is kept as it is, not
/// copied.
fn compact(mut records: Vec<Bytes>) -> Vec<Bytes> {
    let small = |r: &Bytes| r.len() <= READ_CHUNK;
    let total = records.iter().filter(|r| small(r)).map(Bytes::len).sum();
    let mut arena = BytesMut::with_capacity(total);
    for r in records.iter().filter(|r| small(r)) {
        arena.extend_from_slice(r);
    }
    let mut arena = arena.freeze();
    for r in records.iter_mut().filter(|r| small(r)) {
        *r = arena.split_to(r.len());
    }
    records
}

/// The client's pid, for log lines (Linux peer credentials).
fn peer_pid(sock: &UnixStream) -> Option<i32> {
    sock.peer_cred().ok().and_then(|c| c.pid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn compacted_frames_keep_their_bytes_and_free_the_read_buffer() {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.extend_from_slice(b"firstsecond frame3");
        let frames = vec![
            buf.split_to(5).freeze(),
            buf.split_to(12).freeze(),
            buf.split_to(1).freeze(),
        ];
        let compacted = compact(frames.clone());
        assert_eq!(compacted, frames);
        drop(frames);
        // Nothing points into the read buffer's allocation any more: it is
        // reused in place for the next read, while the compacted frames
        // live on in their own allocation.
        assert!(buf.try_reclaim(READ_CHUNK));
        assert_eq!(&compacted[1][..], b"second frame");
    }

    #[test]
    fn a_large_frame_is_kept_as_it_is_and_small_ones_are_compacted() {
        let big = Bytes::from(vec![7u8; READ_CHUNK + 1]);
        let frames = vec![
            Bytes::from_static(b"a"),
            big.clone(),
            Bytes::from_static(b"bc"),
        ];
        let compacted = compact(frames.clone());
        assert_eq!(compacted, frames);
        // Not copied: the same allocation.
        assert_eq!(compacted[1].as_ptr(), big.as_ptr());
        assert_eq!(compacted[2].as_ptr(), compacted[0].as_ptr().wrapping_add(1));
    }

    #[test]
    fn compacting_nothing_is_nothing() {
        assert!(compact(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn a_connection_reads_on_while_fsyncs_are_held() {
        use std::time::Duration;
        use syncs_engine::wire::client::{
            parse_sync_reply, redis_frame, sync_request, SYNC_REPLY_LEN,
        };

        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(
            Spool::open(super::super::spool::SpoolConfig::new(dir.path()), 1).expect("open"),
        );
        let (mut client, server) = UnixStream::pair().expect("socket pair");
        let stop = CancellationToken::new();
        let conn = tokio::spawn(serve(
            server,
            Arc::clone(&spool),
            Limits::new(1 << 20, 1 << 20),
            stop.clone(),
        ));
        let fsyncs = spool.hold_fsyncs().await;
        let mut readable = spool.subscribe();
        // One frame at a time, each readable before the next is sent: a
        // read and a batch each, none of them durable. The connection
        // once stopped reading at 64 such batches, and replication (which
        // reads records before their fsync) stopped with it.
        for i in 1..=200u64 {
            let key = format!("k{i}");
            let frame = redis_frame(6379, 0, &[[b"SET".as_slice(), key.as_bytes(), b"v"]]);
            client.write_all(&frame).await.expect("write");
            tokio::time::timeout(Duration::from_secs(10), readable.wait_for(|v| *v >= i))
                .await
                .unwrap_or_else(|_| panic!("frame {i} not readable while the fsyncs are held"))
                .expect("spool open");
        }
        drop(fsyncs);
        // Answered once all of them are durable.
        client.write_all(&sync_request(7)).await.expect("write");
        let mut reply = [0u8; SYNC_REPLY_LEN];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut reply))
            .await
            .expect("SYNC answered")
            .expect("read");
        assert_eq!(parse_sync_reply(&reply), Some((7, 0)));
        assert_eq!(spool.last(), 200);
        stop.cancel();
        conn.await.expect("connection task");
    }
}
