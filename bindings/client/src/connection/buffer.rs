//! The buffer of a buffering connection: whole frames appended (or
//! encoded in place and checked there), written several per `write(2)`,
//! and, when a write fails, dropped and counted as lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use syncs_engine::wire::client::LEN_PREFIX;

use super::stats::Counters;
use super::{Buffering, Inner, State};
use crate::error::ClientError;
use crate::frame::{Encode, Frame};

/// What [`Connection::try_buffer`](super::Connection::try_buffer) did.
#[derive(Debug)]
pub enum TryBuffer {
    /// The frame is in the buffer; no I/O was needed.
    Buffered,
    /// Nothing done: use [`Connection::send`](super::Connection::send) (it may block on I/O).
    NeedsSend,
}

impl Inner {
    /// The buffered send without I/O: when buffering is on, this process
    /// owns the open stream, the flusher and the buffer, and the frame fits
    /// with room to spare (so neither a flush before nor one after would be
    /// due: the cases [`Self::buffer_frame`] handles), `source` is encoded
    /// at the end of the buffer and checked there. `None`: nothing done.
    pub(super) fn encode_into_buffer<E: Encode + ?Sized>(
        &self,
        state: &mut State,
        source: &E,
    ) -> Option<Result<(), ClientError>> {
        let buffering = state.config.buffering?;
        let pid = crate::fork::pid();
        let len = source.wire_len();
        if !state.can_buffer(len, buffering, pid) {
            return None;
        }
        let start = state.buf.len();
        if start == 0 && state.buf.capacity() == 0 {
            state.buf.reserve(buffering.size);
        }
        // Cuts a partial frame off again if encoding panics, so the buffer
        // never holds less than whole frames.
        let mut guard = Truncate {
            buf: &mut state.buf,
            len: start,
        };
        if let Err(e) = source.encode_checked(guard.buf) {
            return Some(Err(e));
        }
        if let Err(e) = state.config.check_payload((len - LEN_PREFIX) as u64) {
            Counters::bump(&self.counters.errors, 1);
            return Some(Err(e));
        }
        guard.len = guard.buf.len();
        drop(guard);
        self.appended(state, start == 0, pid);
        Some(Ok(()))
    }

    /// The buffered send.
    pub(super) fn buffer_frame(
        &self,
        this: &Arc<Inner>,
        state: &mut State,
        frame: &Frame,
        buffering: Buffering,
    ) -> Result<(), ClientError> {
        state.config.check_payload(frame.payload_len() as u64)?;
        let pid = crate::fork::pid();
        self.adopt_buffer(state, pid);
        // Fail fast (or wait, per the connect policy) as without buffering:
        // a frame is only buffered on a connection that is open.
        if state.open.as_ref().is_none_or(|o| o.pid != pid) {
            let open = self.connect(&state.config, pid)?;
            state.open = Some(open);
        }
        let wire = frame.as_bytes();
        if !state.buf.is_empty() && state.buf.len() + wire.len() > buffering.size {
            self.flush_locked(state)?;
        }
        if wire.len() >= buffering.size {
            return self.write_locked(state, wire, 1);
        }
        if state.flusher_pid != pid && !self.start_flusher(this, state, pid) {
            // No thread to honour the linger: write now rather than let
            // the frame wait.
            return self.write_locked(state, wire, 1);
        }
        self.append(state, wire, pid);
        if state.buf.len() >= buffering.size {
            self.flush_locked(state)?;
        }
        Ok(())
    }

    /// Appends a whole frame to the buffer (which holds only this
    /// process's frames).
    pub(super) fn append(&self, state: &mut State, wire: &[u8], pid: u32) {
        let first = state.buf.is_empty();
        if first && state.buf.capacity() == 0 {
            let size = state.config.buffering.map_or(0, |b| b.size);
            state.buf.reserve(size.max(wire.len()));
        }
        state.buf.extend_from_slice(wire);
        self.appended(state, first, pid);
    }

