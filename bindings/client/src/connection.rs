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

use std::io::{self, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use syncs_engine::wire::client::{
    parse_sync_reply, sync_request, DEFAULT_MAX_FRAME, LEN_PREFIX, SYNC_REPLY_LEN,
};

use crate::error::ClientError;
use crate::frame::{Encode, Frame};

/// How long a send may wait for the proxy to take bytes (default 1 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// The buffer size when buffering is on without a size (64 KiB).
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
/// How long a buffered frame may wait when buffering is on without a
/// linger (1 ms).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
/// The longest linger accepted (10 s): buffering trades latency for
/// throughput, not durability.
pub const MAX_LINGER: Duration = Duration::from_secs(10);

/// First pause between two connect attempts while waiting for the proxy;
/// it doubles up to [`CONNECT_BACKOFF_MAX`].
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(2);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// How long the flusher sleeps when its buffer is empty before looking
/// whether its connection was dropped (a wake-up also comes with every
/// first frame of a buffer and with the drop itself).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Buffering: several frames per `write(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffering {
    /// The buffer is written once it holds this many bytes; a frame of
    /// this size or more is written directly (after the buffer).
    pub size: usize,
    /// No frame waits longer than this in the buffer.
    pub linger: Duration,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            size: DEFAULT_BUFFER_SIZE,
            linger: DEFAULT_LINGER,
        }
    }
}

/// Settings of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `SO_SNDTIMEO`: a send fails when the proxy takes no bytes for this
    /// long (and a connect fails when the proxy's backlog stays full this
    /// long). `None` waits forever.
    pub send_timeout: Option<Duration>,
    /// The largest payload sent; larger frames are refused before any byte
    /// is written. Keep it equal to the proxy's limit.
    pub max_frame: u32,
    /// `None` (the default): fail fast, a connect that fails is an error at
    /// once. `Some(t)`: while the socket is missing or refuses, try again
    /// with a short backoff (2 ms doubling to 100 ms) for up to `t`, then
    /// fail. Never waits longer than `t`.
    pub connect_timeout: Option<Duration>,
    /// `None` (the default): each frame is written by the call that sends
    /// it. `Some`: frames are buffered (see the module documentation).
    pub buffering: Option<Buffering>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: None,
            buffering: None,
        }
    }
}

