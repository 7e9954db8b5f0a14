//! One connection to the proxy's unix socket.
//!
//! Opened lazily by the first send (or waiting for the proxy, as the
//! [`Config::connect_timeout`] says), dropped on any write error and
//! reopened by the next send; never shared across `fork()`; every frame
//! written whole under the connection's lock, so two frames never
//! interleave.
//!
//! With [`Config::buffering`] on, frames are gathered in a buffer and
//! written several per `write(2)`: when the buffer reaches its size, when
//! its oldest frame has waited the linger (a background flusher thread per
//! connection sees to it), on [`Connection::flush`], before a
//! [`Connection::sync`], when the connection is dropped, and on
//! [`flush_all`] (the bindings' at-exit hook). A buffer only ever holds
//! whole frames, so a write never splits one.
//!
//! # Layout
//!
//! - this file: [`Connection`], its public calls, and the state they share
//!   under one lock;
//! - `config.rs`: [`Config`], [`Buffering`], their defaults and checks;
//! - `stats.rs`: [`Stats`] and the counters behind it;
//! - `socket.rs`: the stream, connect (and waiting for the proxy), whole
//!   writes;
//! - `pipe.rs`: the pipe offered with the first bytes, and the writes
//!   into it once the proxy took it;
//! - `buffer.rs`: the buffer of a buffering connection and its flush;
//! - `flusher.rs`: the background flusher thread and [`flush_all`];
//! - `sync.rs`: the SYNC exchange, whose answer is awaited without the
//!   lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use socket2::SockAddr;

use crate::error::ClientError;
use crate::frame::{Encode, Frame};

mod buffer;
mod config;
mod flusher;
mod pipe;
mod socket;
mod stats;
mod sync;

pub use buffer::TryBuffer;
pub use config::{
    Buffering, Config, DEFAULT_BUFFER_SIZE, DEFAULT_LINGER, DEFAULT_SEND_TIMEOUT, MAX_LINGER,
};
pub use flusher::flush_all;
pub use stats::Stats;

use socket::Open;
use stats::Counters;
use sync::InFlight;

/// A connection to the proxy at one socket path. Thread-safe: sends from
/// several threads are serialised by a mutex, so frames never interleave.
#[derive(Debug)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// What the connection and its flusher thread share.
#[derive(Debug)]
struct Inner {
    path: PathBuf,
    addr: SockAddr,
    state: Mutex<State>,
    /// Wakes the flusher: a first frame in the buffer, or the drop.
    wake: Condvar,
    /// Wakes a `sync` waiting for its turn: the SYNC in flight ended.
    synced: Condvar,
    counters: Counters,
    /// The process whose frames the buffer may hold (0: never buffered):
    /// the drop of a connection inherited through `fork()` must not touch
    /// its lock, which a thread of the parent may have held at the fork.
    owner: AtomicU32,
    /// Set by the drop; the flusher then ends.
    closed: AtomicBool,
}

#[derive(Debug)]
struct State {
    config: Config,
    open: Option<Open>,
    /// Frames written on connections that broke before a SYNC confirmed
    /// them, or dropped from the buffer: the next SYNC reports them.
    lost: u64,
    /// The next SYNC token.
    token: u64,
    /// Whole frames waiting to be written.
    buf: Vec<u8>,
    /// Frames in `buf`.
    buf_frames: u64,
    /// The process that buffered them.
    buf_pid: u32,
    /// When the oldest frame of `buf` went in.
    oldest: Option<Instant>,
    /// The process whose flusher thread runs (0: none).
    flusher_pid: u32,
    /// Why the last background flush failed, for the next `flush()`.
    deferred: Option<String>,
    /// This process's SYNC waiting for its answer, if any.
    in_flight: Option<InFlight>,
}

impl State {
    /// Drops the stream, remembering frames it carried unconfirmed.
    fn drop_open(&mut self, open: Open) {
        self.lost += open.unconfirmed;
    }

    /// The open stream of this process, if any (a parent's is closed:
    /// dropping our copy closes only this process's descriptor, no
    /// shutdown, so the parent's stream never sees a byte from us).
    fn take_own_open(&mut self, pid: u32) -> Option<Open> {
        match self.open.take() {
            Some(open) if open.pid == pid => Some(open),
            _ => None,
        }
    }
}

