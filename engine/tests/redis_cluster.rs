//! The Redis Cluster applier against a real 3 + 3 node cluster (started
//! once for this binary, `common/cluster.rs`): exactly once per slot with no
//! fault, across a master's crash and failover, across a slot migration
//! (ASK, TRYAGAIN, MOVED), and when runs are cut off at random points.
//!
//! The oracle: records `RPUSH <key> <n>` where `n` counts that key's
//! records, so each list must read exactly `1..=N` in order; and each
//! slot's marker must equal the highest sequence sent into that slot.
//!
//! Skipped where Redis is not installed, unless `SYNCS_REQUIRE_ALL=1`.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/procs.rs"]
mod procs;

#[path = "common/ops.rs"]
mod ops;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{cluster, exclusive, is_up, wait_for, Cluster, SETTLE};
use ops::op;
use procs::call;
use syncs_engine::apply::redis::{RedisClusterTarget, RedisSettings};
use syncs_engine::apply::Applied;
use syncs_engine::op::Op;
use syncs_engine::route::slot::{key_slot, marker_key};
use syncs_engine::wire::reply::Reply;

/// How long a test may take to get one run applied while the cluster heals.
const PATIENCE: Duration = Duration::from_secs(60);

fn target(c: &Cluster, name: &str) -> RedisClusterTarget {
    let seeds: Vec<String> = c
        .ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    RedisClusterTarget::new(
        name,
        &seeds,
        RedisSettings {
            pool: 2,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            replicas: 1,
            replica_timeout: Duration::from_millis(500),
            ..RedisSettings::default()
        },
    )
    .expect("a target")
}

fn rpush(key: &str, n: u64) -> Op {
    op(&[b"RPUSH", key.as_bytes(), n.to_string().as_bytes()])
}

/// A stream of numbered `RPUSH`es over some keys, and what the cluster
/// must hold once all of it is applied.
struct Load {
    stream: u64,
    target: String,
    keys: Vec<String>,
    /// Records per key so far.
    counts: Vec<u64>,
    /// Highest sequence per slot.
    high: BTreeMap<u16, u64>,
    seq: u64,
}

impl Load {
    fn new(stream: u64, target: &str, keys: Vec<String>) -> Self {
        let counts = vec![0; keys.len()];
        Self {
            stream,
            target: target.to_owned(),
            keys,
            counts,
            high: BTreeMap::new(),
            seq: 0,
        }
    }

    /// `keys` spread over all the cluster's slots.
    fn spread(stream: u64, target: &str, prefix: &str, n: usize) -> Self {
        Self::new(
            stream,
            target,
            (0..n).map(|k| format!("{prefix}:{k}")).collect(),
        )
    }

    /// The next `n` records, each for the key chosen by `pick`.
    fn batch_with(&mut self, n: usize, mut pick: impl FnMut(u64) -> usize) -> Vec<(u64, Op)> {
        (0..n)
            .map(|_| {
                self.seq += 1;
                let k = pick(self.seq) % self.keys.len();
                self.counts[k] += 1;
                let slot = key_slot(self.keys[k].as_bytes());
                self.high.insert(slot, self.seq);
                (self.seq, rpush(&self.keys[k], self.counts[k]))
            })
            .collect()
    }

    /// The next `n` records, over the keys in turn (with a stride, so runs
    /// mix slots and nodes).
    fn batch(&mut self, n: usize) -> Vec<(u64, Op)> {
        let len = self.keys.len() as u64;
        self.batch_with(n, |seq| ((seq * 7) % len) as usize)
    }

    fn field(&self) -> String {
        format!("{:016x}:{}", self.stream, self.target)
    }

    /// Every list holds exactly `1..=N` in order; every slot's marker is
    /// the highest sequence sent into it.
    fn check(&self, c: &Cluster) {
        for (key, &n) in self.keys.iter().zip(&self.counts) {
            let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            assert_eq!(c.list(key), want, "list {key}");
        }
        let field = self.field();
        for (&slot, &high) in &self.high {
            assert_eq!(
                c.hget(&marker_key(slot), &field),
                Some(high),
                "marker of slot {slot}"
            );
        }
    }
}

fn refs(batch: &[(u64, Op)]) -> Vec<(u64, &Op)> {
    batch.iter().map(|(s, op)| (*s, op)).collect()
}