impl Config {
    /// Checks the settings (a zero timeout cannot be set on a socket).
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.send_timeout == Some(Duration::ZERO) {
            return Err(ClientError::InvalidArgument(
                "a send timeout of zero is not possible; use None to wait forever".into(),
            ));
        }
        if self.max_frame == 0 {
            return Err(ClientError::InvalidArgument(
                "max_frame must be at least 1 byte".into(),
            ));
        }
        if self.connect_timeout == Some(Duration::ZERO) {
            return Err(ClientError::InvalidArgument(
                "a connect timeout of zero is not possible; use None to fail fast".into(),
            ));
        }
        if let Some(b) = self.buffering {
            if b.size == 0 {
                return Err(ClientError::InvalidArgument(
                    "a buffer size of zero is not possible; turn buffering off instead".into(),
                ));
            }
            if b.linger.is_zero() || b.linger > MAX_LINGER {
                return Err(ClientError::InvalidArgument(format!(
                    "the linger must be above zero and at most {MAX_LINGER:?}, not {:?}",
                    b.linger
                )));
            }
        }
        Ok(())
    }
}

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
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    buffered: AtomicU64,
    pending: AtomicU64,
    flushes: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// `+1` for a counter only ever changed with the state lock held
    /// (readers without the lock see the old or the new value).
    fn bump_locked(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn bump_and_get(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

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
}

/// An open stream and the process that opened it.
#[derive(Debug)]
struct Open {
    stream: UnixStream,
    pid: u32,
    /// Frames written on this stream since the last confirmed SYNC.
    unconfirmed: u64,
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

/// Every connection that buffers, for [`flush_all`].
fn buffered_connections() -> &'static Mutex<Vec<Weak<Inner>>> {
    static ALL: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    ALL.get_or_init(|| Mutex::new(Vec::new()))
}

/// Flushes the buffer of every connection of this process that buffers
/// (the bindings call it at exit). Buffers filled by a parent process
/// before `fork()` are dropped, never written. Returns the first error;
/// every connection is tried.
pub fn flush_all() -> Result<(), ClientError> {
    let all: Vec<Arc<Inner>> = {
        let list = buffered_connections()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.iter().filter_map(Weak::upgrade).collect()
    };
    let pid = crate::pid::current();
    let mut first = None;
    for inner in all {
        if inner.owner.load(Ordering::Relaxed) != pid {
            continue;
        }
        if let Err(e) = inner.flush() {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// What [`Connection::try_buffer`] did.
#[derive(Debug)]
pub enum TryBuffer {
    /// The frame is in the buffer; no I/O was needed.
    Buffered,
    /// Nothing done: use [`Connection::send`] (it may block on I/O).
    NeedsSend,
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
                }),
                wake: Condvar::new(),
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
        let pid = crate::pid::current();
        let wire = frame.as_bytes();
        let fits = state.buf.len() + wire.len() < buffering.size;
        let ready = state.flusher_pid == pid
            && state.open.as_ref().is_some_and(|o| o.pid == pid)
            && (state.buf.is_empty() || state.buf_pid == pid);
        if !fits || !ready || frame.payload_len() as u64 > u64::from(state.config.max_frame) {
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
    /// connection is in its spool (durable per its `--fsync` policy), and
    /// returns how many of them it refused (bad frames, spool full).
    /// Buffered frames are written first.
    ///
    /// Errors with [`ClientError::Unconfirmed`] when no answer comes within
    /// `timeout`, when the connection breaks, or when earlier frames went
    /// out on a connection that broke before being confirmed (or were
    /// dropped from the buffer); with [`ClientError::Unavailable`] when the
    /// proxy cannot be reached.
    pub fn sync(&self, timeout: Duration) -> Result<u32, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "the sync timeout must be above zero".into(),
            ));
        }
        let inner = &*self.inner;
        let mut state = inner.lock();
        if let Err(e) = inner.flush_locked(&mut state) {
            Counters::bump(&inner.counters.errors, 1);
            return Err(e);
        }
        state.deferred = None;
        let unconfirmed = |reason: String| ClientError::Unconfirmed {
            path: inner.path.clone(),
            reason,
        };
        let pid = crate::pid::current();
        let lost = std::mem::take(&mut state.lost);
        let open = state.take_own_open(pid);
        if lost > 0 {
            if let Some(open) = open {
                state.open = Some(open);
            }
            Counters::bump(&inner.counters.errors, 1);
            return Err(unconfirmed(format!(
                "{lost} frame(s) went out on a connection that broke before they were confirmed, or were dropped from the buffer when a write failed; they may or may not be in the spool"
            )));
        }
        let open = match open {
            Some(open) => open,
            None => inner.connect(&state.config, pid)?,
        };
        state.token = state.token.wrapping_add(1);
        let token = state.token;
        let result = (|| {
            write_all(&open.stream, &sync_request(token))
                .map_err(|(_, e)| unconfirmed(format!("sending the SYNC: {e}")))?;
            open.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| unconfirmed(format!("setting the read timeout: {e}")))?;
            let mut reply = [0u8; SYNC_REPLY_LEN];
            (&open.stream).read_exact(&mut reply).map_err(|e| {
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    unconfirmed(format!("no answer within {timeout:?}"))
                } else {
                    unconfirmed(format!("reading the answer: {e}"))
                }
            })?;
            match parse_sync_reply(&reply) {
                Some((t, refused)) if t == token => Ok(refused),
                _ => Err(unconfirmed(
                    "the proxy's answer is not the SYNC reply expected".into(),
                )),
            }
        })();
        match result {
            Ok(refused) => {
                let mut open = open;
                open.unconfirmed = 0;
                state.open = Some(open);
                Ok(refused)
            }
            Err(e) => {
                // The stream's state is unknown: drop it, and the frames it
                // carried stay unconfirmed.
                let lost = open.unconfirmed;
                drop(open);
                state.lost += lost;
                Counters::bump(&inner.counters.errors, 1);
                Err(e)
            }
        }
    }

    /// Connects now rather than on the first send (a no-op when connected),
    /// waiting for the proxy as [`Config::connect_timeout`] says.
    pub fn connect_now(&self) -> Result<(), ClientError> {
        let inner = &*self.inner;
        let mut state = inner.lock();
        let pid = crate::pid::current();
        let open = match state.take_own_open(pid) {
            Some(open) => open,
            None => inner.connect(&state.config, pid)?,
        };
        state.open = Some(open);
        Ok(())
    }

    /// True when a stream opened by this process is held.
    pub fn is_connected(&self) -> bool {
        let pid = crate::pid::current();
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
        let c = &self.inner.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            frames: get(&c.frames),
            bytes: get(&c.bytes),
            errors: get(&c.errors),
            connects: get(&c.connects),
            reconnects: get(&c.reconnects),
            buffered: get(&c.buffered),
            pending: get(&c.pending),
            flushes: get(&c.flushes),
            dropped: get(&c.dropped),
        }
    }
}

