//! Buffering and the connect policy, with a real `UnixListener` as the
//! proxy.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use intc_client::{
    Buffering, ClientError, Config, Connection, Frame, RedisFrame, TryBuffer, DEFAULT_BUFFER_SIZE,
    DEFAULT_LINGER,
};
use syncs_engine::wire::client::{parse_sync_request, sync_reply, FrameDecoder, Framed};

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("proxy.sock")
}

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "k", tag]]).expect("frame")
}

fn buffered(size: usize, linger: Duration) -> Config {
    Config {
        buffering: Some(Buffering { size, linger }),
        ..Config::default()
    }
}

/// The last argument of every whole frame in `bytes` (fails on a partial
/// frame).
fn tags(bytes: &[u8]) -> Vec<String> {
    let mut dec = FrameDecoder::new(1 << 24);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(Framed::Frame(p)) = dec.decode(&mut buf) {
        let text = String::from_utf8_lossy(&p).into_owned();
        out.push(text.rsplit("\r\n").nth(1).expect("last arg").to_owned());
    }
    assert!(dec.is_idle(&buf), "a partial frame on the wire");
    out
}

/// Reads what arrives within `wait`.
fn read_for(stream: &mut UnixStream, wait: Duration) -> Vec<u8> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 1 << 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return out
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until `count` whole frames arrived (or 5 s passed).
fn read_frames(stream: &mut UnixStream, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = Vec::new();
    while Instant::now() < deadline {
        all.extend(read_for(stream, Duration::from_millis(20)));
        let mut dec = FrameDecoder::new(1 << 24);
        let mut buf = BytesMut::from(&all[..]);
        let mut n = 0;
        while let Some(Framed::Frame(_)) = dec.decode(&mut buf) {
            n += 1;
        }
        if n >= count {
            break;
        }
    }
    tags(&all)
}

#[test]
fn buffered_frames_arrive_only_when_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    for tag in ["a", "b", "c"] {
        conn.send(&frame(tag)).expect("send");
    }
    let (mut peer, _) = listener.accept().expect("accept: a buffered send connects");
    assert!(read_for(&mut peer, Duration::from_millis(200)).is_empty());
    let stats = conn.stats();
    assert_eq!(
        (stats.frames, stats.buffered, stats.pending, stats.flushes),
        (0, 3, 3, 0)
    );
    conn.flush().expect("flush");
    assert_eq!(read_frames(&mut peer, 3), ["a", "b", "c"]);
    let stats = conn.stats();
    assert_eq!(
        (stats.frames, stats.buffered, stats.pending, stats.flushes),
        (3, 3, 0, 1)
    );
    assert_eq!(stats.bytes, 3 * frame("a").as_bytes().len() as u64);
    conn.flush().expect("an empty flush is a no-op");
    assert_eq!(conn.stats().flushes, 1);
}

#[test]
fn the_linger_flushes_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let linger = Duration::from_millis(50);
    let conn = Connection::new(&path, buffered(1 << 16, linger)).expect("conn");
    let start = Instant::now();
    conn.send(&frame("first")).expect("send");
    let (mut peer, _) = listener.accept().expect("accept");
    // Nothing yet, well before the linger.
    assert!(read_for(&mut peer, Duration::from_millis(10)).is_empty());
    assert_eq!(read_frames(&mut peer, 1), ["first"]);
    let waited = start.elapsed();
    assert!(
        waited >= linger,
        "written after {waited:?}, before the linger"
    );
    assert!(
        waited < Duration::from_secs(1),
        "written only after {waited:?}"
    );
    // Again, with the flusher already running.
    let start = Instant::now();
    conn.send(&frame("second")).expect("send");
    conn.send(&frame("third")).expect("send");
    assert_eq!(read_frames(&mut peer, 2), ["second", "third"]);
    let waited = start.elapsed();
    assert!(
        waited >= linger && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.flushes, stats.pending), (3, 2, 0));
}

