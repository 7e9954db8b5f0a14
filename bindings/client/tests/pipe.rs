//! The pipe transport against a fake proxy on a real `UnixListener` that
//! takes the offered pipe (docs/protocol.md, 1d): which frames go where,
//! and a SYNC sent before the proxy's answer.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use intc_client::{Config, Connection, Frame};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use syncs_engine::wire::client::{
    parse_control, pipe_reply, sync_reply, Control, FrameDecoder, Framed, CONTROL_MARK,
};

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "k", tag]]).expect("frame")
}

/// What a frame of the test is: a data frame by its value, or a control.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Data(String),
    Control(Control),
}

/// Every whole frame of `bytes`, in order.
fn items(bytes: &[u8]) -> Vec<Item> {
    let mut dec = FrameDecoder::new(64 << 20);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(Framed::Frame(p)) = dec.decode(&mut buf) {
        if p.first() == Some(&CONTROL_MARK) {
            out.push(Item::Control(
                parse_control(&p).expect("a known control frame"),
            ));
        } else {
            // `...$<n>\r\n<value>\r\n`: the value is the last argument.
            let text = String::from_utf8_lossy(&p).into_owned();
            let value = text
                .trim_end_matches("\r\n")
                .rsplit("\r\n")
                .next()
                .unwrap_or_default();
            out.push(Item::Data(value.to_owned()));
        }
    }
    out
}

/// Reads the connection's first bytes with the descriptors sent with them.
fn first_bytes(sock: &UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut bytes = vec![0u8; 1 << 16];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    bytes.truncate(msg.bytes);
    (bytes, fds)
}

/// Reads the socket until `done` says its bytes so far are enough.
fn read_until(
    sock: &mut UnixStream,
    mut bytes: Vec<u8>,
    done: impl Fn(&[Item]) -> bool,
) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    while !done(&items(&bytes)) {
        let n = sock.read(&mut chunk).expect("read");
        assert!(n > 0, "the client closed before: {:?}", items(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
    }
    bytes
}

fn connection(path: &std::path::Path) -> Connection {
    let config = Config {
        pipe: true,
        send_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    };
    Connection::new(path, config).expect("connection")
}

#[test]
fn once_the_proxy_takes_the_pipe_the_frames_after_the_switch_go_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let (replied_tx, replied) = std::sync::mpsc::channel();
    let proxy = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let (first, mut fds) = first_bytes(&sock);
        assert_eq!(fds.len(), 1, "one descriptor with the first bytes");
        sock.write_all(&pipe_reply()).expect("PIPE reply");
        replied_tx.send(()).expect("the test is gone");
        let on_socket = read_until(&mut sock, first, |items| {
            items.contains(&Item::Control(Control::Switch))
        });
        let pipe = fds.pop().expect("the pipe");
        rustix::io::ioctl_fionbio(&pipe, false).expect("blocking reads");
        let mut in_pipe = Vec::new();
        File::from(pipe)
            .read_to_end(&mut in_pipe)
            .expect("read the pipe");
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).expect("read the socket");
        (items(&on_socket), items(&in_pipe), rest)
    });
    let conn = connection(&path);
    conn.send(&frame("0")).expect("send");
    // The next send finds the answer (the sends after the offer look for
    // it for a while, and these would all be done before a slow thread
    // answered).
    replied
        .recv_timeout(Duration::from_secs(10))
        .expect("the PIPE reply");
    for i in 1..3000 {
        conn.send(&frame(&i.to_string())).expect("send");
    }
    drop(conn);
    let (on_socket, in_pipe, rest) = proxy.join().expect("fake proxy");
    assert_eq!(on_socket.last(), Some(&Item::Control(Control::Switch)));
    assert!(!in_pipe.is_empty(), "nothing went through the pipe");
    assert!(rest.is_empty(), "bytes on the socket after the SWITCH");
    let all: Vec<Item> = on_socket
        .into_iter()
        .filter(|i| matches!(i, Item::Data(_)))
        .chain(in_pipe)
        .collect();
    let expected: Vec<Item> = (0..3000).map(|i| Item::Data(i.to_string())).collect();
    assert_eq!(all, expected);
}

#[test]
fn a_sync_before_the_answer_keeps_the_socket_and_skips_the_late_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let proxy = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let (first, fds) = first_bytes(&sock);
        assert_eq!(fds.len(), 1);
        // Answered only once the SYNC is here: the PIPE reply first, as a
        // proxy sends it, then the SYNC's.
        let seen = read_until(&mut sock, first, |items| {
            items
                .iter()
                .any(|i| matches!(i, Item::Control(Control::Sync(_))))
        });
        let token = items(&seen)
            .iter()
            .find_map(|i| match i {
                Item::Control(Control::Sync(t)) => Some(*t),
                _ => None,
            })
            .expect("a SYNC");
        sock.write_all(&pipe_reply()).expect("PIPE reply");
        sock.write_all(&sync_reply(token, 0)).expect("SYNC reply");
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).expect("read the socket");
        (items(&seen), items(&rest))
    });
    let conn = connection(&path);
    conn.send(&frame("a")).expect("send");
    assert_eq!(conn.sync(Duration::from_secs(10)).expect("sync"), 0);
    conn.send(&frame("b")).expect("send");
    drop(conn);
    let (before, after) = proxy.join().expect("fake proxy");
    assert_eq!(before[0], Item::Data("a".into()));
    assert!(matches!(before[1], Item::Control(Control::Sync(_))));
    assert_eq!(
        after,
        vec![Item::Data("b".into())],
        "no SWITCH, b on the socket"
    );
}

