//! The pipe transport, the client's side (docs/protocol.md, 1d).
//!
//! Every `write(2)` on a unix stream socket is a socket buffer the proxy
//! copies, frees and uncharges on its own, ~0.8 µs for a small frame;
//! writes to a pipe go into the same pages. So a connection offers the read
//! end of a pipe with its first bytes (`SCM_RIGHTS`); once the proxy's
//! PIPE reply is on the socket, it sends SWITCH there and writes every
//! later frame (SYNC requests too) into the pipe. The socket stays for the
//! replies and for the proxy to see the client go.
//!
//! The reply is looked for without waiting, on the next sends (a proxy
//! that does not know the offer, an older one or the original system's,
//! discards the descriptor and never answers): when it has not come
//! [`WAIT`] after the offer, or before a SYNC (whose answer is read from
//! the socket by another path), the connection keeps the socket.
//!
//! A write into a pipe whose reader is gone raises `SIGPIPE`, which kills
//! a program that never asked for it; `send(2)` has `MSG_NOSIGNAL`, a
//! pipe has nothing like it. So `SIGPIPE` is blocked in the writing thread
//! for the write and, if the write raised it, taken back (as libpq does:
//! only when none was pending before, and without waiting, since another
//! thread setting `SIGPIPE` to ignored discards a pending one).

use std::io::{self, ErrorKind, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pipe::PipeFlags;
use syncs_engine::wire::client::{parse_pipe_reply, switch_request, PIPE_REPLY_LEN, PIPE_VERSION};

use super::socket::write_all;

/// How long after the offer the sends look for the PIPE reply (one
/// `recv` each); then the socket is kept. A proxy answers at its first
/// read of the connection, which a busy machine may delay by milliseconds
/// while a client sends hundreds of frames.
const WAIT: Duration = Duration::from_millis(500);
/// The pipe's capacity asked for once it is full: four 64 KiB buffer
/// flushes (the default of 64 KiB takes one at a time). A pipe starts at
/// the default: the pages of every pipe a user has count against one
/// limit (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB), past which the
/// kernel gives that user's new pipes, the application's own too, two
/// pages; so only the connections that fill theirs grow them. The kernel
/// may refuse.
const PIPE_SIZE: usize = 256 << 10;

/// The first bytes that carry the offer, at most: a fresh socket's buffer
/// takes them at once, so the offer (and the fork gate it holds) never
/// waits for the proxy to read; `write` sends the rest.
const OFFER_BYTES: usize = 4096;

/// Where a connection's frames go.
#[derive(Debug)]
pub(super) enum Pipe {
    /// Nothing written yet: the first bytes carry the offer.
    Unoffered,
    /// Offered at `at`; the proxy's reply not seen yet.
    Offered { w: OwnedFd, at: Instant },
    /// Switched: frames go into the pipe.
    On(OwnedFd),
    /// The socket, for good.
    Off,
}

/// A write that failed: the bytes of `wire` written before the error.
pub(super) type WriteError = (usize, io::Error);

impl Pipe {
    /// The state of a new connection: `Unoffered` when pipes are wanted.
    pub(super) fn new(wanted: bool) -> Self {
        if wanted {
            Pipe::Unoffered
        } else {
            Pipe::Off
        }
    }

    /// Writes all of `wire` where the connection's frames go now. `sync`:
    /// a SYNC request, whose answer is read from the socket next, so an
    /// offer still unanswered is given up first.
    pub(super) fn write(
        &mut self,
        stream: &UnixStream,
        wire: &[u8],
        timeout: Option<Duration>,
        sync: bool,
    ) -> Result<(), WriteError> {
        match std::mem::replace(self, Pipe::Off) {
            Pipe::Unoffered if !sync => match offer(stream, wire) {
                Ok((w, sent)) => {
                    *self = Pipe::Offered {
                        w,
                        at: Instant::now(),
                    };
                    write_all(stream, &wire[sent..]).map_err(|(n, e)| (sent + n, e))
                }
                // No pipe to be had (descriptors, memory), or the socket
                // would not carry the descriptor: the socket alone, whose
                // own errors this write then reports.
                Err(Offer::NoPipe) => write_all(stream, wire),
                // The send timeout passed: not waited for twice.
                Err(Offer::Failed(e)) => Err((0, e)),
            },
            Pipe::Offered { w, at } => match reply(stream) {
                Reply::Taken => {
                    write_all(stream, &switch_request()).map_err(|(_, e)| (0, e))?;
                    let result = write_pipe(&w, wire, timeout);
                    *self = Pipe::On(w);
                    result
                }
                Reply::NotYet if !sync && at.elapsed() < WAIT => {
                    *self = Pipe::Offered { w, at };
                    write_all(stream, wire)
                }
                // Given up: the write end closes, the proxy never reads it.
                _ => write_all(stream, wire),
            },
            Pipe::On(w) => {
                let result = write_pipe(&w, wire, timeout);
                *self = Pipe::On(w);
                result
            }
            Pipe::Unoffered | Pipe::Off => write_all(stream, wire),
        }
    }
}

enum Offer {
    NoPipe,
    Failed(io::Error),
}

/// Makes a pipe and sends its read end with the first bytes of `wire`;
/// returns the write end and how many bytes went.
fn offer(stream: &UnixStream, wire: &[u8]) -> Result<(OwnedFd, usize), Offer> {
    // No fork while the read end is ours (declared first, so dropped after
    // `r` on every way out); forks that kept the gate closed too long: no
    // offer.
    let Some(_gate) = crate::fork::offer_gate() else {
        return Err(Offer::NoPipe);
    };
    let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|_| Offer::NoPipe)?;
    // Both ends non-blocking: the write end for the send timeout (see
    // `write_pipe`); the proxy reads its end non-blocking anyway.
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [r.as_fd()];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Offer::NoPipe);
    }
    loop {
        match rustix::net::sendmsg(
            stream,
            &[IoSlice::new(&wire[..wire.len().min(OFFER_BYTES)])],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            // Our copy of the read end closes here: the proxy holds its own.
            Ok(sent) => return Ok((w, sent)),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) if e == rustix::io::Errno::AGAIN => return Err(Offer::Failed(e.into())),
            // A refusal of the descriptor (`ETOOMANYREFS`, ...) or of the
            // socket: `write_all` tells which.
            Err(_) => return Err(Offer::NoPipe),
        }
    }
}

