//! `sync` against a fake proxy on a real `UnixListener` that answers each
//! SYNC only when the test says so: what other threads can do meanwhile,
//! and what a SYNC confirms.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::BytesMut;
use intc_client::{ClientError, Config, Connection, Frame};
use syncs_engine::wire::client::{parse_sync_request, sync_reply, FrameDecoder, Framed};

/// The longest any condition is waited for before the test fails: far
/// above what each step needs, so it only bounds a broken build.
const WAIT: Duration = Duration::from_secs(10);
/// A sync timeout no step of these tests comes near.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn frame(tag: &str) -> Frame {
    Frame::redis(6379, 0, &[["set", "k", tag]]).expect("frame")
}

/// What the fake proxy saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A data frame, by its last argument.
    Frame(String),
    /// A SYNC request (not answered until told).
    Sync,
    /// The proxy closed the connection, as told.
    Closed,
}

/// What the fake proxy does with the SYNC it holds.
#[derive(Debug)]
enum Answer {
    /// Answer it (nothing refused).
    Reply,
    /// Answer it, then close the connection (the proxy died).
    ReplyAndClose,
}

/// A proxy that reports every frame and holds every SYNC until answered.
struct FakeProxy {
    seen: Receiver<Seen>,
    answers: Sender<Answer>,
    thread: JoinHandle<()>,
}

impl FakeProxy {
    /// Listens on `path` and serves `connections` connections, one after
    /// the other.
    fn start(path: &Path, connections: usize) -> FakeProxy {
        let listener = UnixListener::bind(path).expect("bind");
        let (seen_tx, seen) = mpsc::channel();
        let (answers, answers_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            for _ in 0..connections {
                let (stream, _) = listener.accept().expect("accept");
                serve(stream, &seen_tx, &answers_rx);
            }
        });
        FakeProxy {
            seen,
            answers,
            thread,
        }
    }

    /// The next thing the proxy saw.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(WAIT)
            .expect("the fake proxy saw nothing more")
    }

    fn answer(&self, answer: Answer) {
        self.answers.send(answer).expect("the fake proxy is gone");
    }

    /// Waits for the proxy to end (every connection closed) and returns
    /// what it saw since the last [`Self::next`].
    fn finish(self) -> Vec<Seen> {
        self.thread.join().expect("fake proxy");
        self.seen.try_iter().collect()
    }
}

/// Serves one connection until EOF, or until told to close it. Frames are
/// read and reported while a SYNC waits for its answer, as the proxy does.
fn serve(mut stream: UnixStream, seen: &Sender<Seen>, answers: &Receiver<Answer>) {
    let mut answering = stream.try_clone().expect("clone");
    let (tokens, held) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || {
            let mut dec = FrameDecoder::new(1 << 24);
            let mut buf = BytesMut::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).expect("read");
                if n == 0 {
                    // Dropping `tokens` ends the answering loop.
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(Framed::Frame(payload)) = dec.decode(&mut buf) {
                    if let Some(token) = parse_sync_request(&payload) {
                        seen.send(Seen::Sync).expect("test gone");
                        tokens.send(token).expect("answering loop gone");
                    } else {
                        let text = String::from_utf8_lossy(&payload);
                        let tag = text.rsplit("\r\n").nth(1).expect("last argument");
                        seen.send(Seen::Frame(tag.to_owned())).expect("test gone");
                    }
                }
            }
        });
        // Answers the SYNCs held, in order, when the test says so.
        for token in held {
            let answer = answers.recv().expect("test gone");
            answering.write_all(&sync_reply(token, 0)).expect("reply");
            if matches!(answer, Answer::ReplyAndClose) {
                answering.shutdown(Shutdown::Both).expect("shutdown");
                seen.send(Seen::Closed).expect("test gone");
                return;
            }
        }
    });
}

/// Runs `f` on a new thread; its result comes on the channel returned.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

#[test]
fn other_threads_send_while_one_waits_in_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let proxy = FakeProxy::start(&path, 1);
    let conn = Arc::new(Connection::new(&path, Config::default()).expect("conn"));
    conn.send(&frame("a")).expect("send a");
    assert_eq!(proxy.next(), Seen::Frame("a".into()));

    // Thread A syncs; the proxy holds its answer.
    let synced = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.sync(SYNC_TIMEOUT))
    };
    assert_eq!(proxy.next(), Seen::Sync);

    // Thread B sends meanwhile, and is not held behind A.
    let sent = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.send(&frame("b")))
    };
    match sent.recv_timeout(WAIT) {
        Ok(result) => result.expect("send b"),
        Err(RecvTimeoutError::Timeout) => panic!("a send waited behind a sync in progress"),
        Err(RecvTimeoutError::Disconnected) => panic!("the sending thread panicked"),
    }
    assert_eq!(proxy.next(), Seen::Frame("b".into()));
    assert!(
        matches!(synced.try_recv(), Err(TryRecvError::Empty)),
        "the sync returned before the proxy answered"
    );

    // The proxy answers: A's sync succeeds.
    proxy.answer(Answer::Reply);
    let refused = synced
        .recv_timeout(WAIT)
        .expect("the sync never returned")
        .expect("sync");
    assert_eq!(refused, 0);

    // A later sync asks again, for "b".
    proxy.answer(Answer::Reply);
    assert_eq!(conn.sync(SYNC_TIMEOUT).expect("second sync"), 0);
    assert_eq!(proxy.next(), Seen::Sync);
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.errors, stats.connects), (2, 0, 1));
    drop(conn);
    assert_eq!(proxy.finish(), []);
}