impl Connection {
    /// A connection to `path`; nothing is opened until the first send.
    pub fn new(path: impl AsRef<Path>, config: Config) -> Result<Self, ClientError> {
        let path = path.as_ref();
        if path.as_os_str().is_empty() {
            return Err(ClientError::InvalidArgument(
                "the proxy socket path is empty".into(),
            ));
        }
        config.validate()?;
        let addr = SockAddr::unix(path).map_err(|e| {
            ClientError::InvalidArgument(format!(
                "{} is not a usable unix socket path: {e}",
                path.display()
            ))
        })?;
        Ok(Connection {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                addr,
                state: Mutex::new(State {
                    config,
                    open: None,
                    lost: 0,
                    token: 0,
                    buf: Vec::new(),
                    buf_frames: 0,
                    buf_pid: 0,
                    oldest: None,
                    flusher_pid: 0,
                    deferred: None,
                    in_flight: None,
                }),
                wake: Condvar::new(),
                synced: Condvar::new(),
                counters: Counters::default(),
                owner: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sends `frame` whole, connecting first if needed.
    ///
    /// - No connection and the connect fails: [`ClientError::Unavailable`]
    ///   (at once, or after waiting up to [`Config::connect_timeout`]).
    /// - The write fails: the connection is dropped and
    ///   [`ClientError::Io`] returned; the next send reconnects. If the
    ///   proxy had closed the connection before any byte of this frame was
    ///   written (it restarted), the frame is sent once more on a new
    ///   connection instead, since nothing of it was delivered.
    /// - With buffering on, the frame goes into the buffer (written first
    ///   when it would overflow it); `Ok` then means "buffered", and a
    ///   write that fails later is reported by the call that made it (this
    ///   send, [`Self::flush`], [`Self::sync`]) or, for the background
    ///   flusher, by the next [`Self::flush`] and [`Self::sync`].
    /// - After `fork()`, the child never writes to the stream its parent
    ///   opened, nor the frames its parent buffered: it closes its copy,
    ///   drops the buffer and opens its own.
    pub fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        let inner = &*self.inner;
        let mut state = inner.lock();
        let result = match state.config.buffering {
            None => inner.write_frame(&mut state, frame),
            Some(buffering) => inner.buffer_frame(&self.inner, &mut state, frame, buffering),
        };
        if result.is_err() {
            Counters::bump(&inner.counters.errors, 1);
        }
        result
    }

    /// Puts `frame` in the buffer if that needs no I/O and no waiting:
    /// buffering is on, the lock is free, the stream is open, the frame
    /// fits. For callers that must not block here (Python calls this with
    /// the GIL held and [`Self::send`] without it).
    pub fn try_buffer(&self, frame: &Frame) -> TryBuffer {
        let inner = &*self.inner;
        let mut state = match inner.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => {
                return TryBuffer::NeedsSend
            }
        };
        let Some(buffering) = state.config.buffering else {
            return TryBuffer::NeedsSend;
        };
        let pid = crate::fork::pid();
        let wire = frame.as_bytes();
        if !state.can_buffer(wire.len(), buffering, pid)
            || state
                .config
                .check_payload(frame.payload_len() as u64)
                .is_err()
        {
            return TryBuffer::NeedsSend;
        }
        inner.append(&mut state, wire, pid);
        TryBuffer::Buffered
    }

    /// Sends the frame `source` encodes, as [`Self::send`] sends a
    /// [`Frame`] (the same bytes, the same errors, in the same order).
    ///
    /// With buffering on and nothing to write, connect or wait for, the
    /// frame is encoded straight into the buffer and checked there; a
    /// frame that fails the check is cut off again and its error returned,
    /// as [`Frame::encoded`] would have. Otherwise the frame is built
    /// first and sent.
    pub fn send_encoded<E: Encode + ?Sized>(&self, source: &E) -> Result<(), ClientError> {
        {
            let mut state = self.inner.lock();
            if let Some(done) = self.inner.encode_into_buffer(&mut state, source) {
                return done;
            }
        }
        self.send(&Frame::encoded(source)?)
    }

    /// [`Self::try_buffer`] for a frame not built yet: encodes it straight
    /// into the buffer when that needs no I/O and no waiting. `Err` when it
    /// fails its check (or is over `max_frame`); [`TryBuffer::NeedsSend`]
    /// when nothing was done.
    pub fn try_buffer_encoded<E: Encode + ?Sized>(
        &self,
        source: &E,
    ) -> Result<TryBuffer, ClientError> {
        let mut state = match self.inner.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => {
                return Ok(TryBuffer::NeedsSend)
            }
        };
        match self.inner.encode_into_buffer(&mut state, source) {
            None => Ok(TryBuffer::NeedsSend),
            Some(done) => done.map(|()| TryBuffer::Buffered),
        }
    }

    /// Writes the buffered frames now (a no-op when nothing is buffered).
    /// Also reports, once, a failure of the background flusher since the
    /// last call ([`ClientError::Unconfirmed`]: those frames were dropped).
    pub fn flush(&self) -> Result<(), ClientError> {
        self.inner.flush()
    }

