//! A forked child never writes the frames its parent buffered. Its own
//! test binary with a single test: the only other thread is the parent's
//! flusher, idle (a long linger) at the fork.

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use bytes::BytesMut;
use intc_client::{Buffering, Config, Connection, Frame};
use syncs_engine::wire::client::{FrameDecoder, Framed};

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "who", tag]]).expect("frame")
}

fn read_available(stream: &mut UnixStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

fn tags(bytes: &[u8]) -> Vec<String> {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(Framed::Frame(p)) = dec.decode(&mut buf) {
        let text = String::from_utf8_lossy(&p).into_owned();
        out.push(text.rsplit("\r\n").nth(1).expect("last arg").to_owned());
    }
    assert!(dec.is_idle(&buf), "partial frame");
    out
}

#[test]
#[allow(unsafe_code)]
fn a_forked_child_drops_its_parents_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let config = Config {
        buffering: Some(Buffering {
            size: 1 << 16,
            linger: Duration::from_secs(10),
        }),
        ..Config::default()
    };
    let conn = Connection::new(&path, config).expect("conn");
    conn.send(&frame("parent-1")).expect("parent send");
    conn.send(&frame("parent-2")).expect("parent send");
    let (mut parent_peer, _) = listener.accept().expect("accept parent");
    assert_eq!(conn.stats().pending, 2);

    let child_frame = frame("child");
    // SAFETY: the only other thread is the connection's flusher, waiting
    // on its condition variable (10 s linger) without holding the lock;
    // the child only sends, flushes and `_exit`s without running
    // destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let before = conn.stats().pending;
        let ok = conn.send(&child_frame).is_ok()
            && conn.stats().pending == 1
            && conn.flush().is_ok()
            && conn.stats().frames == 1
            && before == 2;
        // SAFETY: `_exit` is async-signal-safe and ends the child at once.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    let (mut child_peer, _) = listener.accept().expect("accept child");
    assert_eq!(tags(&read_available(&mut child_peer)), ["child"]);
    // The parent's buffer is intact and still its own.
    assert!(read_available(&mut parent_peer).is_empty());
    assert_eq!(conn.stats().pending, 2);
    conn.flush().expect("parent flush");
    assert_eq!(
        tags(&read_available(&mut parent_peer)),
        ["parent-1", "parent-2"]
    );
}