#[test]
fn a_sync_confirms_only_what_was_sent_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let proxy = FakeProxy::start(&path, 2);
    let conn = Arc::new(Connection::new(&path, Config::default()).expect("conn"));
    conn.send(&frame("a")).expect("send a");
    let synced = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.sync(SYNC_TIMEOUT))
    };
    assert_eq!(proxy.next(), Seen::Frame("a".into()));
    assert_eq!(proxy.next(), Seen::Sync);
    let sent = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.send(&frame("b")))
    };
    sent.recv_timeout(WAIT)
        .expect("a send waited behind a sync in progress")
        .expect("send b");
    assert_eq!(proxy.next(), Seen::Frame("b".into()));

    // The proxy confirms "a" (its SYNC came before "b"), then dies.
    proxy.answer(Answer::ReplyAndClose);
    assert_eq!(proxy.next(), Seen::Closed);
    assert_eq!(
        synced
            .recv_timeout(WAIT)
            .expect("the sync never returned")
            .expect("sync"),
        0
    );

    // The next send finds the stream closed and goes out on a new one; the
    // next sync reports "b", written on the dead stream after the SYNC
    // that confirmed "a", as unconfirmed, and "a" not.
    conn.send(&frame("c")).expect("send c");
    assert_eq!(proxy.next(), Seen::Frame("c".into()));
    let err = conn.sync(SYNC_TIMEOUT).expect_err("b is unconfirmed");
    assert!(matches!(err, ClientError::Unconfirmed { .. }), "{err}");
    assert!(err.to_string().contains("1 frame(s)"), "{err}");
    // Reported once: the sync after that asks the proxy again.
    proxy.answer(Answer::Reply);
    assert_eq!(conn.sync(SYNC_TIMEOUT).expect("sync"), 0);
    assert_eq!(proxy.next(), Seen::Sync);
    let stats = conn.stats();
    assert_eq!((stats.frames, stats.connects, stats.reconnects), (3, 2, 1));
    drop(conn);
    assert_eq!(proxy.finish(), []);
}

#[test]
fn syncs_from_two_threads_each_get_their_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let proxy = FakeProxy::start(&path, 1);
    let conn = Arc::new(Connection::new(&path, Config::default()).expect("conn"));
    conn.send(&frame("a")).expect("send a");
    assert_eq!(proxy.next(), Seen::Frame("a".into()));
    let first = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.sync(SYNC_TIMEOUT))
    };
    assert_eq!(proxy.next(), Seen::Sync);
    conn.send(&frame("b")).expect("send b");
    assert_eq!(proxy.next(), Seen::Frame("b".into()));
    // A second sync, for "b" too, while the first waits.
    let second = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.sync(SYNC_TIMEOUT))
    };
    proxy.answer(Answer::Reply);
    let done = |rx: &Receiver<Result<u32, ClientError>>| {
        rx.recv_timeout(WAIT)
            .expect("the sync never returned")
            .expect("sync")
    };
    assert_eq!(done(&first), 0);
    // The second sync sent its own request: one SYNC answers for the frames
    // before it, never for later ones.
    assert_eq!(proxy.next(), Seen::Sync);
    proxy.answer(Answer::Reply);
    assert_eq!(done(&second), 0);
    assert_eq!(conn.stats().errors, 0);
    drop(conn);
    assert_eq!(proxy.finish(), []);
}

#[test]
fn a_sync_waiting_for_another_keeps_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let proxy = FakeProxy::start(&path, 1);
    let conn = Arc::new(Connection::new(&path, Config::default()).expect("conn"));
    let first = {
        let conn = Arc::clone(&conn);
        spawn(move || conn.sync(SYNC_TIMEOUT))
    };
    assert_eq!(proxy.next(), Seen::Sync);
    let err = conn
        .sync(Duration::from_millis(50))
        .expect_err("no answer for the second sync");
    assert!(matches!(err, ClientError::Unconfirmed { .. }), "{err}");
    proxy.answer(Answer::Reply);
    let refused = first
        .recv_timeout(WAIT)
        .expect("the sync never returned")
        .expect("the first sync is not disturbed by the second one's timeout");
    assert_eq!(refused, 0);
    drop(conn);
    assert_eq!(proxy.finish(), []);
}