#[test]
fn a_full_buffer_is_written_at_once_and_large_frames_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let one = frame("00").as_bytes().len();
    // Room for exactly 4 frames.
    let conn = Connection::new(&path, buffered(4 * one, Duration::from_secs(10))).expect("conn");
    for i in 0..4 {
        conn.send(&frame(&format!("{i:02}"))).expect("send");
    }
    let (mut peer, _) = listener.accept().expect("accept");
    assert_eq!(read_frames(&mut peer, 4), ["00", "01", "02", "03"]);
    assert_eq!(conn.stats().flushes, 1);
    // One buffered, then one larger than the buffer: in order, whole.
    conn.send(&frame("small")).expect("send");
    let big = "x".repeat(8 * one);
    conn.send(&frame(&big)).expect("send big");
    assert_eq!(read_frames(&mut peer, 2), ["small".to_owned(), big]);
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.buffered, stats.pending), (6, 5, 0));
}

#[test]
fn sync_and_drop_flush_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    // A proxy that answers SYNC requests and records the frames.
    let proxy = thread::spawn(move || {
        let (mut peer, _) = listener.accept().expect("accept");
        let mut seen = Vec::new();
        let mut buf = BytesMut::new();
        let mut dec = FrameDecoder::new(1 << 24);
        let mut chunk = [0u8; 4096];
        loop {
            let n = peer.read(&mut chunk).expect("read");
            if n == 0 {
                return seen;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(Framed::Frame(p)) = dec.decode(&mut buf) {
                match parse_sync_request(&p) {
                    Some(token) => {
                        seen.push("SYNC".to_owned());
                        peer.write_all(&sync_reply(token, 0)).expect("reply");
                    }
                    None => seen
                        .push(tags(&[&(p.len() as u32).to_le_bytes()[..], &p].concat())[0].clone()),
                }
            }
        }
    });
    let conn = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    conn.send(&frame("a")).expect("send");
    conn.send(&frame("b")).expect("send");
    assert_eq!(conn.sync(Duration::from_secs(5)).expect("sync"), 0);
    assert_eq!(conn.stats().pending, 0);
    conn.send(&frame("c")).expect("send");
    drop(conn);
    assert_eq!(
        proxy.join().expect("proxy"),
        ["a", "b", "SYNC", "c"],
        "the sync wrote the buffer before its request, the drop wrote the rest"
    );
}

#[test]
fn a_failed_background_flush_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, buffered(1 << 16, Duration::from_millis(20))).expect("conn");
    conn.send(&frame("a")).expect("send");
    let (peer, _) = listener.accept().expect("accept");
    // The proxy goes away before the linger: no listener, no socket file.
    drop(peer);
    drop(listener);
    std::fs::remove_file(&path).expect("rm");
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.stats().dropped == 0 {
        assert!(Instant::now() < deadline, "the flusher never gave up");
        thread::sleep(Duration::from_millis(5));
    }
    let err = conn.flush().expect_err("the failure is reported");
    assert!(matches!(err, ClientError::Unconfirmed { .. }), "{err}");
    assert!(err.to_string().contains("background flush failed"), "{err}");
    conn.flush().expect("reported once");
    let err = conn
        .sync(Duration::from_millis(100))
        .expect_err("sync cannot confirm");
    assert!(err.to_string().contains("dropped from the buffer"), "{err}");
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.dropped, stats.pending), (0, 1, 0));
    assert!(stats.errors >= 1);
}

#[test]
fn try_buffer_never_does_io() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let unbuffered = Connection::new(&path, Config::default()).expect("conn");
    assert!(matches!(
        unbuffered.try_buffer(&frame("x")),
        TryBuffer::NeedsSend
    ));
    let conn = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    // Not connected yet: the send must connect (fail fast), so not here.
    assert!(matches!(conn.try_buffer(&frame("x")), TryBuffer::NeedsSend));
    conn.send(&frame("first")).expect("send");
    assert!(matches!(
        conn.try_buffer(&frame("second")),
        TryBuffer::Buffered
    ));
    let huge = "y".repeat(1 << 16);
    assert!(matches!(
        conn.try_buffer(&frame(&huge)),
        TryBuffer::NeedsSend
    ));
    let (mut peer, _) = listener.accept().expect("accept");
    conn.flush().expect("flush");
    assert_eq!(read_frames(&mut peer, 2), ["first", "second"]);
    drop(unbuffered);
}

