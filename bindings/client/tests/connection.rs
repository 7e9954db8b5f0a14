//! A real `UnixListener` in a temporary directory plays the proxy.

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use intc_client::{ClientError, Config, Connection, Frame, Registry, Stats};
use syncs_engine::op::Op;
use syncs_engine::wire::client::{decode_payload, FrameDecoder, Framed, DEFAULT_MAX_FRAME};

const SEED_WIRE: &[u8] = b"\x22\0\0\x006379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("proxy.sock")
}

/// Reads everything `stream` receives until EOF and cuts it into payloads.
fn read_payloads(mut stream: UnixStream) -> Vec<Bytes> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read");
    cut(&all)
}

fn cut(bytes: &[u8]) -> Vec<Bytes> {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(framed) = dec.decode(&mut buf) {
        match framed {
            Framed::Frame(p) => out.push(p),
            Framed::Oversize { len } => panic!("oversize frame of {len} bytes on the wire"),
        }
    }
    assert!(dec.is_idle(&buf), "a partial frame was left on the wire");
    out
}

fn set_frame(key: &str, value: &[u8]) -> Frame {
    Frame::redis(6379, 0, &[[b"set".as_slice(), key.as_bytes(), value]]).expect("frame")
}

#[test]
fn the_seed_frame_arrives_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, Config::default()).expect("conn");
    assert!(!conn.is_connected(), "connects lazily");
    conn.send(&Frame::redis(6379, 1, &[["set", "a", "b"]]).expect("frame"))
        .expect("send");
    assert!(conn.is_connected());
    let (mut peer, _) = listener.accept().expect("accept");
    drop(conn);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).expect("read");
    assert_eq!(got, SEED_WIRE);
}

#[test]
fn frames_from_many_threads_arrive_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let reader = thread::spawn(move || {
        let (peer, _) = listener.accept().expect("accept");
        read_payloads(peer)
    });
    let conn = Arc::new(Connection::new(&path, Config::default()).expect("conn"));
    let threads = 8;
    let per_thread = 200;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conn = Arc::clone(&conn);
            thread::spawn(move || {
                for i in 0..per_thread {
                    // Values of varied sizes, some larger than a socket buffer.
                    let value = vec![b'a' + (t as u8); (i * 997) % 300_000];
                    conn.send(&set_frame(&format!("t{t}:{i}"), &value))
                        .expect("send");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("sender thread");
    }
    let stats = conn.stats();
    drop(conn);
    let payloads = reader.join().expect("reader");
    assert_eq!(payloads.len(), threads * per_thread);
    let mut seen = vec![vec![false; per_thread]; threads];
    for payload in &payloads {
        let Ok(Op::Redis(op)) = decode_payload(payload) else {
            panic!("undecodable payload")
        };
        let args = op.commands[0].args();
        let key = std::str::from_utf8(&args[1]).expect("utf8");
        let (t, i) = key[1..].split_once(':').expect("key shape");
        let (t, i): (usize, usize) = (t.parse().expect("t"), i.parse().expect("i"));
        assert_eq!(args[2].len(), (i * 997) % 300_000);
        assert!(
            args[2].iter().all(|&b| b == b'a' + t as u8),
            "bytes of another frame"
        );
        seen[t][i] = true;
    }
    assert!(seen.iter().flatten().all(|&s| s));
    assert_eq!(stats.frames, (threads * per_thread) as u64);
    assert_eq!(
        stats.bytes,
        payloads.iter().map(|p| p.len() as u64 + 4).sum::<u64>()
    );
    assert_eq!((stats.errors, stats.connects, stats.reconnects), (0, 1, 0));
}

#[test]
fn fails_fast_when_nobody_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let conn = Connection::new(&path, Config::default()).expect("conn");
    let frame = set_frame("k", b"v");

    // No socket file at all.
    let start = Instant::now();
    let err = conn.send(&frame).expect_err("should fail");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "not fail-fast"
    );
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
    assert!(err.is_unavailable());
    let msg = err.to_string();
    assert!(
        msg.contains("proxy unavailable") && msg.contains("proxy.sock"),
        "{msg}"
    );

    // A socket file left behind by a proxy that is gone.
    drop(UnixListener::bind(&path).expect("bind"));
    let err = conn.send(&frame).expect_err("should fail");
    assert!(
        matches!(&err, ClientError::Unavailable { error, .. } if error.kind() == ErrorKind::ConnectionRefused),
        "{err}"
    );

    let stats = conn.stats();
    assert_eq!((stats.frames, stats.errors, stats.connects), (0, 2, 0));
}

#[test]
fn reconnects_after_the_listener_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let conn = Connection::new(&path, Config::default()).expect("conn");

    let first = UnixListener::bind(&path).expect("bind");
    conn.send(&set_frame("k", b"1")).expect("send 1");
    let (peer, _) = first.accept().expect("accept");
    // The proxy goes away: its listener, its socket file, its connection.
    drop(first);
    std::fs::remove_file(&path).expect("rm socket");
    drop(peer);
    let err = conn.send(&set_frame("k", b"2")).expect_err("should fail");
    assert!(err.is_unavailable(), "{err}");
    assert!(!conn.is_connected());

    // The proxy is back: the next send reconnects by itself.
    let second = UnixListener::bind(&path).expect("rebind");
    conn.send(&set_frame("k", b"3")).expect("send 3");
    let (peer, _) = second.accept().expect("accept");

    // It restarts again while we hold an open stream: nothing of the next
    // frame was written when the dead stream said EPIPE, so it goes out on
    // a new connection instead of being lost.
    drop(second);
    std::fs::remove_file(&path).expect("rm socket");
    let got = read_payloads_after_close(peer, &conn);
    assert_eq!(got.len(), 1);
    let third = UnixListener::bind(&path).expect("rebind");
    conn.send(&set_frame("k", b"4"))
        .expect("send 4 after a silent restart");
    let (peer, _) = third.accept().expect("accept");
    conn.disconnect().expect("disconnect");
    let got = read_payloads(peer);
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(b"$1\r\n4\r\n"));

    let stats = conn.stats();
    assert_eq!(
        stats,
        Stats {
            frames: 3,
            bytes: 3 * set_frame("k", b"1").as_bytes().len() as u64,
            errors: 1,
            connects: 3,
            reconnects: 2,
            ..Stats::default()
        }
    );
}

