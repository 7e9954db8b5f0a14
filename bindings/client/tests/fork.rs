//! Fork safety with a real `fork()`. Its own test binary with a single test,
//! and no helper threads: the child only uses the connection and exits.

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use bytes::BytesMut;
use intc_client::{Config, Connection, Frame, Registry};
use syncs_engine::wire::client::{FrameDecoder, Framed};

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "who", tag]]).expect("frame")
}

/// Reads whatever is available now (the peer may still be open).
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
        let tag = text.rsplit("\r\n").nth(1).expect("last arg").to_owned();
        out.push(tag);
    }
    assert!(dec.is_idle(&buf), "partial frame");
    out
}

#[test]
#[allow(unsafe_code)]
fn a_forked_child_opens_its_own_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, Config::default()).expect("conn");
    let registry = Registry::new(Config::default()).expect("registry");
    conn.send(&frame("parent-1")).expect("parent send");
    registry
        .send(&path, &frame("parent-registry"))
        .expect("parent registry send");
    let (mut parent_conn, _) = listener.accept().expect("accept parent");
    let (mut parent_reg, _) = listener.accept().expect("accept parent registry");

    let child_frame = frame("child");
    let child_reg_frame = frame("child-registry");
    // SAFETY: this test binary runs this single test and starts no thread of
    // its own, so no lock (malloc's included) can be held by another thread
    // at the fork; the child only sends two prepared frames and `_exit`s
    // without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = conn.send(&child_frame).is_ok()
            && registry.send(&path, &child_reg_frame).is_ok()
            && conn.stats().frames == 2
            && conn.stats().reconnects == 1;
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

    conn.send(&frame("parent-2"))
        .expect("parent send after fork");
    registry
        .send(&path, &frame("parent-registry-2"))
        .expect("parent registry after fork");

    // The child made two connections of its own, and wrote nothing into ours.
    let (mut child_a, _) = listener.accept().expect("accept child");
    let (mut child_b, _) = listener.accept().expect("accept child registry");
    let mut child_tags = tags(&read_available(&mut child_a));
    child_tags.extend(tags(&read_available(&mut child_b)));
    child_tags.sort();
    assert_eq!(child_tags, ["child", "child-registry"]);
    assert_eq!(
        tags(&read_available(&mut parent_conn)),
        ["parent-1", "parent-2"]
    );
    assert_eq!(
        tags(&read_available(&mut parent_reg)),
        ["parent-registry", "parent-registry-2"]
    );
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.connects, stats.reconnects), (2, 1, 0));
}