/// Sends `commands` through `send_encoded` and through `Frame::redis` +
/// `send`; both must give the same result.
fn send_both_ways(
    encoded: &Connection,
    framed: &Connection,
    commands: &[Vec<&str>],
) -> Result<(), String> {
    let a = RedisFrame::new(6379, 3, commands).and_then(|f| encoded.send_encoded(&f));
    let b = Frame::redis(6379, 3, commands).and_then(|f| framed.send(&f));
    let (a, b) = (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
    assert_eq!(a, b, "{commands:?}");
    a
}

#[test]
fn frames_encoded_in_the_buffer_are_the_frames_sent_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let config = Config {
        max_frame: 200,
        ..buffered(1 << 16, Duration::from_secs(10))
    };
    // The first send connects and starts the flusher (not the in-buffer
    // path); the next ones are encoded in the buffer.
    let first = [["set", "k", "first"]];
    let encoded = Connection::new(&path, config.clone()).expect("conn");
    let frame = RedisFrame::new(6379, 3, &first).expect("frame");
    encoded.send_encoded(&frame).expect("first");
    let (mut peer_a, _) = listener.accept().expect("accept");
    let framed = Connection::new(&path, config).expect("conn");
    framed
        .send(&Frame::redis(6379, 3, &first).expect("frame"))
        .expect("first");
    let (mut peer_b, _) = listener.accept().expect("accept");

    let long = "v".repeat(300);
    let cases: Vec<Vec<Vec<&str>>> = vec![
        vec![vec!["set", "k", "a"]],
        vec![vec!["multi"]],
        vec![vec!["set", "k", "b"], vec!["SeLeCt", "1"], vec!["exec"]],
        vec![vec!["set", "k", "c"], vec!["incr", "n"]],
        vec![vec![]],
        vec![],
        vec![vec!["set", "k", &long]],
        vec![vec!["watchers", "k", "d"]],
    ];
    let mut errors = Vec::new();
    for commands in &cases {
        if let Err(e) = send_both_ways(&encoded, &framed, commands) {
            errors.push(e);
        }
    }
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(
        errors[0].contains("command MULTI is not allowed"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("command SELECT is not allowed"),
        "{errors:?}"
    );
    assert!(errors[4].contains("exceeds the limit of 200"), "{errors:?}");
    // A refused frame leaves nothing behind; one over max_frame counts as
    // an error of the connection, as with send().
    let (a, b) = (encoded.stats(), framed.stats());
    assert_eq!((a.buffered, a.pending, a.errors), (4, 4, 1));
    assert_eq!((b.buffered, b.pending, b.errors), (4, 4, 1));
    encoded.flush().expect("flush");
    framed.flush().expect("flush");
    let (wire_a, wire_b) = (
        read_for(&mut peer_a, Duration::from_millis(200)),
        read_for(&mut peer_b, Duration::from_millis(200)),
    );
    assert_eq!(wire_a, wire_b, "the same bytes either way");
    assert_eq!(tags(&wire_a), ["first", "a", "n", "d"]);
    let mut expected = Frame::redis(6379, 3, &[["set", "k", "first"]])
        .expect("frame")
        .as_bytes()
        .to_vec();
    expected.extend_from_slice(
        Frame::redis(6379, 3, &[["set", "k", "a"]])
            .expect("frame")
            .as_bytes(),
    );
    assert!(wire_a.starts_with(&expected));
}

#[test]
fn try_buffer_encoded_checks_and_never_does_io() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, buffered(1 << 16, Duration::from_secs(10))).expect("conn");
    let set = |tag: &'static str| [["set", "k", tag]];
    let first = set("first");
    let frame = RedisFrame::new(6379, 0, &first).expect("frame");
    // Not connected yet: the send must connect, so not here.
    assert!(matches!(
        conn.try_buffer_encoded(&frame),
        Ok(TryBuffer::NeedsSend)
    ));
    conn.send_encoded(&frame).expect("send");
    let second = set("second");
    assert!(matches!(
        conn.try_buffer_encoded(&RedisFrame::new(6379, 0, &second).expect("frame")),
        Ok(TryBuffer::Buffered)
    ));
    let exec = [["exec"]];
    let err = conn
        .try_buffer_encoded(&RedisFrame::new(6379, 0, &exec).expect("frame"))
        .expect_err("refused");
    assert!(err.is_invalid(), "{err}");
    let huge = "y".repeat(1 << 16);
    let huge = [["set", "k", huge.as_str()]];
    assert!(matches!(
        conn.try_buffer_encoded(&RedisFrame::new(6379, 0, &huge).expect("frame")),
        Ok(TryBuffer::NeedsSend)
    ));
    assert_eq!(conn.stats().pending, 2);
    let (mut peer, _) = listener.accept().expect("accept");
    conn.flush().expect("flush");
    assert_eq!(read_frames(&mut peer, 2), ["first", "second"]);
}