    /// Waits until the proxy confirms that every frame sent on this
    /// connection before the call is in its spool (durable per its
    /// `--fsync` policy), and returns how many of them it refused (bad
    /// frames, spool full). Buffered frames are written first.
    ///
    /// Other threads go on sending while it waits (their frames are left
    /// for the next `sync`). A `sync` called while another thread of the
    /// process waits in one waits for it to end first, within its own
    /// `timeout`.
    ///
    /// Errors with [`ClientError::Unconfirmed`] when no answer comes within
    /// `timeout`, when the connection breaks, or when earlier frames went
    /// out on a connection that broke before being confirmed (or were
    /// dropped from the buffer); with [`ClientError::Unavailable`] when the
    /// proxy cannot be reached.
    pub fn sync(&self, timeout: Duration) -> Result<u32, ClientError> {
        self.inner.sync(timeout)
    }

    /// Connects now rather than on the first send (a no-op when connected),
    /// waiting for the proxy as [`Config::connect_timeout`] says.
    pub fn connect_now(&self) -> Result<(), ClientError> {
        let inner = &*self.inner;
        let mut state = inner.lock();
        let pid = crate::fork::pid();
        let open = match state.take_own_open(pid) {
            Some(open) => open,
            None => inner.connect(&state.config, pid)?,
        };
        state.open = Some(open);
        Ok(())
    }

    /// True when a stream opened by this process is held.
    pub fn is_connected(&self) -> bool {
        let pid = crate::fork::pid();
        self.inner
            .lock()
            .open
            .as_ref()
            .is_some_and(|o| o.pid == pid)
    }

    /// Writes the buffer, then closes the stream, if any; the next send
    /// reconnects. Returns the flush's error (the stream is closed anyway).
    pub fn disconnect(&self) -> Result<(), ClientError> {
        let inner = &*self.inner;
        let mut state = inner.lock();
        let flushed = inner.flush_locked(&mut state);
        // Frames written whole are read by the proxy up to the EOF this
        // close sends, so they are not counted as lost.
        state.open = None;
        flushed
    }

    /// Changes the send timeout, for the open stream too.
    pub fn set_send_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let mut state = self.inner.lock();
        let config = Config {
            send_timeout: timeout,
            ..state.config.clone()
        };
        config.validate()?;
        state.config = config;
        if let Some(open) = &state.open {
            if open.stream.set_write_timeout(timeout).is_err() {
                // The next send reconnects with the new timeout.
                state.open = None;
            }
        }
        Ok(())
    }

    /// Changes the connect policy: `None` fails fast, `Some(t)` waits up to
    /// `t` for the proxy (see [`Config::connect_timeout`]).
    pub fn set_connect_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let mut state = self.inner.lock();
        let config = Config {
            connect_timeout: timeout,
            ..state.config.clone()
        };
        config.validate()?;
        state.config = config;
        Ok(())
    }

    /// Turns buffering on, changes it, or turns it off (`None`). What is
    /// buffered is written first; its error is returned (the new setting
    /// is in force anyway).
    pub fn set_buffering(&self, buffering: Option<Buffering>) -> Result<(), ClientError> {
        let inner = &*self.inner;
        let mut state = inner.lock();
        let config = Config {
            buffering,
            ..state.config.clone()
        };
        config.validate()?;
        let flushed = inner.flush_locked(&mut state);
        state.config = config;
        flushed
    }

    /// The settings in force.
    pub fn config(&self) -> Config {
        self.inner.lock().config.clone()
    }

    /// The counters so far (read without waiting for a send in progress).
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }
}

impl Drop for Connection {
    /// Writes what this process buffered (errors are lost: call
    /// [`Connection::flush`] first to see them) and stops the flusher. A
    /// connection inherited through `fork()` drops its parent's frames
    /// without touching its lock.
    fn drop(&mut self) {
        let inner = &*self.inner;
        if inner.owner.load(Ordering::Relaxed) == crate::fork::pid() {
            let mut state = inner.lock();
            let _ = inner.flush_locked(&mut state);
            inner.closed.store(true, Ordering::Relaxed);
            drop(state);
        } else {
            inner.closed.store(true, Ordering::Relaxed);
        }
        inner.wake.notify_all();
    }
}

impl Inner {
    /// The state lock. A panic while it was held may have left a frame half
    /// written, so a poisoned state drops its stream before being used.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            self.state.clear_poison();
            let mut state = poisoned.into_inner();
            state.open = None;
            state
        })
    }

    /// A [`ClientError::Unconfirmed`] for this connection.
    fn unconfirmed(&self, reason: String) -> ClientError {
        ClientError::Unconfirmed {
            path: self.path.clone(),
            reason,
        }
    }

    /// Waits on `condvar` with the state lock, as [`Self::lock`] takes it.
    fn wait_timeout<'a>(
        &self,
        condvar: &Condvar,
        state: MutexGuard<'a, State>,
        wait: Duration,
    ) -> MutexGuard<'a, State> {
        match condvar.wait_timeout(state, wait) {
            Ok((state, _)) => state,
            Err(poisoned) => {
                let (mut state, _) = poisoned.into_inner();
                self.state.clear_poison();
                state.open = None;
                state
            }
        }
    }
}
