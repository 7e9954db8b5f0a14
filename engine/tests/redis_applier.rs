//! The Redis applier against a real `redis-server` (started here): replies
//! of any bytes, and exactly once when a run is cut off mid-EXEC.
//!
//! Skipped where `redis-server` is not installed, unless
//! `SYNCS_REQUIRE_ALL=1` (CI), where that is a failure.

#[path = "common/ops.rs"]
mod ops;
#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ops::op;
use procs::{call, list, Proc};
use syncs_dsl::{Target as TargetDef, TargetKind, TargetOptions};
use syncs_engine::apply::redis::{RedisSettings, RedisSource, RedisTarget};
use syncs_engine::apply::{Applied, Run, RunId, Target};
use syncs_engine::op::Op;
use syncs_engine::wire::reply::Reply;

/// A `redis-server` of the test's own, killed (then its directory removed)
/// when dropped.
struct Server {
    _proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A fresh `redis-server` (no persistence, DEBUG allowed) on a port no
/// other test of this process is given (`procs::free_ports`: tests run in
/// parallel, and two tests sharing one server cut each other's
/// connections, by `CLIENT KILL` or by killing it at their end), or `None`
/// where none is installed.
fn start() -> Option<Server> {
    let exe = procs::redis_server()?;
    let port = procs::free_ports(1)[0];
    let dir = tempfile::tempdir().expect("a temp dir");
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--enable-debug-command".into(),
        "yes".into(),
        "--dir".into(),
        dir.path().display().to_string(),
    ];
    let proc = Proc::spawn(&format!("redis-server {port}"), exe, &args);
    procs::wait_own_redis(&proc, port);
    Some(Server {
        _proc: proc,
        port,
        _dir: dir,
    })
}

/// Whether Redis leaves a PING unanswered for 100 ms (it is sleeping).
fn busy(port: u16) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a timeout");
    s.write_all(b"PING\r\n").expect("write");
    let mut reply = [0u8; 16];
    s.read(&mut reply).is_err()
}

fn target(port: u16, timeout: Option<Duration>) -> Target {
    let t = RedisTarget::new(&TargetDef {
        name: "r".into(),
        kind: TargetKind::Redis,
        url: format!("redis://127.0.0.1:{port}"),
        options: TargetOptions {
            timeout,
            ..TargetOptions::default()
        },
    })
    .expect("a target");
    Target::Redis(Box::new(t))
}