/// A fake proxy that takes the pipe, answers PIPE and reads the socket
/// until the SWITCH, which it tells on the channel returned; then `after`
/// gets the socket and the pipe.
fn taking_proxy<T: Send + 'static>(
    listener: UnixListener,
    after: impl FnOnce(UnixStream, OwnedFd) -> T + Send + 'static,
) -> (thread::JoinHandle<T>, std::sync::mpsc::Receiver<()>) {
    let (switched_tx, switched) = std::sync::mpsc::channel();
    let proxy = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let (first, mut fds) = first_bytes(&sock);
        assert_eq!(fds.len(), 1, "one descriptor with the first bytes");
        sock.write_all(&pipe_reply()).expect("PIPE reply");
        read_until(&mut sock, first, |items| {
            items.contains(&Item::Control(Control::Switch))
        });
        let _ = switched_tx.send(());
        after(sock, fds.pop().expect("the pipe"))
    });
    (proxy, switched)
}

/// Sends small frames until the connection switched to the pipe (the
/// proxy's answer is looked for on each send after the offer).
fn send_until_switched(conn: &Connection, switched: &std::sync::mpsc::Receiver<()>) {
    let mut i = 0;
    while switched.try_recv().is_err() {
        conn.send(&frame(&i.to_string())).expect("send");
        i += 1;
        thread::sleep(Duration::from_millis(1));
    }
}

#[allow(unsafe_code)]
fn sigpipe_pending() -> bool {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the set it is given, valid for writes;
    // it is read only when the call succeeded.
    unsafe {
        libc::sigpending(set.as_mut_ptr()) == 0
            && libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1
    }
}

#[test]
fn a_thread_that_blocks_sigpipe_is_left_no_pending_one_by_a_pipe_whose_reader_went() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    // The reader goes, the socket stays: the next write meets EPIPE.
    let (proxy, switched) = taking_proxy(listener, |sock, pipe| {
        drop(pipe);
        sock
    });
    // In a thread of its own, whose mask the test may change.
    thread::spawn(move || {
        pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&SigSet::from(Signal::SIGPIPE)),
            None,
        )
        .expect("block SIGPIPE");
        let conn = connection(&path);
        conn.send(&frame("first")).expect("send");
        send_until_switched(&conn, &switched);
        let _sock = proxy.join().expect("fake proxy");
        // Into the pipe nobody reads: EPIPE, an error of the call.
        let before = conn.stats().errors;
        assert!(conn.send(&frame("after")).is_err(), "{:?}", conn.stats());
        assert_eq!(conn.stats().errors, before + 1, "{:?}", conn.stats());
        // A socket write raises no SIGPIPE; neither may the pipe's.
        assert!(!sigpipe_pending(), "a SIGPIPE is left pending");
    })
    .join()
    .expect("test thread");
}

#[test]
fn a_large_frame_the_proxy_takes_slowly_is_not_cut_by_the_send_timeout_and_grows_the_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let big = 2 << 20;
    let (proxy, switched) = taking_proxy(listener, move |sock, pipe| {
        rustix::io::ioctl_fionbio(&pipe, false).expect("blocking reads");
        let size_before = rustix::pipe::fcntl_getpipe_size(&pipe).expect("pipe size");
        let mut pipe = File::from(pipe);
        // 64 KiB every 20 ms: the frame takes ~0.6 s, the timeout is 0.2 s.
        // Read to the end: the client closes when done.
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = pipe.read(&mut chunk).expect("read the pipe");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            thread::sleep(Duration::from_millis(20));
        }
        let size_after = rustix::pipe::fcntl_getpipe_size(&pipe).expect("pipe size");
        drop(sock);
        (got, size_before, size_after)
    });
    let config = Config {
        pipe: true,
        send_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let conn = Connection::new(&path, config).expect("connection");
    conn.send(&frame("first")).expect("send");
    send_until_switched(&conn, &switched);
    let value = "v".repeat(big);
    let large = Frame::redis(6379, 0, &[["set", "big", value.as_str()]]).expect("frame");
    conn.send(&large)
        .expect("a send the proxy keeps taking bytes of does not time out");
    drop(conn);
    let (got, size_before, size_after) = proxy.join().expect("fake proxy");
    assert_eq!(items(&got).last(), Some(&Item::Data(value)));
    // The pipe starts at the kernel's default and grows once full.
    assert!(size_before < 256 << 10, "{size_before}");
    assert_eq!(size_after, 256 << 10);
}
