//! One connection to the proxy's unix socket.
//!
//! Opened lazily by the first send, dropped on any write error and reopened
//! by the next send; never shared across `fork()`; every frame written whole
//! under the connection's lock, so two frames never interleave.

use std::io::{self, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use syncs_engine::wire::client::{
    parse_sync_reply, sync_request, DEFAULT_MAX_FRAME, SYNC_REPLY_LEN,
};

use crate::error::ClientError;
use crate::frame::Frame;

/// How long a send may wait for the proxy to take bytes (default 1 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(1);

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            max_frame: DEFAULT_MAX_FRAME,
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
        Ok(())
    }
}

/// Counters of a connection (or the sum over several).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames written whole.
    pub frames: u64,
    /// Bytes of those frames, prefixes included.
    pub bytes: u64,
    /// Sends that failed, whatever the reason.
    pub errors: u64,
    /// Successful connects, the first one included.
    pub connects: u64,
    /// Successful connects after the first (the proxy restarted, a write
    /// failed, or the process forked).
    pub reconnects: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.connects += other.connects;
        self.reconnects += other.reconnects;
    }
}

#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    fn bump_and_get(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A connection to the proxy at one socket path. Thread-safe: sends from
/// several threads are serialised by a mutex, so frames never interleave.
#[derive(Debug)]
pub struct Connection {
    path: PathBuf,
    addr: SockAddr,
    state: Mutex<State>,
    counters: Counters,
}

#[derive(Debug)]
struct State {
    config: Config,
    open: Option<Open>,
    /// Frames written on connections that broke before a SYNC confirmed
    /// them: the next SYNC reports them as unconfirmed.
    lost: u64,
    /// The next SYNC token.
    token: u64,
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
            path: path.to_owned(),
            addr,
            state: Mutex::new(State {
                config,
                open: None,
                lost: 0,
                token: 0,
            }),
            counters: Counters::default(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `frame` whole, connecting first if needed.
    ///
    /// - No connection and the connect fails: [`ClientError::Unavailable`]
    ///   at once (fail fast; the next send tries again).
    /// - The write fails: the connection is dropped and
    ///   [`ClientError::Io`] returned; the next send reconnects. If the
    ///   proxy had closed the connection before any byte of this frame was
    ///   written (it restarted), the frame is sent once more on a new
    ///   connection instead, since nothing of it was delivered.
    /// - After `fork()`, the child never writes to the stream its parent
    ///   opened: it closes its copy and opens its own.
    pub fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        let mut state = self.lock();
        let result = self.send_locked(&mut state, frame);
        match &result {
            Ok(()) => {
                Counters::bump(&self.counters.frames, 1);
                Counters::bump(&self.counters.bytes, frame.as_bytes().len() as u64);
            }
            Err(_) => Counters::bump(&self.counters.errors, 1),
        }
        result
    }

    fn send_locked(&self, state: &mut State, frame: &Frame) -> Result<(), ClientError> {
        let max = state.config.max_frame;
        if frame.payload_len() as u64 > u64::from(max) {
            return Err(ClientError::TooLarge {
                len: frame.payload_len() as u64,
                max: u64::from(max),
            });
        }
        let pid = std::process::id();
        let wire = frame.as_bytes();
        let mut retried = false;
        loop {
            let open = match state.open.take() {
                Some(open) if open.pid == pid => open,
                // Opened by the parent before a fork: dropping our copy
                // closes only this process's descriptor (no shutdown), and
                // the parent's stream never sees a byte from us.
                Some(_) | None => self.connect(&state.config, pid)?,
            };
            match write_all(&open.stream, wire) {
                Ok(()) => {
                    let mut open = open;
                    open.unconfirmed += 1;
                    state.open = Some(open);
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

    fn connect(&self, config: &Config, pid: u32) -> Result<Open, ClientError> {
        let unavailable = |error| ClientError::Unavailable {
            path: self.path.clone(),
            error,
        };
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(unavailable)?;
        // Set before connecting: a unix connect waits on a full backlog for
        // as long as the send timeout allows.
        socket
            .set_write_timeout(config.send_timeout)
            .map_err(unavailable)?;
        socket.connect(&self.addr).map_err(unavailable)?;
        if Counters::bump_and_get(&self.counters.connects) > 1 {
            Counters::bump(&self.counters.reconnects, 1);
        }
        Ok(Open {
            stream: UnixStream::from(std::os::fd::OwnedFd::from(socket)),
            pid,
            unconfirmed: 0,
        })
    }

    /// Waits until the proxy confirms that every frame sent on this
    /// connection is in its spool (durable per its `--fsync` policy), and
    /// returns how many of them it refused (bad frames, spool full).
    ///
    /// Errors with [`ClientError::Unconfirmed`] when no answer comes within
    /// `timeout`, when the connection breaks, or when earlier frames went
    /// out on a connection that broke before being confirmed; with
    /// [`ClientError::Unavailable`] when the proxy cannot be reached.
    pub fn sync(&self, timeout: Duration) -> Result<u32, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "the sync timeout must be above zero".into(),
            ));
        }
        let mut state = self.lock();
        let unconfirmed = |reason: String| ClientError::Unconfirmed {
            path: self.path.clone(),
            reason,
        };
        let pid = std::process::id();
        let lost = std::mem::take(&mut state.lost);
        let open = match state.open.take() {
            Some(open) if open.pid == pid => Some(open),
            _ => None,
        };
        if lost > 0 {
            if let Some(open) = open {
                state.open = Some(open);
            }
            Counters::bump(&self.counters.errors, 1);
            return Err(unconfirmed(format!(
                "{lost} frame(s) went out on a connection that broke before they were confirmed; they may or may not be in the spool"
            )));
        }
        let open = match open {
            Some(open) => open,
            None => self.connect(&state.config, pid)?,
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
                Counters::bump(&self.counters.errors, 1);
                Err(e)
            }
        }
    }

    /// Connects now rather than on the first send (a no-op when connected).
    pub fn connect_now(&self) -> Result<(), ClientError> {
        let mut state = self.lock();
        let pid = std::process::id();
        match state.open.take() {
            Some(open) if open.pid == pid => state.open = Some(open),
            _ => state.open = Some(self.connect(&state.config, pid)?),
        }
        Ok(())
    }

    /// True when a stream opened by this process is held.
    pub fn is_connected(&self) -> bool {
        let pid = std::process::id();
        self.lock().open.as_ref().is_some_and(|o| o.pid == pid)
    }

    /// Closes the stream, if any; the next send reconnects.
    pub fn disconnect(&self) {
        // Frames written whole are read by the proxy up to the EOF this
        // close sends, so they are not counted as lost.
        self.lock().open = None;
    }

    /// Changes the send timeout, for the open stream too.
    pub fn set_send_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let mut state = self.lock();
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

    /// The settings in force.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// The counters so far (read without waiting for a send in progress).
    pub fn stats(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            frames: get(&self.counters.frames),
            bytes: get(&self.counters.bytes),
            errors: get(&self.counters.errors),
            connects: get(&self.counters.connects),
            reconnects: get(&self.counters.reconnects),
        }
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
