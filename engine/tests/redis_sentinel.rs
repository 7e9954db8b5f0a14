//! The Redis applier on a Sentinel-managed master (a master, two replicas,
//! three sentinels, started here): exactly once across failovers, and WAIT
//! holding runs while replicas lag.
//!
//! Each test writes a numbered stream: record `s` is `RPUSH list:{s % 64} s`.
//! The oracle reads the *current* master afterwards: every list holds
//! exactly its numbers, once each, in order, and the stream's marker is the
//! last number.
//!
//! Skipped where `redis-server` is not installed, unless
//! `SYNCS_REQUIRE_ALL=1` (CI), where that is a failure.

#[path = "common/procs.rs"]
mod procs;
#[path = "common/sentinel.rs"]
mod sentinel;

#[path = "common/ops.rs"]
mod ops;

use std::time::{Duration, Instant};

use ops::op;
use syncs_engine::apply::redis::{RedisSettings, RedisSource, RedisTarget, SentinelSource};
use syncs_engine::apply::{Applied, Target};
use syncs_engine::op::Op;

use procs::{call, list, text};
use sentinel::{named_master, SentinelSet, MASTER};

const KEYS: u64 = 64;
const TARGET: &str = "s";

fn target(set: &SentinelSet, replicas: u32, replica_timeout: Duration) -> Target {
    target_at(set.sentinel_urls(), MASTER, replicas, replica_timeout)
}

fn target_at(
    sentinels: Vec<String>,
    master: &str,
    replicas: u32,
    replica_timeout: Duration,
) -> Target {
    let t = RedisTarget::with_settings(
        TARGET,
        RedisSource::Sentinel(SentinelSource {
            sentinels,
            master: master.into(),
            sentinel_user: None,
            sentinel_password: None,
        }),
        RedisSettings {
            connect_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(3),
            replicas,
            replica_timeout,
            ..RedisSettings::default()
        },
    )
    .expect("a target");
    Target::Redis(Box::new(t))
}

fn push(seq: u64) -> Op {
    let key = format!("list:{}", seq % KEYS);
    op(&[&b"RPUSH"[..], key.as_bytes(), seq.to_string().as_bytes()])
}

