//! A real Redis Cluster for tests: 3 masters and 3 replicas on loopback,
//! started once per test binary, and the test's own ways to look at it
//! and to break it (kill a node, restart it, ask about slots and keys).
//!
//! Needs `procs.rs` included beside it (`mod procs;` at the test's root).
//! The cluster lives in a static, which is never dropped, so [`procs::Proc`]
//! cannot end its servers: each `redis-server` runs under a small `sh`
//! guard that reads its stdin instead. When the test process ends, however
//! it ends, the pipe closes and the guard kills its server; killing a node
//! in a test is the same (close that guard's stdin).
//!
//! `None` (and a message) where `redis-server` or `redis-cli` is missing,
//! unless `SYNCS_REQUIRE_ALL=1`, where that is a failure.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use syncs_engine::route::slot::key_slot;
use syncs_engine::wire::reply::Reply;

use crate::procs::{self, call, info, poll, text, try_call};

/// How long the cluster may take to become healthy after a change.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Client ports of the six nodes (the bus port is each + 10000).
    pub ports: Vec<u16>,
    exe: PathBuf,
    root: PathBuf,
    /// The guard of each running node.
    guards: Mutex<HashMap<u16, Child>>,
    /// Removes `root` when the test process ends.
    _janitor: Child,
}

/// The cluster of this test binary, started on first use; `None` when
/// Redis is not installed (and that is allowed).
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(start).as_ref()
}