#[test]
fn buffering_can_be_turned_on_and_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let listener = UnixListener::bind(&path).expect("bind");
    let conn = Connection::new(&path, Config::default()).expect("conn");
    conn.set_buffering(Some(Buffering::default())).expect("on");
    assert_eq!(
        conn.config().buffering,
        Some(Buffering {
            size: DEFAULT_BUFFER_SIZE,
            linger: DEFAULT_LINGER
        })
    );
    conn.set_buffering(Some(Buffering {
        size: 1 << 16,
        linger: Duration::from_secs(10),
    }))
    .expect("longer linger");
    conn.send(&frame("a")).expect("send");
    let (mut peer, _) = listener.accept().expect("accept");
    assert!(read_for(&mut peer, Duration::from_millis(100)).is_empty());
    conn.set_buffering(None)
        .expect("off: writes what is buffered");
    assert_eq!(read_frames(&mut peer, 1), ["a"]);
    conn.send(&frame("b")).expect("send");
    assert_eq!(read_frames(&mut peer, 1), ["b"]);
    let stats = conn.stats();
    assert_eq!((stats.buffered, stats.frames), (1, 2));
}

#[test]
fn bad_buffering_and_connect_settings_are_refused() {
    for buffering in [
        Buffering {
            size: 0,
            linger: DEFAULT_LINGER,
        },
        Buffering {
            size: 1,
            linger: Duration::ZERO,
        },
        Buffering {
            size: 1,
            linger: Duration::from_secs(3600),
        },
    ] {
        let config = Config {
            buffering: Some(buffering),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ClientError::InvalidArgument(_))
        ));
    }
    let config = Config {
        connect_timeout: Some(Duration::ZERO),
        ..Config::default()
    };
    assert!(matches!(
        Connection::new("/tmp/x.sock", config),
        Err(ClientError::InvalidArgument(_))
    ));
}

#[test]
fn waiting_connect_succeeds_when_the_proxy_comes_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let config = Config {
        connect_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let conn = Connection::new(&path, config).expect("conn");
    let late = path.clone();
    let proxy = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let listener = UnixListener::bind(&late).expect("bind");
        let (peer, _) = listener.accept().expect("accept");
        let mut peer = peer;
        read_frames(&mut peer, 1)
    });
    let start = Instant::now();
    conn.send(&frame("late")).expect("waits for the proxy");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    drop(conn);
    assert_eq!(proxy.join().expect("proxy"), ["late"]);
}

#[test]
fn waiting_connect_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let config = Config {
        connect_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let conn = Connection::new(&path, config).expect("conn");
    let start = Instant::now();
    let err = conn.send(&frame("x")).expect_err("nobody listens");
    let waited = start.elapsed();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("after waiting 300ms"), "{err}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // Fail fast, the default: at once.
    conn.set_connect_timeout(None).expect("fail fast");
    let start = Instant::now();
    assert!(conn.send(&frame("x")).is_err());
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(conn.stats().errors, 2);
}