/// Applies `batch` until the target takes it (as a lane retries), within
/// [`PATIENCE`]; every item must be applied.
async fn apply(t: &RedisClusterTarget, stream: u64, batch: &[(u64, Op)]) {
    let items = refs(batch);
    let deadline = Instant::now() + PATIENCE;
    let mut failures = 0;
    loop {
        match t.apply(stream, &items).await {
            Ok(out) => {
                assert!(out.iter().all(|a| *a == Applied::Ok), "{out:?}");
                return;
            }
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "still failing: {e}");
                if failures == 1 || failures % 20 == 0 {
                    eprintln!("retrying ({failures}): {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn every_slot_exactly_once_without_faults() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let t = target(c, "t1");
    t.probe().await.expect("the cluster answers");
    let mut load = Load::spread(0x7101, "t1", "t1:list", 64);
    let batches: Vec<Vec<(u64, Op)>> = (0..20).map(|_| load.batch(100)).collect();
    for b in &batches {
        apply(&t, load.stream, b).await;
    }
    load.check(c);
    // Delivered again (as after a server restart): all skipped.
    for b in &batches {
        apply(&t, load.stream, b).await;
    }
    load.check(c);
    let stats = t.stats();
    // (A WAIT shortfall is possible on a loaded machine: retried.)
    assert_eq!(stats.moved + stats.ask + stats.tryagain, 0, "{stats:?}");
    eprintln!("no fault: {} records in {:?}", load.seq, started.elapsed());
}

#[tokio::test]
async fn a_master_crash_loses_and_repeats_nothing() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let t = target(c, "t2");
    let mut load = Load::spread(0x7202, "t2", "t2:list", 64);
    let victim = c.master_of(key_slot(b"t2:list:0"));
    let mut killer = None;
    for i in 0..40 {
        let b = load.batch(50);
        if i == 10 {
            // Killed while runs go on; its replica takes over, and the
            // node comes back (as a replica) once that happened, so the
            // new master has a replica for WAIT again.
            killer = Some(std::thread::spawn(move || {
                let c = cluster().expect("running");
                std::thread::sleep(Duration::from_millis(2));
                c.kill(victim);
                wait_for(SETTLE, "a replica to take over", || {
                    c.ports.iter().filter(|&&p| p != victim).any(|&p| {
                        cluster::slot_map(p).is_some_and(|m| !m.values().any(|&m| m == victim))
                    })
                });
                c.restart(victim);
            }));
        }
        if i == 11 {
            // Batch 10 may or may not have met the crash; the rest do.
            wait_for(SETTLE, "the master to be down", || !is_up(victim));
        }
        apply(&t, load.stream, &b).await;
    }
    killer.expect("started").join().expect("the killer");
    c.wait_healthy();
    load.check(c);
    let stats = t.stats();
    assert_eq!(stats.marker_regressions, 0, "{stats:?}");
    assert!(stats.moved > 0 || stats.refreshes > 1, "{stats:?}");
    eprintln!(
        "master crash: {} records in {:?}, {stats:?}",
        load.seq,
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slot_migrated_mid_stream_is_followed() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let t = target(c, "t3");
    // 8 keys in one slot (a hash tag), 8 elsewhere.
    let mut keys: Vec<String> = (0..8).map(|k| format!("t3:{{mig}}:{k}")).collect();
    keys.extend((0..8).map(|k| format!("t3:other:{k}")));
    let mut load = Load::new(0x7303, "t3", keys);
    let slot = key_slot(b"mig");
    let len = load.keys.len() as u64;
    let every_key = |load: &mut Load| load.batch_with(32, |seq| (seq % len) as usize);

    apply(&t, load.stream, &every_key(&mut load)).await;
    let from = c.master_of(slot);
    let to = *c
        .masters()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let (from_id, to_id) = (c.id(from), c.id(to));
    let slot_text = slot.to_string();
    let setslot = |port: u16, how: &[u8], id: &str| {
        let r = call(
            port,
            &[
                &b"CLUSTER"[..],
                b"SETSLOT",
                slot_text.as_bytes(),
                how,
                id.as_bytes(),
            ],
        );
        assert_eq!(
            r,
            Reply::Status(Bytes::from_static(b"OK")),
            "SETSLOT on {port}"
        );
    };
    setslot(to, b"IMPORTING", &from_id);
    setslot(from, b"MIGRATING", &to_id);
    // Migration started, no key moved: still applied at the source.
    apply(&t, load.stream, &every_key(&mut load)).await;

    let keys_at_source = || -> Vec<Bytes> {
        match call(
            from,
            &[
                &b"CLUSTER"[..],
                b"GETKEYSINSLOT",
                slot_text.as_bytes(),
                b"100",
            ],
        ) {
            Reply::Array(Some(keys)) => keys
                .into_iter()
                .map(|k| match k {
                    Reply::Bulk(Some(k)) => k,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("GETKEYSINSLOT: {other:?}"),
        }
    };
    let migrate = move |keys: &[Bytes]| {
        let port = to.to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            b"127.0.0.1",
            port.as_bytes(),
            b"",
            b"0",
            b"5000",
            b"KEYS",
        ];
        args.extend(keys.iter().map(|k| &k[..]));
        let r = call(from, &args);
        assert_eq!(r, Reply::Status(Bytes::from_static(b"OK")), "MIGRATE");
    };
    // Half the data keys move (the marker stays): a group touching both
    // halves gets TRYAGAIN until the rest moves, which happens while the
    // run waits; then the source answers ASK.
    let at_source = keys_at_source();
    let marker = marker_key(slot);
    let half: Vec<Bytes> = at_source
        .iter()
        .filter(|k| k[..] != *marker.as_bytes())
        .take(4)
        .cloned()
        .collect();
    migrate(&half);
    let rest: Vec<Bytes> = keys_at_source();
    let mover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        migrate(&rest);
    });
    apply(&t, load.stream, &every_key(&mut load)).await;
    mover.join().expect("the mover");
    let mid = t.stats();
    assert!(mid.tryagain > 0, "{mid:?}");
    assert!(mid.ask > 0, "{mid:?}");
    // Everything moved, the slot not yet handed over: ASK again.
    apply(&t, load.stream, &every_key(&mut load)).await;
    assert!(t.stats().ask > mid.ask);

    // Handed over: MOVED, then the new owner for good.
    setslot(to, b"NODE", &to_id);
    setslot(from, b"NODE", &to_id);
    for &m in &c.masters() {
        if m != from && m != to {
            setslot(m, b"NODE", &to_id);
        }
    }
    apply(&t, load.stream, &every_key(&mut load)).await;
    let end = t.stats();
    assert!(end.moved > 0, "{end:?}");
    for _ in 0..3 {
        apply(&t, load.stream, &every_key(&mut load)).await;
    }
    c.wait_healthy();
    assert_eq!(c.master_of(slot), to);
    load.check(c);
    assert_eq!(t.stats().marker_regressions, 0);
    eprintln!("slot migration: {:?}, {:?}", started.elapsed(), t.stats());
}

/// Our slot of a key is the cluster's (`CLUSTER KEYSLOT`), for keys with
/// and without hash tags, empty tags, nested braces and non-UTF-8 bytes.
#[tokio::test]
async fn key_slots_agree_with_the_cluster() {
    let Some(c) = cluster() else { return };
    let mut keys: Vec<Vec<u8>> = [
        &b"foo"[..],
        b"{user1000}.following",
        b"{}x",
        b"a{}{b}",
        b"a{b}{c}",
        b"{{x}}",
        b"}{",
        b"{",
        b"}",
        b"",
        b"\xff\xfe{\x00}",
        b"syncs:applied:{3560}",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..2_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let mut k = format!("k{i}:").into_bytes();
        k.extend_from_slice(&bytes[..(x % 8) as usize]);
        if i % 3 == 0 {
            k.splice(1..1, b"{".iter().copied());
            k.push(b'}');
        }
        keys.push(k);
    }
    let port = c.ports[0];
    for k in &keys {
        let theirs = call(port, &[&b"CLUSTER"[..], b"KEYSLOT", k]);
        assert_eq!(theirs, Reply::Int(i64::from(key_slot(k))), "key {k:?}");
    }
}

#[tokio::test]
async fn runs_cut_off_anywhere_are_applied_once() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let t = target(c, "t4");
    let mut load = Load::spread(0x7404, "t4", "t4:list", 64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("cancellation seed {seed}");
    let mut x = seed;
    let mut random = move |below: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    };
    let batches: Vec<Vec<(u64, Op)>> = (0..30).map(|_| load.batch(50)).collect();
    let mut cut = 0;
    for b in &batches {
        let items = refs(b);
        // Dropped after a time that starts near zero and grows by 30% an
        // attempt until a run gets through: the cuts sweep every stage of
        // a run (connecting, reading markers, EXEC in flight, WAIT) on any
        // machine, however fast, rather than by chance.
        for attempt in 0i32.. {
            let limit = Duration::from_micros(random(50) + (25.0 * 1.3f64.powi(attempt)) as u64);
            match tokio::time::timeout(limit, t.apply(load.stream, &items)).await {
                Ok(Ok(out)) => {
                    assert!(out.iter().all(|a| *a == Applied::Ok), "{out:?}");
                    break;
                }
                Ok(Err(e)) => panic!("no fault here: {e}"),
                Err(_) => cut += 1,
            }
            // Sometimes a run of another stream's place gets in between.
            if random(4) == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    // Everything delivered again, nothing cut off.
    for b in &batches {
        apply(&t, load.stream, b).await;
    }
    load.check(c);
    let stats = t.stats();
    assert!(cut > 0 && stats.fences > 0, "cut {cut}, {stats:?}");
    eprintln!(
        "cancellation: {cut} runs cut off in {:?}, {stats:?}",
        started.elapsed()
    );
}

/// Shared-streams mode (the NATS transport): two servers may apply the
/// same stream at once while a partition changes hands. Two targets of the
/// same name stand for them, both applying the whole stream concurrently:
/// each slot's marker is read under WATCH, so every record is applied once.
#[tokio::test]
async fn two_servers_on_one_stream_apply_each_record_once() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let mut load = Load::spread(0x7505, "t5", "t5:list", 32);
    let batches: Vec<Vec<(u64, Op)>> = (0..20).map(|_| load.batch(40)).collect();
    let (one, two) = (target(c, "t5"), target(c, "t5"));
    /// Turned off again however the test ends.
    struct Shared;
    impl Drop for Shared {
        fn drop(&mut self) {
            syncs_engine::apply::redis::set_shared_streams(false);
        }
    }
    syncs_engine::apply::redis::set_shared_streams(true);
    let _shared = Shared;
    let run = |t: &'static RedisClusterTarget, batches: Vec<Vec<(u64, Op)>>| async move {
        for b in &batches {
            apply(t, 0x7505, b).await;
        }
    };
    let (one, two): (&'static _, &'static _) = (Box::leak(Box::new(one)), Box::leak(Box::new(two)));
    tokio::join!(run(one, batches.clone()), run(two, batches.clone()));
    load.check(c);
    let conflicts = one.stats().conflicts + two.stats().conflicts;
    assert!(conflicts > 0, "the two never met under WATCH");
    eprintln!(
        "shared streams: {:?}, {conflicts} groups planned again",
        started.elapsed()
    );
}

/// A manual failover (`CLUSTER FAILOVER` on a replica) while runs go on:
/// the writes follow the slots. The applier notices by whatever the old
/// master answers first (a MOVED, a WAIT shortfall as it turns replica, a
/// READONLY or a dropped connection) and reads the slot map again.
#[tokio::test]
async fn a_manual_failover_is_followed_through_moved() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let started = Instant::now();
    let t = target(c, "t6");
    let mut load = Load::spread(0x7606, "t6", "t6:list", 64);
    let old = c.master_of(key_slot(b"t6:list:0"));
    let replica = c.replica_of(old);
    for i in 0..30 {
        if i == 10 {
            let r = call(replica, &[&b"CLUSTER"[..], b"FAILOVER"]);
            assert_eq!(
                r,
                Reply::Status(Bytes::from_static(b"OK")),
                "CLUSTER FAILOVER"
            );
        }
        if i == 11 {
            wait_for(SETTLE, "the replica to take over", || {
                c.master_of(key_slot(b"t6:list:0")) == replica
            });
        }
        apply(&t, load.stream, &load.batch(50)).await;
    }
    c.wait_healthy();
    load.check(c);
    let stats = t.stats();
    // The first fetch, then at least one after the failover.
    assert!(stats.refreshes >= 2, "{stats:?}");
    assert_eq!(stats.marker_regressions, 0, "{stats:?}");
    eprintln!("manual failover: {:?}, {stats:?}", started.elapsed());
}

