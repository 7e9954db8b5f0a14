//! A real Redis Cluster for tests: 3 masters and 3 replicas on loopback,
//! started once per test binary, with the test's own blocking client to
//! look at it and to break it (kill a node, restart it, move a slot).
//!
//! Every `redis-server` runs under a small `sh` guard that reads its
//! stdin: when the test process ends (however it ends) the pipe closes and
//! the guard kills its server, so no server outlives the tests. Killing a
//! node in a test is the same: close that guard's stdin.
//!
//! `None` (and a message) where `redis-server` or `redis-cli` is missing,
//! unless `SYNCS_REQUIRE_ALL=1`, where that is a failure.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use syncs_engine::wire::reply::{take_reply, Reply};
use syncs_engine::wire::resp::encode_command;

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

fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.exists())
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

fn start() -> Option<Cluster> {
    let server = find(&["/usr/bin/redis-server", "/usr/local/bin/redis-server"]);
    let cli = find(&["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"]);
    let (Some(exe), Some(cli)) = (server, cli) else {
        assert!(
            std::env::var("SYNCS_REQUIRE_ALL").as_deref() != Ok("1"),
            "redis-server or redis-cli is missing"
        );
        eprintln!("redis-server or redis-cli not installed: skipped");
        return None;
    };
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
    let ports = free_ports(6);
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
        wait_for(SETTLE, &format!("node {p} to listen"), || is_up(p));
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

/// `n` loopback ports free for a node and its cluster bus (port + 10000).
fn free_ports(n: usize) -> Vec<u16> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = u64::from(std::process::id()) ^ now;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut ports = Vec::new();
    while ports.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 20000 + (x % 25000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&p) && free(p) && free(p + 10000) {
            ports.push(p);
        }
    }
    ports
}

/// Polls `ready` until it holds; panics after `within`.
pub fn wait_for(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

    /// SIGKILLs the node of `port` (its guard does, when told).
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
        wait_for(SETTLE, &format!("node {port} to listen again"), || {
            is_up(port)
        });
    }

    /// Waits until every node answers, says `cluster_state:ok`, all agree
    /// on the slot map, the map covers every slot, and every master has an
    /// online replica.
    pub fn wait_healthy(&self) {
        wait_for(SETTLE, "the cluster to be healthy", || self.healthy());
    }

    fn healthy(&self) -> bool {
        let mut maps = Vec::new();
        for &p in &self.ports {
            let Some(Reply::Bulk(Some(info))) = try_call(p, &[&b"CLUSTER"[..], b"INFO"]) else {
                return false;
            };
            if !contains(&info, "cluster_state:ok") {
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
        if covered != 16384 {
            return false;
        }
        let mut masters: Vec<u16> = first.values().copied().collect();
        masters.sort();
        masters.dedup();
        masters.iter().all(|&m| {
            matches!(try_call(m, &[&b"INFO"[..], b"replication"]),
                Some(Reply::Bulk(Some(info))) if contains(&info, "state=online"))
        })
    }

    /// The master serving `slot` now, as the first node that answers sees
    /// it.
    pub fn master_of(&self, slot: u16) -> u16 {
        for &p in &self.ports {
            if let Some(map) = slot_map(p) {
                if let Some((_, &m)) = map.iter().find(|((a, b), _)| *a <= slot && slot <= *b) {
                    return m;
                }
            }
        }
        panic!("no node knows who serves slot {slot}");
    }

    /// The masters, sorted.
    pub fn masters(&self) -> Vec<u16> {
        let map = self
            .ports
            .iter()
            .find_map(|&p| slot_map(p))
            .expect("a node answers");
        let mut m: Vec<u16> = map.values().copied().collect();
        m.sort();
        m.dedup();
        m
    }

    /// An online replica of the master at `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let Reply::Bulk(Some(info)) = call(port, &[&b"INFO"[..], b"replication"]) else {
            panic!("INFO replication of {port}");
        };
        let info = String::from_utf8_lossy(&info).into_owned();
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
        match call(port, &[&b"CLUSTER"[..], b"MYID"]) {
            Reply::Bulk(Some(id)) => String::from_utf8(id.to_vec()).expect("an id"),
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }

    /// A command about `key`, sent to the node serving it (following
    /// redirects, as a cluster client does).
    pub fn on_key(&self, key: &[u8], args: &[&[u8]]) -> Reply {
        let mut port = self.master_of(syncs_engine::route::slot::key_slot(key));
        for _ in 0..5 {
            let reply = call(port, args);
            match &reply {
                Reply::Error(e) if e.starts_with(b"MOVED") => {
                    let text = String::from_utf8_lossy(e);
                    port = text
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
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    other => panic!("{other:?}"),
                })
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
            Reply::Bulk(Some(b)) => Some(
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a number"),
            ),
            Reply::Bulk(None) => None,
            other => panic!("HGET {key}: {other:?}"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `(start, end) → master port` as node `port` sees it.
pub fn slot_map(port: u16) -> Option<BTreeMap<(u16, u16), u16>> {
    let Some(Reply::Array(Some(entries))) = try_call(port, &[&b"CLUSTER"[..], b"SLOTS"]) else {
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

/// Whether the node of `port` answers PING.
pub fn is_up(port: u16) -> bool {
    matches!(try_call(port, &[&b"PING"[..]]), Some(Reply::Status(_)))
}

/// One command on a new blocking connection; `None` if the node does not
/// answer within 2 s.
pub fn try_call(port: u16, args: &[&[u8]]) -> Option<Reply> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = Vec::new();
    encode_command(&mut out, args);
    s.write_all(&out).ok()?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(r) = take_reply(&mut buf).ok()? {
            return Some(r);
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One command; the node must answer.
pub fn call(port: u16, args: &[&[u8]]) -> Reply {
    try_call(port, args).unwrap_or_else(|| {
        panic!(
            "node {port} did not answer {:?}",
            args.iter()
                .map(|a| Bytes::copy_from_slice(a))
                .collect::<Vec<_>>()
        )
    })
}