    /// Counts a whole frame just added to the buffer; `first`: the buffer
    /// was empty before it.
    fn appended(&self, state: &mut State, first: bool, pid: u32) {
        if first {
            state.buf_pid = pid;
            state.oldest = Some(Instant::now());
            state.buf_frames = 1;
            self.wake.notify_one();
        } else {
            state.buf_frames += 1;
        }
        // Only ever changed with the state lock held (here, and stored by
        // flushes): a plain load and store, no atomic read-modify-write.
        Counters::bump_locked(&self.counters.buffered);
        Counters::bump_locked(&self.counters.pending);
    }

    /// Drops a buffer that a parent process filled before `fork()`.
    fn adopt_buffer(&self, state: &mut State, pid: u32) {
        if state.buf_pid != pid && !state.buf.is_empty() {
            // The parent's frames are the parent's: the child neither
            // writes nor counts them as its own losses.
            state.buf.clear();
            state.buf_frames = 0;
            state.oldest = None;
            state.deferred = None;
            self.counters.pending.store(0, Ordering::Relaxed);
        }
        if state.buf.is_empty() {
            state.buf_pid = pid;
        }
    }

    /// Writes the buffer. On failure its frames are dropped (counted in
    /// `dropped`; the next SYNC reports them) and the error returned.
    pub(super) fn flush_locked(&self, state: &mut State) -> Result<(), ClientError> {
        let pid = crate::fork::pid();
        self.adopt_buffer(state, pid);
        if state.buf.is_empty() {
            return Ok(());
        }
        let frames = state.buf_frames;
        let buf = std::mem::take(&mut state.buf);
        state.buf_frames = 0;
        state.oldest = None;
        let result = self.write_locked(state, &buf, frames);
        match &result {
            Ok(()) => Counters::bump(&self.counters.flushes, 1),
            Err(_) => {
                let whole = whole_frames(&buf, written_of(&result));
                Counters::bump(&self.counters.dropped, frames - whole);
                // Written or not, none of them can be confirmed now.
                state.lost += frames;
            }
        }
        // Only now: a reader that sees nothing pending also sees the
        // frames counted as written (or dropped).
        self.counters.pending.store(0, Ordering::Relaxed);
        // Keep the allocation for the next frames.
        state.buf = buf;
        state.buf.clear();
        result
    }

    pub(super) fn flush(&self) -> Result<(), ClientError> {
        let mut state = self.lock();
        let result = self.flush_locked(&mut state);
        let deferred = state.deferred.take();
        drop(state);
        if result.is_err() {
            Counters::bump(&self.counters.errors, 1);
        }
        result?;
        match deferred {
            None => Ok(()),
            Some(reason) => Err(self.unconfirmed(reason)),
        }
    }
}

impl State {
    /// True when a frame of `len` bytes can go into the buffer with no I/O:
    /// this process owns the open stream, the flusher and the buffer, and
    /// the frame fits with room to spare (so neither a flush before nor
    /// one after it would be due).
    pub(super) fn can_buffer(&self, len: usize, buffering: Buffering, pid: u32) -> bool {
        self.buf.len().saturating_add(len) < buffering.size
            && self.flusher_pid == pid
            && self.open.as_ref().is_some_and(|o| o.pid == pid)
            && (self.buf.is_empty() || self.buf_pid == pid)
    }
}

/// Cuts `buf` back to `len` bytes when dropped.
struct Truncate<'a> {
    buf: &'a mut Vec<u8>,
    len: usize,
}

impl Drop for Truncate<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.len);
    }
}

/// Bytes written before a failed write (0 when it never started).
fn written_of(result: &Result<(), ClientError>) -> usize {
    match result {
        Err(ClientError::Io { written, .. }) => *written,
        _ => 0,
    }
}

/// How many whole frames the first `written` bytes of `buf` hold.
fn whole_frames(buf: &[u8], written: usize) -> u64 {
    let mut pos = 0usize;
    let mut count = 0u64;
    while let Some(prefix) = buf.get(pos..pos + LEN_PREFIX) {
        let mut len = [0u8; LEN_PREFIX];
        len.copy_from_slice(prefix);
        let end = pos + LEN_PREFIX + u32::from_le_bytes(len) as usize;
        if end > written {
            break;
        }
        pos = end;
        count += 1;
    }
    count
}
