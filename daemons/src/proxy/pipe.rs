//! The pipe transport of a client connection (docs/protocol.md, 1d).
//!
//! A unix stream socket costs the reader a socket buffer per `write(2)`
//! of the client: copied, freed and uncharged one by one, ~0.8 µs each on
//! a small frame, more than everything else the proxy does with it
//! (docs/benchmarks.md). A pipe appends small writes to the same pages.
//! So a client may offer the read end of a pipe: one descriptor
//! (`SCM_RIGHTS`) on the first bytes it sends. The proxy takes it if it is
//! a pipe's read end and answers PIPE on the socket; after the client's
//! SWITCH control frame its frames come through the pipe, in order after
//! those before the SWITCH. The socket stays open for the replies (SYNC,
//! PIPE) and to see the client go.
//!
//! A proxy that knows nothing of this (an older one, the original system's)
//! reads the first bytes with `read(2)`, which discards the descriptor:
//! it never answers PIPE, and the client keeps writing to the socket.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use bytes::BytesMut;
use rustix::fs::OFlags;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use syncs_engine::stats;
use syncs_engine::wire::client::pipe_reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use crate::log_throttle::LogThrottles;

/// Descriptors one offer may carry and be read whole: one is expected,
/// more are closed (the kernel closes those past the buffer).
const MAX_FDS: usize = 4;

/// The first read of a connection, and the pipe offer that came with it:
/// counted, and answered with PIPE when taken; a refused one is logged at
/// the pace of `logs`. Returns the bytes read and the pipe to read from
/// after the client's SWITCH.
pub async fn first_read(
    sock: &mut UnixStream,
    buf: &mut BytesMut,
    want: usize,
    peer: Option<i32>,
    logs: &LogThrottles,
) -> io::Result<(usize, Option<pipe::Receiver>)> {
    let (n, fds) = read_with_fds(sock, buf, want).await?;
    let (offer, rx) = take(fds);
    if let Some(outcome) = offer.label() {
        metrics::counter!(stats::PROXY_CLIENT_PIPES, "outcome" => outcome).increment(1);
    }
    if offer == Offer::Refused {
        if let Some(suppressed) = logs.due("pipe_refused") {
            tracing::warn!(
                ?peer,
                more_since_last_line = suppressed,
                "a client offered descriptors that are not one pipe's read end; closed them"
            );
        }
    }
    let Some(rx) = rx else {
        return Ok((n, None));
    };
    // A client gone already (it sent a few frames and closed) cannot be
    // answered; its frames are read all the same.
    match sock.write_all(&pipe_reply()).await {
        Ok(()) => Ok((n, Some(rx))),
        Err(e) => {
            tracing::debug!(?peer, "cannot answer a pipe offer: {e}");
            Ok((n, None))
        }
    }
}

/// Like `read_buf`, with room for the descriptors of a pipe offer, which
/// come back too (closed when dropped).
async fn read_with_fds(
    sock: &UnixStream,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let start = buf.len();
    // Zeroed once per connection: the read goes into initialised bytes.
    buf.resize(start + want, 0);
    let got = sock
        .async_io(Interest::READABLE, || {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [io::IoSliceMut::new(&mut buf[start..])];
            let msg = rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            Ok((msg.bytes, fds))
        })
        .await;
    let n = got.as_ref().map_or(0, |(n, _)| *n);
    buf.truncate(start + n);
    got
}

/// What became of a pipe offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// No descriptor came with the first bytes.
    None,
    /// A pipe's read end: taken.
    Taken,
    /// Descriptors that are not one pipe's read end: closed.
    Refused,
}

impl Offer {
    /// The metric label of an offer that came.
    fn label(self) -> Option<&'static str> {
        match self {
            Offer::None => None,
            Offer::Taken => Some("taken"),
            Offer::Refused => Some("refused"),
        }
    }
}

/// The pipe of an offer, when `fds` is exactly one pipe's read end.
fn take(fds: Vec<OwnedFd>) -> (Offer, Option<pipe::Receiver>) {
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (None, _) => (Offer::None, None),
        // `from_owned_fd` checks that it is a FIFO opened for reading,
        // which `O_RDWR` is too: refused, since the proxy's own descriptor
        // would then keep the pipe open for writing, and its end would
        // never come.
        (Some(fd), None) if read_only(&fd) => match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => (Offer::Taken, Some(rx)),
            Err(_) => (Offer::Refused, None),
        },
        // Another kind of descriptor, one open for writing, or several.
        (Some(_), _) => (Offer::Refused, None),
    }
}

/// Whether `fd` is open for reading only.
fn read_only(fd: &OwnedFd) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|flags| flags & OFlags::ACCMODE == OFlags::RDONLY)
}

/// Where a connection's frames come from: the socket, then (after a
/// SWITCH) the pipe.
#[derive(Debug)]
pub enum Input {
    Socket,
    Pipe(pipe::Receiver),
}

impl Input {
    /// Reads what is there now (up to `want` bytes) into `buf`, without
    /// waiting: 0 when nothing is (or the end). The system call itself, not
    /// the runtime's last word on readiness, which may lag the kernel's.
    pub fn read_now(
        &self,
        sock: &UnixStream,
        buf: &mut BytesMut,
        want: usize,
    ) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + want, 0);
        let got = loop {
            let into = &mut buf[start..];
            let r = match self {
                Input::Socket => rustix::io::read(sock, into),
                Input::Pipe(rx) => rustix::io::read(rx, into),
            };
            match r {
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break Ok(0),
                r => break r.map_err(io::Error::from),
            }
        };
        buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got
    }

    /// Reads more of the client's frames into `buf`.
    pub async fn read_buf(&mut self, sock: &UnixStream, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Input::Socket => loop {
                sock.readable().await?;
                match sock.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    got => return got,
                }
            },
            Input::Pipe(rx) => rx.read_buf(buf).await,
        }
    }
}