#[tokio::test]
async fn an_error_line_of_any_bytes_refuses_its_record_only() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let bad = op(&[&b"foo"[..], b"\xff\xfe"]);
    let good = op(&[&b"SET"[..], b"after", b"1"]);
    let out = t
        .apply(7, &[(1, &bad), (2, &good)])
        .await
        .expect("the target is up");
    match &out[0] {
        Applied::Refused(reason) => assert!(
            reason.contains("unknown command") && reason.contains("\\xff\\xfe"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(out[1], Applied::Ok);
    assert_eq!(
        call(server.port, &[&b"GET"[..], b"after"]),
        Reply::Bulk(Some(Bytes::from_static(b"1")))
    );
}

/// A long run (its replies come over many reads) with a command refused
/// while queueing (wrong arity: EXECABORT, sent again without it) and one
/// refused when it runs (WRONGTYPE): each outcome lands on its own record.
#[tokio::test]
async fn refusals_in_a_long_run_land_on_their_records() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    call(server.port, &[&b"RPUSH"[..], b"alist", b"x"]);
    let n = 5000u64;
    let ops: Vec<_> = (1..=n)
        .map(|seq| match seq {
            1234 => op(&[&b"GET"[..], b"k", b"extra"]),
            4321 => op(&[&b"INCR"[..], b"alist"]),
            _ => op(&[&b"SET"[..], format!("k{seq}").as_bytes(), b"v"]),
        })
        .collect();
    let items: Vec<_> = (1..=n).zip(&ops).collect();
    let out = t.apply(11, &items).await.expect("the target is up");
    for (i, outcome) in out.iter().enumerate() {
        let seq = i as u64 + 1;
        match (seq, outcome) {
            (1234, Applied::Refused(r)) => {
                assert!(
                    r.contains("refused by Redis") && r.contains("wrong number"),
                    "{r}"
                )
            }
            (4321, Applied::Refused(r)) => assert!(r.starts_with("WRONGTYPE"), "{r}"),
            (1234 | 4321, other) => panic!("record {seq}: {other:?}"),
            (_, Applied::Ok) => {}
            (_, other) => panic!("record {seq}: {other:?}"),
        }
    }
    // The n - 2 keys SET, the list, and the marker hash.
    assert_eq!(call(server.port, &[&b"DBSIZE"[..]]), Reply::Int(n as i64));
    assert_eq!(
        call(server.port, &[&b"GET"[..], format!("k{n}").as_bytes()]),
        Reply::Bulk(Some(Bytes::from_static(b"v")))
    );
    // Applied once: the same run again changes nothing and says so.
    let again = t.apply(11, &items).await.expect("the target is up");
    assert!(
        again.iter().all(|o| *o == Applied::Ok),
        "skipped records are Ok"
    );
}

/// One `RPUSH l <seq>` per sequence of `seqs`; `bad` (wrong arity, refused
/// while queueing) in place of sequence `bad_at`.
fn pushes(seqs: std::ops::RangeInclusive<u64>, bad_at: Option<u64>) -> Vec<(u64, Op)> {
    seqs.map(|seq| {
        let op = if Some(seq) == bad_at {
            op(&[&b"GET"[..], b"k", b"extra"])
        } else {
            op(&[&b"RPUSH"[..], b"l", seq.to_string().as_bytes()])
        };
        (seq, op)
    })
    .collect()
}

fn refs(ops: &[(u64, Op)]) -> Vec<(u64, &Op)> {
    ops.iter().map(|(seq, op)| (*seq, op)).collect()
}

/// The `multi=` field of every client Redis lists: the commands queued in
/// its open MULTI, -1 outside one.
fn queued_in_multis(port: u16) -> Vec<i64> {
    let Reply::Bulk(Some(text)) = call(port, &[&b"CLIENT"[..], b"LIST"]) else {
        panic!("CLIENT LIST")
    };
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("multi="))
        .map(|n| n.parse().expect("a number"))
        .collect()
}

fn texts(seqs: &[u64]) -> Vec<String> {
    seqs.iter().map(u64::to_string).collect()
}

/// The next run, sent ahead while one executes (ahead.rs), sits queued in
/// the target's MULTI and commits only when it is applied itself.
#[tokio::test]
async fn a_run_sent_ahead_commits_only_when_applied() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let (one, two) = (pushes(1..=3, None), pushes(4..=6, None));
    let (a, b) = (refs(&one), refs(&two));
    let (ida, idb) = (RunId::fresh(), RunId::fresh());
    let out = t
        .apply_then(5, Run::new(ida, &a), Some(Run::new(idb, &b)))
        .await
        .expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3]));
    // SELECT, three RPUSH, SELECT and the marker's HSET, queued.
    assert!(queued_in_multis(server.port).contains(&6));
    let out = t
        .apply_then(5, Run::new(idb, &b), None)
        .await
        .expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3, 4, 5, 6]));
    assert!(queued_in_multis(server.port).iter().all(|&n| n == -1));
    // Applied once: the run again changes nothing.
    t.apply(5, &b).await.expect("the target is up");
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3, 4, 5, 6]));
}

/// Another run than the one sent ahead discards it first.
#[tokio::test]
async fn a_run_sent_ahead_and_not_applied_is_discarded() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let (one, two, other) = (
        pushes(1..=3, None),
        pushes(4..=6, None),
        pushes(4..=5, None),
    );
    let (a, b, c) = (refs(&one), refs(&two), refs(&other));
    t.apply_then(
        5,
        Run::new(RunId::fresh(), &a),
        Some(Run::new(RunId::fresh(), &b)),
    )
    .await
    .expect("the target is up");
    assert!(queued_in_multis(server.port).contains(&6));
    let out = t.apply(5, &c).await.expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3, 4, 5]));
    assert!(queued_in_multis(server.port).iter().all(|&n| n == -1));
}