/// Tests that use the cluster hold this, one at a time: some change its
/// topology, and the others' timings should not depend on that. (A tokio
/// lock: each test has its own runtime, and holds it across awaits.)
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Polls `ready` until it holds; panics naming `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    poll(what, within, || ready().then_some(()));
}

/// Whether the node of `port` answers PING.
pub fn is_up(port: u16) -> bool {
    matches!(try_call(port, &[&b"PING"[..]]), Ok(Reply::Status(_)))
}

fn start() -> Option<Cluster> {
    let exe = PathBuf::from(procs::redis_server()?);
    let cli = exe.with_file_name("redis-cli");
    if !cli.exists() {
        assert!(
            std::env::var("SYNCS_REQUIRE_ALL").as_deref() != Ok("1"),
            "{} is missing",
            cli.display()
        );
        eprintln!("{} not installed: skipped", cli.display());
        return None;
    }
    let started = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("syncs-cluster-")
        .tempdir()
        .expect("a temp dir")
        .keep();
    let janitor = Command::new("sh")
        .args(["-c", "read _; sleep 1; rm -rf \"$1\"", "sh"])
        .arg(&root)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let ports = procs::free_ports(6);
    let cluster = Cluster {
        ports: ports.clone(),
        exe,
        root,
        guards: Mutex::new(HashMap::new()),
        _janitor: janitor,
    };
    for &p in &ports {
        cluster.spawn(p);
    }
    for &p in &ports {
        procs::wait_ping(p);
    }
    let mut create = Command::new(cli);
    create.arg("--cluster").arg("create");
    for p in &ports {
        create.arg(format!("127.0.0.1:{p}"));
    }
    let out = create
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_healthy();
    eprintln!(
        "cluster of {} nodes ({ports:?}) healthy in {:?}",
        ports.len(),
        started.elapsed()
    );
    Some(cluster)
}

impl Cluster {
    fn dir(&self, port: u16) -> PathBuf {
        self.root.join(port.to_string())
    }

    /// Starts (or starts again) the node of `port` in its own directory,
    /// so a restarted node has its `nodes.conf` and rejoins as itself.
    fn spawn(&self, port: u16) {
        let dir = self.dir(port);
        std::fs::create_dir_all(&dir).expect("a node dir");
        let child = Command::new("sh")
            .args([
                "-c",
                "\"$@\" & r=$!; read _; kill -9 $r 2>/dev/null; wait $r 2>/dev/null",
                "sh",
            ])
            .arg(&self.exe)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh runs");
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, child);
    }

    /// SIGKILLs the node of `port` (its guard does, when told) and waits
    /// until it is gone.
    pub fn kill(&self, port: u16) {
        let guard = self
            .guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        if let Some(mut child) = guard {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts the node of `port` again; it rejoins with its old identity.
    pub fn restart(&self, port: u16) {
        self.spawn(port);
        procs::wait_ping(port);
    }

    /// Waits until every node answers, says `cluster_state:ok`, all agree
    /// on a slot map that covers every slot, and every master has an
    /// online replica.
    pub fn wait_healthy(&self) {
        wait_for(SETTLE, "the cluster to be healthy", || self.healthy());
    }

    fn healthy(&self) -> bool {
        let mut maps = Vec::new();
        for &p in &self.ports {
            let state = try_call(p, &[&b"CLUSTER"[..], b"INFO"]).ok();
            if !state
                .and_then(|r| text(&r))
                .is_some_and(|s| s.contains("cluster_state:ok"))
            {
                return false;
            }
            match slot_map(p) {
                Some(m) => maps.push(m),
                None => return false,
            }
        }
        let first = &maps[0];
        if maps.iter().any(|m| m != first) {
            return false;
        }
        let covered: u32 = first.keys().map(|(a, b)| u32::from(b - a) + 1).sum();
        covered == 16384
            && self
                .masters()
                .iter()
                .all(|&m| info(m, "replication").contains("state=online"))
    }

    /// The master serving `slot` now, as the first node that answers sees
    /// it.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.ports
            .iter()
            .filter_map(|&p| slot_map(p))
            .find_map(|map| {
                map.iter()
                    .find(|((a, b), _)| *a <= slot && slot <= *b)
                    .map(|(_, &m)| m)
            })
            .unwrap_or_else(|| panic!("no node knows who serves slot {slot}"))
    }

    /// The masters, sorted.
    pub fn masters(&self) -> Vec<u16> {
        let map = self
            .ports
            .iter()
            .find_map(|&p| slot_map(p))
            .expect("a node answers");
        let mut m: Vec<u16> = map.values().copied().collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// An online replica of the master at `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let info = info(port, "replication");
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .find_map(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix("port="))
                    .and_then(|p| p.parse().ok())
            })
            .unwrap_or_else(|| panic!("{port} has no online replica: {info}"))
    }

    /// The `CLUSTER MYID` of a node.
    pub fn id(&self, port: u16) -> String {
        let reply = call(port, &[&b"CLUSTER"[..], b"MYID"]);
        text(&reply).unwrap_or_else(|| panic!("CLUSTER MYID: {reply:?}"))
    }

    /// A command about `key`, sent to the node serving it (following
    /// MOVED, as a cluster client does).
    pub fn on_key(&self, key: &[u8], args: &[&[u8]]) -> Reply {
        let mut port = self.master_of(key_slot(key));
        for _ in 0..5 {
            let reply = call(port, args);
            match &reply {
                Reply::Error(e) if e.starts_with(b"MOVED") => {
                    port = String::from_utf8_lossy(e)
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("a port in MOVED");
                }
                _ => return reply,
            }
        }
        panic!("redirected too often for {}", String::from_utf8_lossy(key));
    }

    /// `LRANGE key 0 -1` as strings.
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.on_key(
            key.as_bytes(),
            &[&b"LRANGE"[..], key.as_bytes(), b"0", b"-1"],
        ) {
            Reply::Array(Some(items)) => items
                .iter()
                .map(|r| text(r).unwrap_or_else(|| panic!("{r:?}")))
                .collect(),
            other => panic!("LRANGE {key}: {other:?}"),
        }
    }

    /// `HGET key field` as a number (`None`: absent).
    pub fn hget(&self, key: &str, field: &str) -> Option<u64> {
        match self.on_key(
            key.as_bytes(),
            &[&b"HGET"[..], key.as_bytes(), field.as_bytes()],
        ) {
            Reply::Bulk(None) => None,
            reply => Some(
                text(&reply)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("HGET {key}: {reply:?}")),
            ),
        }
    }

    /// Where the nodes' directories (and logs) are.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `(start, end) → master port` as node `port` sees it (`None`: it does
/// not answer).
pub fn slot_map(port: u16) -> Option<BTreeMap<(u16, u16), u16>> {
    let Ok(Reply::Array(Some(entries))) = try_call(port, &[&b"CLUSTER"[..], b"SLOTS"]) else {
        return None;
    };
    let mut map = BTreeMap::new();
    for e in entries {
        let Reply::Array(Some(f)) = e else {
            return None;
        };
        let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(m)))) =
            (f.first(), f.get(1), f.get(2))
        else {
            return None;
        };
        let Some(Reply::Int(mp)) = m.get(1) else {
            return None;
        };
        map.insert((*a as u16, *b as u16), *mp as u16);
    }
    Some(map)
}