enum Reply {
    Taken,
    NotYet,
    /// Something else, or the proxy closed: the socket path reports it.
    Other,
}

/// Looks for the proxy's PIPE reply on the socket without waiting; takes
/// it off the socket when it is there whole.
fn reply(stream: &UnixStream) -> Reply {
    let mut bytes = [0u8; PIPE_REPLY_LEN];
    let peek = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    match rustix::net::recv(stream, &mut bytes[..], peek) {
        Ok((n, _)) if n == PIPE_REPLY_LEN => {
            let Some(version) = parse_pipe_reply(&bytes) else {
                return Reply::Other;
            };
            // Taken off the socket whatever its version; another version
            // than ours is an offer given up (the socket is kept).
            loop {
                match rustix::net::recv(stream, &mut bytes[..], RecvFlags::DONTWAIT) {
                    Ok((n, _)) if n == PIPE_REPLY_LEN && version == PIPE_VERSION => {
                        return Reply::Taken
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    _ => return Reply::Other,
                }
            }
        }
        Ok((0, _)) => Reply::Other,
        Ok(_) => Reply::NotYet,
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => Reply::NotYet,
        Err(_) => Reply::Other,
    }
}

/// Writes all of `wire` into the pipe, waiting while it is full up to
/// `timeout` (`None`: for ever) since the last byte the proxy took, as the
/// socket's send timeout does; `SIGPIPE` blocked meanwhile (see the module
/// documentation). An `EPIPE` is the proxy gone, as on the socket.
fn write_pipe(w: &OwnedFd, wire: &[u8], timeout: Option<Duration>) -> Result<(), WriteError> {
    let from_now = || timeout.and_then(|t| Instant::now().checked_add(t));
    let mut deadline = from_now();
    let sigpipe = SigpipeBlocked::new();
    let mut written = 0;
    while written < wire.len() {
        match rustix::io::write(w, &wire[written..]) {
            Ok(n) => {
                written += n;
                deadline = from_now();
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                if grow(w) {
                    continue;
                }
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left.is_some_and(|l| l.is_zero()) {
                    return Err((written, ErrorKind::WouldBlock.into()));
                }
                let mut fds = [PollFd::new(w, PollFlags::OUT)];
                let wait = left.and_then(|l| Timespec::try_from(l).ok());
                match poll(&mut fds, wait.as_ref()) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err((written, e.into())),
                }
            }
            Err(e) => {
                if e == rustix::io::Errno::PIPE {
                    sigpipe.take_raised();
                }
                return Err((written, e.into()));
            }
        }
    }
    Ok(())
}

/// Grows a full pipe to [`PIPE_SIZE`]; whether it grew.
fn grow(w: &OwnedFd) -> bool {
    match rustix::pipe::fcntl_getpipe_size(w) {
        Ok(size) if size < PIPE_SIZE => {
            rustix::pipe::fcntl_setpipe_size(w, PIPE_SIZE).is_ok_and(|new| new > size)
        }
        _ => false,
    }
}

/// `SIGPIPE` blocked in this thread while it lives (unless it was already),
/// the previous mask restored when dropped.
struct SigpipeBlocked {
    /// The mask to restore; `None` when the thread already blocked it (then
    /// nothing is changed).
    old: Option<SigSet>,
    /// A `SIGPIPE` was pending already: one raised by the write merges with
    /// it and is not ours to take.
    pending_before: bool,
}

impl SigpipeBlocked {
    fn new() -> Self {
        let mut old = SigSet::empty();
        let block = SigSet::from(Signal::SIGPIPE);
        let old = match pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old)) {
            Ok(()) if !old.contains(Signal::SIGPIPE) => Some(old),
            _ => None,
        };
        // Where it was not blocked, a pending one would have been
        // delivered already: only a thread that blocks it may have one
        // (a system call per write spared in the usual case).
        let pending_before = old.is_none() && sigpipe_pending();
        SigpipeBlocked {
            old,
            pending_before,
        }
    }

    /// Takes back the `SIGPIPE` a write just raised in this thread, also
    /// in a thread that blocks it for good (a socket write raises none):
    /// pending and blocked, it is taken without waiting, and if it is gone
    /// (another thread set `SIGPIPE` to ignored meanwhile) nothing waits.
    fn take_raised(&self) {
        if !self.pending_before {
            take_pending_sigpipe();
        }
    }
}

/// Whether a `SIGPIPE` is pending for this thread or the process.
#[allow(unsafe_code)]
fn sigpipe_pending() -> bool {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the `sigset_t` it is given, here one of
    // ours, valid for writes; it is read only when the call succeeded, and
    // `sigismember` only reads it.
    unsafe {
        libc::sigpending(set.as_mut_ptr()) == 0
            && libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1
    }
}

/// Accepts a pending `SIGPIPE`, if there is one, without waiting.
#[allow(unsafe_code)]
fn take_pending_sigpipe() {
    let set = SigSet::from(Signal::SIGPIPE);
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: `set` and `now` are valid for reads for the call; a null
        // `siginfo_t` pointer is allowed (the details are not wanted).
        let rc = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &now) };
        if rc != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
        }
    }
}