/// A run whose EXEC aborts (a command refused while queueing) is sent
/// again without it; the run sent ahead behind it, queued on the belief
/// that it committed, is discarded first and applied by its own call.
#[tokio::test]
async fn an_aborted_exec_discards_the_run_sent_ahead() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let (one, two) = (pushes(1..=3, Some(2)), pushes(4..=6, None));
    let (a, b) = (refs(&one), refs(&two));
    let idb = RunId::fresh();
    let out = t
        .apply_then(5, Run::new(RunId::fresh(), &a), Some(Run::new(idb, &b)))
        .await
        .expect("the target is up");
    assert!(
        matches!(&out[1], Applied::Refused(r) if r.contains("wrong number")),
        "{out:?}"
    );
    assert_eq!(list(server.port, "l"), texts(&[1, 3]));
    assert!(queued_in_multis(server.port).iter().all(|&n| n == -1));
    t.apply_then(5, Run::new(idb, &b), None)
        .await
        .expect("the target is up");
    assert_eq!(list(server.port, "l"), texts(&[1, 3, 4, 5, 6]));
}

/// A run sent ahead with a command Redis refuses while queueing: its EXEC
/// aborts when it is applied, and it is sent again without that command.
#[tokio::test]
async fn a_refusal_in_the_run_sent_ahead_lands_on_its_record() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let (one, two) = (pushes(1..=3, None), pushes(4..=6, Some(5)));
    let (a, b) = (refs(&one), refs(&two));
    let idb = RunId::fresh();
    t.apply_then(5, Run::new(RunId::fresh(), &a), Some(Run::new(idb, &b)))
        .await
        .expect("the target is up");
    // In an open MULTI (Redis stops storing the commands of one that will
    // abort at the refused one, and answers the rest `+QUEUED` all the same).
    let queued = queued_in_multis(server.port);
    assert!(queued.iter().any(|&n| n > 0), "{queued:?}");
    let out = t
        .apply_then(5, Run::new(idb, &b), None)
        .await
        .expect("the target is up");
    assert!(
        matches!(&out[1], Applied::Refused(r) if r.contains("wrong number")),
        "{out:?}"
    );
    assert_eq!((&out[0], &out[2]), (&Applied::Ok, &Applied::Ok));
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3, 4, 6]));
}

/// The connection holding a run sent ahead is killed: nothing of that run
/// commits, and its own call applies it once on a new connection.
#[tokio::test]
async fn a_run_sent_ahead_on_a_lost_connection_is_applied_once() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let (one, two) = (pushes(1..=3, None), pushes(4..=6, None));
    let (a, b) = (refs(&one), refs(&two));
    let idb = RunId::fresh();
    t.apply_then(5, Run::new(RunId::fresh(), &a), Some(Run::new(idb, &b)))
        .await
        .expect("the target is up");
    assert_eq!(
        call(server.port, &[&b"CLIENT"[..], b"KILL", b"TYPE", b"normal"]),
        Reply::Int(1)
    );
    // The EXEC goes to a closed connection: the call fails, its caller
    // retries.
    let first = t.apply_then(5, Run::new(idb, &b), None).await;
    let out = match first {
        Ok(out) => out,
        Err(_) => t
            .apply_then(5, Run::new(idb, &b), None)
            .await
            .expect("the target is up"),
    };
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_eq!(list(server.port, "l"), texts(&[1, 2, 3, 4, 5, 6]));
}