impl Drop for Connection {
    /// Writes what this process buffered (errors are lost: call
    /// [`Connection::flush`] first to see them) and stops the flusher. A
    /// connection inherited through `fork()` drops its parent's frames
    /// without touching its lock.
    fn drop(&mut self) {
        let inner = &*self.inner;
        if inner.owner.load(Ordering::Relaxed) == crate::pid::current() {
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
    /// Writes one frame now (buffering off, or a frame too large for it).
    fn write_frame(&self, state: &mut State, frame: &Frame) -> Result<(), ClientError> {
        let max = state.config.max_frame;
        if frame.payload_len() as u64 > u64::from(max) {
            return Err(ClientError::TooLarge {
                len: frame.payload_len() as u64,
                max: u64::from(max),
            });
        }
        self.write_locked(state, frame.as_bytes(), 1)
    }

    /// Writes `wire` (`frames` whole frames) on this process's stream,
    /// connecting first if needed, and counts them.
    fn write_locked(&self, state: &mut State, wire: &[u8], frames: u64) -> Result<(), ClientError> {
        let pid = crate::pid::current();
        let mut retried = false;
        loop {
            let open = match state.take_own_open(pid) {
                Some(open) => open,
                None => self.connect(&state.config, pid)?,
            };
            match write_all(&open.stream, wire) {
                Ok(()) => {
                    let mut open = open;
                    open.unconfirmed += frames;
                    state.open = Some(open);
                    Counters::bump(&self.counters.frames, frames);
                    Counters::bump(&self.counters.bytes, wire.len() as u64);
                    return Ok(());
                }
                Err((written, error)) => {
                    state.drop_open(open);
                    if written == 0 && !retried && peer_gone(&error) {
                        retried = true;
                        continue;
                    }
                    let error = if error.kind() == ErrorKind::WouldBlock {
                        io::Error::new(
                            ErrorKind::TimedOut,
                            format!(
                                "the proxy took no bytes for {:?} (send timeout)",
                                state.config.send_timeout.unwrap_or_default()
                            ),
                        )
                    } else {
                        error
                    };
                    return Err(ClientError::Io {
                        path: self.path.clone(),
                        written,
                        len: wire.len(),
                        error,
                    });
                }
            }
        }
    }

    /// The buffered send without I/O: when buffering is on, this process
    /// owns the open stream, the flusher and the buffer, and the frame fits
    /// with room to spare (so neither a flush before nor one after would be
    /// due: the cases [`Self::buffer_frame`] handles), `source` is encoded
    /// at the end of the buffer and checked there. `None`: nothing done.
    fn encode_into_buffer<E: Encode + ?Sized>(
        &self,
        state: &mut State,
        source: &E,
    ) -> Option<Result<(), ClientError>> {
        let buffering = state.config.buffering?;
        let pid = crate::pid::current();
        let len = source.wire_len();
        let fits = state.buf.len().saturating_add(len) < buffering.size;
        let ready = state.flusher_pid == pid
            && state.open.as_ref().is_some_and(|o| o.pid == pid)
            && (state.buf.is_empty() || state.buf_pid == pid);
        if !fits || !ready {
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
        let payload = (len - LEN_PREFIX) as u64;
        let max = u64::from(state.config.max_frame);
        if payload > max {
            Counters::bump(&self.counters.errors, 1);
            return Some(Err(ClientError::TooLarge { len: payload, max }));
        }
        guard.len = guard.buf.len();
        drop(guard);
        self.appended(state, start == 0, pid);
        Some(Ok(()))
    }

    /// The buffered send.
    fn buffer_frame(
        &self,
        this: &Arc<Inner>,
        state: &mut State,
        frame: &Frame,
        buffering: Buffering,
    ) -> Result<(), ClientError> {
        let max = state.config.max_frame;
        if frame.payload_len() as u64 > u64::from(max) {
            return Err(ClientError::TooLarge {
                len: frame.payload_len() as u64,
                max: u64::from(max),
            });
        }
        let pid = crate::pid::current();
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
    fn append(&self, state: &mut State, wire: &[u8], pid: u32) {
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
    fn flush_locked(&self, state: &mut State) -> Result<(), ClientError> {
        let pid = crate::pid::current();
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

    fn flush(&self) -> Result<(), ClientError> {
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
            Some(reason) => Err(ClientError::Unconfirmed {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    /// Starts this process's flusher thread; false when it cannot.
    fn start_flusher(&self, this: &Arc<Inner>, state: &mut State, pid: u32) -> bool {
        let weak = Arc::downgrade(this);
        let inner = Arc::clone(this);
        let spawned = std::thread::Builder::new()
            .name("intc-flush".into())
            .spawn(move || inner.run_flusher(pid));
        if spawned.is_err() {
            return false;
        }
        state.flusher_pid = pid;
        self.owner.store(pid, Ordering::Relaxed);
        let mut all = buffered_connections()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(weak);
        true
    }

    /// The flusher: writes the buffer once its oldest frame has waited the
    /// linger; ends when the connection is dropped.
    fn run_flusher(&self, pid: u32) {
        let mut state = self.lock();
        loop {
            if self.closed.load(Ordering::Relaxed) || state.flusher_pid != pid {
                return;
            }
            let due = match (state.oldest, state.config.buffering) {
                (Some(oldest), Some(b)) if !state.buf.is_empty() => Some(oldest + b.linger),
                // Buffering was turned off with frames in: write them now.
                (Some(_), None) if !state.buf.is_empty() => Some(Instant::now()),
                _ => None,
            };
            let wait = match due {
                None => IDLE_WAIT,
                Some(due) => {
                    let now = Instant::now();
                    if now >= due {
                        if let Err(e) = self.flush_locked(&mut state) {
                            Counters::bump(&self.counters.errors, 1);
                            state.deferred = Some(format!(
                                "a background flush failed and its frames were dropped: {e}"
                            ));
                        }
                        continue;
                    }
                    due - now
                }
            };
            state = match self.wake.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => {
                    let (mut state, _) = poisoned.into_inner();
                    self.state.clear_poison();
                    state.open = None;
                    state
                }
            };
        }
    }

    fn connect(&self, config: &Config, pid: u32) -> Result<Open, ClientError> {
        let unavailable = |error| ClientError::Unavailable {
            path: self.path.clone(),
            error,
        };
        let deadline = config.connect_timeout.map(|t| (t, Instant::now() + t));
        let mut pause = CONNECT_BACKOFF_MIN;
        let mut attempts = 0u32;
        let socket = loop {
            attempts += 1;
            match self.try_connect(config) {
                Ok(socket) => break socket,
                Err(error) => {
                    let Some((timeout, deadline)) = deadline else {
                        return Err(unavailable(error));
                    };
                    let now = Instant::now();
                    if !proxy_not_up_yet(&error) || now >= deadline {
                        let error = io::Error::new(
                            error.kind(),
                            format!("{error} (after waiting {timeout:?}, {attempts} attempts)"),
                        );
                        return Err(unavailable(error));
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(CONNECT_BACKOFF_MAX);
                }
            }
        };
        if Counters::bump_and_get(&self.counters.connects) > 1 {
            Counters::bump(&self.counters.reconnects, 1);
        }
        Ok(Open {
            stream: UnixStream::from(std::os::fd::OwnedFd::from(socket)),
            pid,
            unconfirmed: 0,
        })
    }

    fn try_connect(&self, config: &Config) -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        // Set before connecting: a unix connect waits on a full backlog for
        // as long as the send timeout allows.
        socket.set_write_timeout(config.send_timeout)?;
        socket.connect(&self.addr)?;
        Ok(socket)
    }

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

/// Connect errors that mean "the proxy is not (yet) listening": worth
/// trying again while waiting for it.
fn proxy_not_up_yet(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::NotFound
            | ErrorKind::ConnectionRefused
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::Interrupted
    )
}

/// Writes all of `wire`, or says how many bytes went before the error.
/// `MSG_NOSIGNAL`: a proxy that went away is an `EPIPE` error, not a
/// `SIGPIPE` that kills a C program that never asked for it.
fn write_all(stream: &UnixStream, wire: &[u8]) -> Result<(), (usize, io::Error)> {
    let socket = SockRef::from(stream);
    let mut written = 0;
    while written < wire.len() {
        match socket.send_with_flags(&wire[written..], libc::MSG_NOSIGNAL) {
            Ok(0) => {
                return Err((
                    written,
                    io::Error::new(ErrorKind::WriteZero, "the socket took no bytes"),
                ))
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// Errors that mean the proxy closed its end before we wrote.
fn peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
    )
}