/// Reads what `peer` got so far, then closes it (the proxy dies) while
/// `conn` still holds its end.
fn read_payloads_after_close(peer: UnixStream, conn: &Connection) -> Vec<Bytes> {
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut peer = peer;
    let mut buf = vec![0u8; 4096];
    let n = peer.read(&mut buf).expect("read");
    assert!(conn.is_connected());
    drop(peer);
    cut(&buf[..n])
}

#[test]
fn a_stalled_proxy_times_out_and_the_stream_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let config = Config {
        send_timeout: Some(Duration::from_millis(100)),
        ..Config::default()
    };
    let conn = Connection::new(&path, config).expect("conn");
    // Accepted but never read: the socket buffer fills up.
    let big = set_frame("k", &vec![b'x'; 4 << 20]);
    let start = Instant::now();
    let err = conn.send(&big).expect_err("should fail");
    let elapsed = start.elapsed();
    let ClientError::Io {
        written,
        len,
        error,
        ..
    } = &err
    else {
        panic!("expected an I/O error, got {err}")
    };
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{err}");
    assert!(*written > 0 && written < len, "{err}");
    assert!(err.to_string().contains("send timeout"), "{err}");
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(
        !conn.is_connected(),
        "a half-written stream must be dropped"
    );

    // What the proxy got ends in a partial frame, then EOF: it can tell.
    let (mut peer, _) = listener.accept().expect("accept");
    let mut got = Vec::new();
    peer.read_to_end(&mut got).expect("read");
    assert!(got.len() < big.as_bytes().len());
    assert_eq!(&got[..], &big.as_bytes()[..got.len()]);
}

#[test]
fn frames_above_the_limit_are_refused_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(
        &path,
        Config {
            max_frame: 64,
            ..Config::default()
        },
    )
    .expect("conn");
    let err = conn
        .send(&set_frame("k", &[b'x'; 100]))
        .expect_err("should fail");
    assert!(
        matches!(err, ClientError::TooLarge { max: 64, .. }),
        "{err}"
    );
    conn.send(&set_frame("k", b"small")).expect("send");
    let (peer, _) = listener.accept().expect("accept");
    drop(conn);
    assert_eq!(read_payloads(peer).len(), 1);
}

#[test]
fn settings_are_checked() {
    let err = Connection::new("", Config::default()).expect_err("should fail");
    assert!(err.to_string().contains("empty"), "{err}");
    let long = Path::new("/tmp").join("x".repeat(200));
    let err = Connection::new(&long, Config::default()).expect_err("should fail");
    assert!(err.to_string().contains("unix socket path"), "{err}");
    let zero = Config {
        send_timeout: Some(Duration::ZERO),
        ..Config::default()
    };
    assert!(matches!(
        Registry::new(zero).expect_err("should fail"),
        ClientError::InvalidArgument(_)
    ));
    let conn = Connection::new("/tmp/x.sock", Config::default()).expect("conn");
    assert!(conn.set_send_timeout(Some(Duration::ZERO)).is_err());
    conn.set_send_timeout(None).expect("no timeout");
    assert_eq!(conn.config().send_timeout, None);
}

#[test]
fn registry_shares_one_connection_per_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    let la = UnixListener::bind(&a).expect("bind a");
    let lb = UnixListener::bind(&b).expect("bind b");
    let registry = Registry::new(Config::default()).expect("registry");
    let first = registry.get(&a).expect("a");
    assert!(Arc::ptr_eq(&first, &registry.get(&a).expect("a again")));
    // The same path spelt differently is the same connection, whichever
    // path was used just before.
    let spelt = PathBuf::from(format!("{}//./a.sock", dir.path().display()));
    assert!(Arc::ptr_eq(&first, &registry.get(&spelt).expect("a spelt")));
    assert!(!Arc::ptr_eq(&first, &registry.get(&b).expect("b")));
    assert!(Arc::ptr_eq(&first, &registry.get(&spelt).expect("a spelt")));
    assert!(Arc::ptr_eq(&first, &registry.get(&a).expect("a")));
    drop(first);
    let frame = set_frame("k", b"v");
    registry.send(&a, &frame).expect("a 1");
    registry.send(&a, &frame).expect("a 2");
    registry.send(&b, &frame).expect("b 1");
    assert_eq!(registry.stats_for(&a).map(|s| s.frames), Some(2));
    assert_eq!(registry.stats_for(dir.path().join("c.sock")), None);
    let total = registry.stats();
    assert_eq!((total.frames, total.connects), (3, 2));
    let (pa, _) = la.accept().expect("accept a");
    let (pb, _) = lb.accept().expect("accept b");
    let before_clear = registry.get(&a).expect("a");
    registry.clear();
    assert!(!Arc::ptr_eq(
        &before_clear,
        &registry.get(&a).expect("a anew")
    ));
    drop(before_clear);
    registry.clear();
    assert_eq!(registry.stats(), Stats::default());
    assert_eq!(read_payloads(pa).len(), 2);
    assert_eq!(read_payloads(pb).len(), 1);
}