#[tokio::test]
async fn a_run_cut_off_mid_exec_is_never_applied_twice() {
    let Some(server) = start() else { return };
    let t = target(server.port, None);
    let one = op(&[&b"RPUSH"[..], b"l", b"1"]);
    let two = op(&[&b"RPUSH"[..], b"l", b"2"]);
    assert_eq!(t.apply(9, &[(1, &one)]).await.expect("up"), [Applied::Ok]);

    // Redis is busy for a second: record 2's MULTI/EXEC is sent and waits
    // in Redis' input; the caller gives up on it (the future is dropped).
    let port = server.port;
    let sleeper = std::thread::spawn(move || call(port, &[&b"DEBUG"[..], b"SLEEP", b"2"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !busy(port) {
        assert!(Instant::now() < deadline, "DEBUG SLEEP never started");
    }
    let cut = tokio::time::timeout(Duration::from_millis(300), t.apply(9, &[(2, &two)])).await;
    assert!(cut.is_err(), "the run must still be waiting for Redis");

    // Sent again (as after a reconnect): whatever Redis did with the first
    // EXEC, the list ends [1, 2].
    assert_eq!(t.apply(9, &[(2, &two)]).await.expect("up"), [Applied::Ok]);
    sleeper.join().expect("the sleeper");
    assert_eq!(list(server.port, "l"), ["1", "2"]);
}

fn waiting_target(port: u16, replicas: u32, replica_timeout: Duration) -> Target {
    let t = RedisTarget::with_settings(
        "r",
        RedisSource::Url(format!("redis://127.0.0.1:{port}")),
        RedisSettings {
            replicas,
            replica_timeout,
            ..RedisSettings::default()
        },
    )
    .expect("a target");
    Target::Redis(Box::new(t))
}

#[test]
fn replica_timeout_must_be_shorter_than_timeout() {
    let e = RedisTarget::with_settings(
        "r",
        RedisSource::Url("redis://127.0.0.1:1".into()),
        RedisSettings {
            replicas: 1,
            timeout: Duration::from_secs(1),
            replica_timeout: Duration::from_secs(1),
            ..RedisSettings::default()
        },
    )
    .expect_err("refused");
    assert!(e.contains("replica_timeout"), "{e}");
}

#[tokio::test]
async fn wait_holds_a_run_until_a_replica_has_it() {
    let Some(primary) = start() else { return };
    let t = waiting_target(primary.port, 1, Duration::from_millis(100));
    let one = op(&[&b"RPUSH"[..], b"w", b"1"]);
    let e = t
        .apply(11, &[(1, &one)])
        .await
        .expect_err("no replica confirms it");
    assert!(!e.suspect, "{e}");
    assert!(
        e.reason.contains("0 of 1 replicas confirmed within 100ms"),
        "{e}"
    );
    // Committed on the master all the same.
    assert_eq!(list(primary.port, "w"), ["1"]);

    // A replica attaches: the retry skips the record, touches the marker
    // and is confirmed; nothing is applied twice.
    let Some(replica) = start() else { return };
    let port = primary.port.to_string();
    let reply = call(
        replica.port,
        &[&b"REPLICAOF"[..], b"127.0.0.1", port.as_bytes()],
    );
    assert!(matches!(reply, Reply::Status(_)), "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t.apply(11, &[(1, &one)]).await {
            Ok(out) => {
                assert_eq!(out, [Applied::Ok]);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never confirmed: {e}"),
        }
    }
    assert_eq!(list(primary.port, "w"), ["1"]);
    assert_eq!(list(replica.port, "w"), ["1"]);
}

/// `calls=` of `name` in Redis' `INFO commandstats` (0 when never called).
fn calls(port: u16, name: &str) -> u64 {
    let Reply::Bulk(Some(text)) = call(port, &[&b"INFO"[..], b"commandstats"]) else {
        panic!("INFO")
    };
    let prefix = format!("cmdstat_{name}:calls=");
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a count")
        })
}

fn get(port: u16, key: &str) -> Reply {
    call(port, &[&b"GET"[..], key.as_bytes()])
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(text.as_bytes())))
}

/// A target at `url` with `merge_sets` as given.
fn merging_target(url: String, merge_sets: Option<bool>) -> Target {
    let t = RedisTarget::new(&TargetDef {
        name: "r".into(),
        kind: TargetKind::Redis,
        url,
        options: TargetOptions {
            merge_sets,
            ..TargetOptions::default()
        },
    })
    .expect("a target");
    Target::Redis(Box::new(t))
}

