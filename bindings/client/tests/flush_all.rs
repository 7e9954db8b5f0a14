//! `flush_all`, in its own test binary: it flushes every buffering
//! connection of the process, which would disturb other tests.

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use intc_client::{flush_all, Buffering, Config, Connection, Frame};
use syncs_engine::wire::client::{FrameDecoder, Framed};

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "k", tag]]).expect("frame")
}

fn buffered(size: usize, linger: Duration) -> Config {
    Config {
        buffering: Some(Buffering { size, linger }),
        ..Config::default()
    }
}

/// Reads until `count` whole frames arrived (or 5 s passed); their last
/// arguments.
fn read_frames(stream: &mut UnixStream, count: usize) -> Vec<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = BytesMut::new();
    let mut out = Vec::new();
    let mut dec = FrameDecoder::new(1 << 20);
    let mut chunk = [0u8; 4096];
    while out.len() < count && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        while let Some(Framed::Frame(p)) = dec.decode(&mut all) {
            let text = String::from_utf8_lossy(&p).into_owned();
            out.push(text.rsplit("\r\n").nth(1).expect("last arg").to_owned());
        }
    }
    out
}

#[test]
fn flush_all_writes_every_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let a = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    let b = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    a.send(&frame("a")).expect("send");
    let (mut peer_a, _) = listener.accept().expect("accept");
    b.send(&frame("b")).expect("send");
    let (mut peer_b, _) = listener.accept().expect("accept");
    flush_all().expect("flush_all");
    assert_eq!(read_frames(&mut peer_a, 1), ["a"]);
    assert_eq!(read_frames(&mut peer_b, 1), ["b"]);
}
