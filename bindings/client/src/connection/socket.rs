//! The stream to the proxy: connect (failing fast, or waiting for the
//! proxy with a backoff), write whole frames with `MSG_NOSIGNAL`, drop the
//! stream on a write error and reconnect once when the proxy had closed it
//! before any byte was written.

use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use super::pipe::Pipe;
use super::stats::Counters;
use super::{Config, Inner, State};
use crate::error::ClientError;
use crate::frame::Frame;

/// First pause between two connect attempts while waiting for the proxy;
/// it doubles up to [`CONNECT_BACKOFF_MAX`].
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(2);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// An open stream and the process that opened it.
#[derive(Debug)]
pub(super) struct Open {
    /// Shared with a `sync` that reads its answer without the lock.
    pub(super) stream: Arc<UnixStream>,
    pub(super) pid: u32,
    /// Frames written on this stream since the last SYNC request (those
    /// before it are its `InFlight::frames`, until its answer).
    pub(super) unconfirmed: u64,
    /// Where the frames go: the socket, or the pipe offered with the first
    /// bytes once the proxy took it.
    pub(super) pipe: Pipe,
}

impl Inner {
    /// Writes one frame now (buffering off, or a frame too large for it).
    pub(super) fn write_frame(&self, state: &mut State, frame: &Frame) -> Result<(), ClientError> {
        state.config.check_payload(frame.payload_len() as u64)?;
        self.write_locked(state, frame.as_bytes(), 1)
    }

    /// Writes `wire` (`frames` whole frames) on this process's stream,
    /// connecting first if needed, and counts them.
    pub(super) fn write_locked(
        &self,
        state: &mut State,
        wire: &[u8],
        frames: u64,
    ) -> Result<(), ClientError> {
        let pid = crate::fork::pid();
        let mut retried = false;
        loop {
            let open = match state.take_own_open(pid) {
                Some(open) => open,
                None => self.connect(&state.config, pid)?,
            };
            let mut open = open;
            match open
                .pipe
                .write(&open.stream, wire, state.config.send_timeout, false)
            {
                Ok(()) => {
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

    pub(super) fn connect(&self, config: &Config, pid: u32) -> Result<Open, ClientError> {
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
            stream: Arc::new(UnixStream::from(std::os::fd::OwnedFd::from(socket))),
            pid,
            unconfirmed: 0,
            pipe: Pipe::new(config.pipe),
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
pub(super) fn write_all(stream: &UnixStream, wire: &[u8]) -> Result<(), (usize, io::Error)> {
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