/// Whether the node at `port` leaves a PING unanswered for 100 ms (it is
/// inside `DEBUG SLEEP`).
fn busy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.write_all(b"PING\r\n");
    let mut reply = [0u8; 16];
    s.read(&mut reply).is_err()
}

/// A run commits with a refusal inside EXEC (WRONGTYPE) but its WAIT falls
/// short (the replica sleeps): the run fails, and its retry, which skips
/// everything as applied, still reports that refusal and applies nothing
/// twice.
#[tokio::test]
async fn a_refusal_survives_a_wait_shortfall_retry() {
    let Some(c) = cluster() else { return };
    let _one = exclusive().await;
    c.wait_healthy();
    let t = target(c, "t7");
    let stream = 0x7707;
    apply(&t, stream, &[(1, op(&[b"SET", b"{t7}:str", b"x"]))]).await;

    let replica = c.replica_of(c.master_of(key_slot(b"t7")));
    let sleeper = std::thread::spawn(move || call(replica, &[&b"DEBUG"[..], b"SLEEP", b"1.5"]));
    wait_for(SETTLE, "the replica to sleep", || busy(replica));
    let run = [(2, rpush("{t7}:str", 1)), (3, rpush("{t7}:list", 1))];
    let e = t
        .apply(stream, &refs(&run))
        .await
        .expect_err("the replica sleeps");
    assert!(e.reason.contains("replicas confirmed"), "{e}");
    sleeper.join().expect("the sleeper");

    let deadline = Instant::now() + PATIENCE;
    let out = loop {
        match t.apply(stream, &refs(&run)).await {
            Ok(out) => break out,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(&out[0], Applied::Refused(r) if r.starts_with("WRONGTYPE")),
        "{out:?}"
    );
    assert_eq!(out[1], Applied::Ok);
    assert_eq!(c.list("{t7}:list"), ["1"]);
    assert!(t.stats().wait_shortfalls > 0);
}
