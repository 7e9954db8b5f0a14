//! The SYNC exchange: "answer once every frame I sent before this is in
//! your spool".
//!
//! The request is written under the connection's lock, so it follows every
//! frame sent before the call and precedes every frame sent after it. The
//! answer is awaited without the lock: other threads go on sending (and
//! flushing) on the same stream while one thread waits, and only the SYNC
//! exchange reads from the stream. One SYNC per process is in flight at a
//! time ([`InFlight`]); a second `sync` waits for its turn, within its own
//! timeout.
//!
//! What a SYNC answers for is counted, not assumed: the frames on the
//! stream when its request went out move from `Open::unconfirmed` to
//! [`InFlight::frames`], and only its answer settles them (confirmed, or
//! lost). Frames sent meanwhile stay unconfirmed for the next SYNC.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncs_engine::wire::client::{
    parse_pipe_reply, parse_sync_reply, pipe_reply, sync_request, LEN_PREFIX, PIPE_REPLY_LEN,
    SYNC_REPLY_LEN,
};

use super::stats::Counters;
use super::{Inner, State};
use crate::error::ClientError;

/// The SYNC a thread of this process waits for.
#[derive(Debug)]
pub(super) struct InFlight {
    /// The process of the waiting thread: a child of `fork()` ignores its
    /// parent's SYNC (that thread does not exist in the child).
    pid: u32,
    /// Frames written on that stream before the request, not confirmed by
    /// an earlier SYNC: what this SYNC confirms, or loses.
    frames: u64,
}

impl Inner {
    /// [`super::Connection::sync`].
    pub(super) fn sync(&self, timeout: Duration) -> Result<u32, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "the sync timeout must be above zero".into(),
            ));
        }
        // None: a timeout too long to add to the clock, so no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let (stream, token) = self.send_request(deadline, timeout)?;
        let mut turn = Turn {
            inner: self,
            stream,
            confirmed: false,
        };
        let answer = self.read_answer(&turn.stream, token, deadline, timeout);
        turn.confirmed = answer.is_ok();
        drop(turn);
        if answer.is_err() {
            Counters::bump(&self.counters.errors, 1);
        }
        answer
    }

    /// Under the lock: waits for this process's SYNC in flight to end,
    /// flushes the buffer, reports frames lost earlier, writes the request
    /// and records it as in flight. Returns the stream to read the answer
    /// from and the request's token. Counts its errors, except a failed
    /// connect.
    fn send_request(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<(Arc<UnixStream>, u64), ClientError> {
        let pid = crate::fork::pid();
        let mut state = self.lock();
        while state.in_flight.as_ref().is_some_and(|f| f.pid == pid) {
            state = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                Some(left) if left.is_zero() => {
                    Counters::bump(&self.counters.errors, 1);
                    return Err(self.unconfirmed(format!(
                        "no answer within {timeout:?}: another sync on this connection was still waiting for its own"
                    )));
                }
                Some(left) => self.wait_timeout(&self.synced, state, left),
                None => self.wait_timeout(&self.synced, state, timeout),
            };
        }
        if let Err(e) = self.flush_locked(&mut state) {
            Counters::bump(&self.counters.errors, 1);
            return Err(e);
        }
        state.deferred = None;
        let lost = std::mem::take(&mut state.lost);
        let open = state.take_own_open(pid);
        if lost > 0 {
            state.open = open;
            Counters::bump(&self.counters.errors, 1);
            return Err(self.unconfirmed(format!(
                "{lost} frame(s) went out on a connection that broke before they were confirmed, or were dropped from the buffer when a write failed; they may or may not be in the spool"
            )));
        }
        let mut open = match open {
            Some(open) => open,
            None => self.connect(&state.config, pid)?,
        };
        state.token = state.token.wrapping_add(1);
        let token = state.token;
        let request = sync_request(token);
        let timeout = state.config.send_timeout;
        if let Err((_, e)) = open.pipe.write(&open.stream, &request, timeout, true) {
            // The stream's state is unknown: drop it, and the frames it
            // carried stay unconfirmed.
            state.drop_open(open);
            Counters::bump(&self.counters.errors, 1);
            return Err(self.unconfirmed(format!("sending the SYNC: {e}")));
        }
        let stream = Arc::clone(&open.stream);
        state.in_flight = Some(InFlight {
            pid,
            frames: std::mem::take(&mut open.unconfirmed),
        });
        state.open = Some(open);
        Ok((stream, token))
    }

    /// Without the lock: reads the answer to the request `token`.
    fn read_answer(
        &self,
        stream: &UnixStream,
        token: u64,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<u32, ClientError> {
        let no_answer = || self.unconfirmed(format!("no answer within {timeout:?}"));
        let left = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(left) if left.is_zero() => return Err(no_answer()),
            Some(left) => left,
            None => timeout,
        };
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| self.unconfirmed(format!("setting the read timeout: {e}")))?;
        let mut reply = [0u8; SYNC_REPLY_LEN];
        let mut reader = stream;
        let mut read = |into: &mut [u8]| {
            reader.read_exact(into).map_err(|e| {
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    no_answer()
                } else {
                    self.unconfirmed(format!("reading the answer: {e}"))
                }
            })
        };
        read(&mut reply[..LEN_PREFIX])?;
        // The proxy's PIPE reply precedes every SYNC answer: a pipe offer
        // the sends gave up on (see pipe.rs) may still be answered.
        if reply[..LEN_PREFIX] == pipe_reply()[..LEN_PREFIX] {
            let mut pipe = [0u8; PIPE_REPLY_LEN];
            pipe[..LEN_PREFIX].copy_from_slice(&reply[..LEN_PREFIX]);
            read(&mut pipe[LEN_PREFIX..])?;
            if parse_pipe_reply(&pipe).is_none() {
                return Err(
                    self.unconfirmed("the proxy's answer is not the SYNC reply expected".into())
                );
            }
            read(&mut reply[..LEN_PREFIX])?;
        }
        read(&mut reply[LEN_PREFIX..])?;
        match parse_sync_reply(&reply) {
            Some((t, refused)) if t == token => Ok(refused),
            _ => Err(self.unconfirmed("the proxy's answer is not the SYNC reply expected".into())),
        }
    }
}

impl State {
    /// Settles this process's SYNC in flight on `stream`: its frames are
    /// confirmed, or lost with the stream, whose state is then unknown
    /// (frames written on it after the request are lost too).
    fn settle(&mut self, stream: &Arc<UnixStream>, confirmed: bool) {
        let pid = crate::fork::pid();
        let Some(in_flight) = self.in_flight.take_if(|f| f.pid == pid) else {
            return;
        };
        if confirmed {
            return;
        }
        self.lost += in_flight.frames;
        if let Some(open) = self.open.take_if(|o| Arc::ptr_eq(&o.stream, stream)) {
            self.drop_open(open);
        }
    }
}

/// A thread's turn at the SYNC exchange: when it ends, on every path (a
/// panic too), the SYNC in flight is settled, unconfirmed unless an answer
/// said otherwise, and the syncs waiting for their turn are woken.
struct Turn<'a> {
    inner: &'a Inner,
    stream: Arc<UnixStream>,
    confirmed: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.inner.lock().settle(&self.stream, self.confirmed);
        self.inner.synced.notify_all();
    }
}