/// Plain SETs that follow each other, within one record (a transaction)
/// or across records, go as one MSET; anything else (an option, another
/// command) goes as it came and ends the group. The data is what the
/// SETs one by one would leave, a key set twice included.
fn mixed_run() -> Vec<(u64, Op)> {
    use syncs_engine::op::{RedisCommand, RedisOp};
    let transaction = Op::Redis(RedisOp {
        port: 6379,
        db: 0,
        commands: vec![
            RedisCommand::new(&[&b"SET"[..], b"b", b"2"]).expect("a command"),
            RedisCommand::new(&[&b"set"[..], b"a", b"3"]).expect("a command"),
        ]
        .into(),
    });
    vec![
        (1, op(&[&b"SET"[..], b"a", b"1"])),
        (2, transaction),
        (3, op(&[&b"INCR"[..], b"n"])),
        (4, op(&[&b"SET"[..], b"d", b"4"])),
        (5, op(&[&b"SET"[..], b"e", b"5", b"EX", b"100"])),
        (6, op(&[&b"SET"[..], b"f", b"6"])),
        (7, op(&[&b"SET"[..], b"g", b"7"])),
    ]
}

fn assert_mixed_run_applied(port: u16) {
    for (key, value) in [("a", "3"), ("b", "2"), ("n", "1"), ("d", "4"), ("e", "5")] {
        assert_eq!(get(port, key), bulk(value), "{key}");
    }
    assert_eq!(get(port, "f"), bulk("6"));
    assert_eq!(get(port, "g"), bulk("7"));
    match call(port, &[&b"TTL"[..], b"e"]) {
        Reply::Int(ttl) => assert!(ttl > 0 && ttl <= 100, "{ttl}"),
        other => panic!("{other:?}"),
    }
}

/// `mixed_run` applied through a target with `merge_sets` as given, into
/// a fresh Redis: the data checked, then (MSET calls, SET calls) as the
/// target's `commandstats` counts them. `None` without redis-server.
async fn mixed_run_calls(merge_sets: Option<bool>) -> Option<(u64, u64)> {
    let server = start()?;
    let t = merging_target(format!("redis://127.0.0.1:{}", server.port), merge_sets);
    let run = mixed_run();
    let out = t.apply(3, &refs(&run)).await.expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_mixed_run_applied(server.port);
    Some((calls(server.port, "mset"), calls(server.port, "set")))
}

#[tokio::test]
async fn plain_sets_that_follow_each_other_go_as_one_mset() {
    // SET a, SET b, set a: one MSET; SET d alone (INCR before, an option
    // after); SET f, SET g: one MSET.
    if let Some(counts) = mixed_run_calls(None).await {
        assert_eq!(counts, (2, 2));
    }
}

#[tokio::test]
async fn merge_sets_false_sends_every_set_as_it_came() {
    if let Some(counts) = mixed_run_calls(Some(false)).await {
        assert_eq!(counts, (0, 7));
    }
}

/// A target whose ACL refuses MSET: the run goes again with the SETs one
/// by one, nothing is refused, and later runs are not merged.
#[tokio::test]
async fn a_target_that_refuses_mset_gets_the_sets_one_by_one() {
    let Some(server) = start() else { return };
    let port = server.port;
    assert_eq!(
        call(
            port,
            &[
                &b"ACL"[..],
                b"SETUSER",
                b"syncs",
                b"on",
                b">pw",
                b"~*",
                b"&*",
                b"+@all",
                b"-mset",
            ]
        ),
        Reply::Status(Bytes::from_static(b"OK"))
    );
    let t = merging_target(format!("redis://syncs:pw@127.0.0.1:{port}"), None);
    let run = mixed_run();
    let out = t.apply(3, &refs(&run)).await.expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_mixed_run_applied(port);
    assert_eq!(calls(port, "mset"), 0);
    assert_eq!(calls(port, "set"), 7);
    let more: Vec<_> = (8..=10)
        .map(|seq| (seq, op(&[&b"SET"[..], format!("k{seq}").as_bytes(), b"v"])))
        .collect();
    let out = t.apply(3, &refs(&more)).await.expect("the target is up");
    assert!(out.iter().all(|o| *o == Applied::Ok), "{out:?}");
    assert_eq!(get(port, "k10"), bulk("v"));
    assert_eq!(calls(port, "set"), 10);
}