/// Applies records `from..=to` in runs of `run`, each retried (as the
/// server's lane does) until it is applied; `after` is called with the last
/// record of every run applied. Returns the errors seen.
async fn drive(
    t: &Target,
    stream: u64,
    (from, to): (u64, u64),
    run: u64,
    mut after: impl FnMut(u64),
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seq = from;
    while seq <= to {
        let end = (seq + run - 1).min(to);
        let ops: Vec<(u64, Op)> = (seq..=end).map(|s| (s, push(s))).collect();
        let items: Vec<(u64, &Op)> = ops.iter().map(|(s, o)| (*s, o)).collect();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match t.apply(stream, &items).await {
                Ok(out) => {
                    assert!(out.iter().all(|a| *a == Applied::Ok), "{out:?}");
                    break;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "run {seq}..={end} not applied in time; last error {e}; errors {errors:?}"
                    );
                    errors.push(e.reason);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        after(end);
        seq = end + 1;
    }
    errors
}

/// How many errors of each kind (their first words).
fn summary(errors: &[String]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in errors {
        let kind: String = e.chars().take(48).collect();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    format!("{} {kinds:?}", errors.len())
}

/// The oracle: at `port`, every list holds exactly its numbers of
/// `1..=last`, in order, and the marker is `last`.
fn assert_exact(port: u16, stream: u64, last: u64) {
    for k in 0..KEYS {
        let want: Vec<String> = (1..=last)
            .filter(|s| s % KEYS == k)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(list(port, &format!("list:{k}")), want, "list:{k} at {port}");
    }
    let field = format!("{stream:016x}:{TARGET}");
    let marker = call(port, &[&b"HGET"[..], b"syncs:applied", field.as_bytes()]);
    assert_eq!(text(&marker), Some(last.to_string()), "marker at {port}");
}

/// No fault. The first sentinel listed is down: the next one answers.
#[tokio::test]
async fn no_fault_exactly_once() {
    let Some(set) = SentinelSet::start() else {
        return;
    };
    let dead = procs::free_ports(1)[0];
    let mut sentinels = vec![format!("redis://127.0.0.1:{dead}")];
    sentinels.extend(set.sentinel_urls());
    let begun = Instant::now();
    let t = target_at(sentinels.clone(), MASTER, 1, Duration::from_secs(1));
    let errors = drive(&t, 1, (1, 2000), 50, |_| {}).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_exact(set.master(Duration::from_secs(5)), 1, 2000);
    eprintln!("applied in {:?}", begun.elapsed());

    let unknown = target_at(sentinels, "nope", 1, Duration::from_secs(1));
    let e = unknown
        .apply(1, &[(1, &push(1))])
        .await
        .expect_err("no such master");
    assert!(!e.suspect, "{e}");
    assert!(e.reason.contains("no sentinel knows master `nope`"), "{e}");
}

/// `SENTINEL FAILOVER` mid-stream. `replicas = 2` (every replica): a
/// promoted replica then has every run that was acknowledged, even the ones
/// written to the old master after the promotion (those fall short of 2
/// replicas and are applied again on the new master). Runs are paced while
/// the failover is under way, so that writes go on throughout.
#[tokio::test]
async fn manual_failover_mid_stream() {
    let Some(set) = SentinelSet::start() else {
        return;
    };
    let first = set.data_ports[0];
    let sentinel = set.sentinel_ports[0];
    let t = target(&set, 2, Duration::from_millis(300));
    let begun = Instant::now();
    let mut operator = None;
    let errors = drive(&t, 2, (1, 3000), 10, |end| {
        if end == 1000 {
            set.failover();
            // Sentinel turns the old master into a replica of the new one
            // some 8 s after the switch; an operator thread does it at once
            // to keep the test short. A write still sent there meets
            // READONLY.
            operator = Some(std::thread::spawn(move || {
                let new = procs::poll(
                    "the sentinels name a new master",
                    Duration::from_secs(20),
                    || named_master(sentinel).filter(|p| *p != first),
                );
                let to = new.to_string();
                call(first, &[&b"REPLICAOF"[..], b"127.0.0.1", to.as_bytes()]);
                Instant::now()
            }));
        }
        // Paced while the failover is under way: writes go on throughout.
        if operator.as_ref().is_some_and(|o| !o.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await;
    let operator = operator.expect("the failover was asked");
    assert!(operator.is_finished(), "the stream ended before the switch");
    let switched = operator.join().expect("the operator thread");
    let master = set.master(Duration::from_secs(20));
    assert_ne!(master, first, "the failover happened");
    assert_exact(master, 2, 3000);
    eprintln!(
        "applied in {:?} ({:?} after the switch); retries: {}",
        begun.elapsed(),
        switched.elapsed(),
        summary(&errors)
    );
}

/// The master is killed mid-stream; the sentinels fail over on their own
/// and the applier keeps retrying until the stream is in the new master.
#[tokio::test]
async fn master_crash_mid_stream() {
    let Some(mut set) = SentinelSet::start() else {
        return;
    };
    let first = set.data_ports[0];
    let t = target(&set, 1, Duration::from_millis(300));
    let begun = Instant::now();
    let victim = &mut set.data[0];
    let mut killed_at = None;
    let errors = drive(&t, 3, (1, 3000), 50, |end| {
        if end == 1000 {
            victim.kill();
            killed_at = Some(Instant::now());
        }
    })
    .await;
    let outage = killed_at.map(|k| k.elapsed());
    let master = set.master(Duration::from_secs(20));
    assert_ne!(master, first, "the failover happened");
    assert_exact(master, 3, 3000);
    eprintln!(
        "applied in {:?} (killed {outage:?} before the end); retries: {}",
        begun.elapsed(),
        summary(&errors)
    );
}

/// WAIT holds a run while no replica can confirm it: the run is committed
/// on the master but reported unavailable; once a replica is back the retry
/// confirms it, and nothing is applied twice. A record Redis refused keeps
/// its refusal across the retry.
#[tokio::test]
async fn wait_shortfall_holds_the_run() {
    let Some(set) = SentinelSet::start() else {
        return;
    };
    let t = target(&set, 1, Duration::from_millis(200));
    assert!(drive(&t, 4, (1, 100), 50, |_| {}).await.is_empty());
    let master = set.master(Duration::from_secs(5));
    call(master, &[&b"SET"[..], b"not-a-list", b"x"]);

    for replica in &set.data[1..] {
        replica.signal("STOP");
    }
    let mut ops: Vec<(u64, Op)> = (101..=150).map(|s| (s, push(s))).collect();
    ops.push((151, op(&[&b"RPUSH"[..], b"not-a-list", b"151"])));
    let items: Vec<(u64, &Op)> = ops.iter().map(|(s, o)| (*s, o)).collect();
    for _ in 0..2 {
        let e = t
            .apply(4, &items)
            .await
            .expect_err("no replica can confirm");
        assert!(!e.suspect, "{e}");
        assert!(
            e.reason.contains("0 of 1 replicas confirmed within 200ms"),
            "{e}"
        );
    }
    // Committed on the master all the same, once.
    assert_eq!(list(master, "list:37"), ["37", "101"]);

    set.data[1].signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        match t.apply(4, &items).await {
            Ok(out) => break out,
            Err(e) => {
                assert!(Instant::now() < deadline, "never confirmed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(out[..50].iter().all(|a| *a == Applied::Ok), "{out:?}");
    assert!(
        matches!(&out[50], Applied::Refused(r) if r.contains("WRONGTYPE")),
        "{:?}",
        out[50]
    );
    set.data[2].signal("CONT");
    assert!(drive(&t, 4, (152, 200), 50, |_| {}).await.is_empty());
    let master = set.master(Duration::from_secs(5));
    for k in 0..KEYS {
        let want: Vec<String> = (1..=200)
            .filter(|s| s % KEYS == k && *s != 151)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(list(master, &format!("list:{k}")), want, "list:{k}");
    }
}
