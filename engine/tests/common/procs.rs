//! Helpers for tests that run `redis-server` processes: finding the
//! binary, free loopback ports, a child that dies with its handle, signals,
//! a blocking one-command client, and polling with a deadline.
//!
//! Included by path (`#[path = "common/procs.rs"] mod procs;`) so each test
//! binary takes only the helpers it uses.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use syncs_engine::wire::reply::{take_reply, Reply};
use syncs_engine::wire::resp::encode_command;

/// The `redis-server` binary, or `None` (the test is skipped) where it is
/// not installed. With `SYNCS_REQUIRE_ALL=1` a missing binary fails.
pub fn redis_server() -> Option<&'static str> {
    let exe = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if exe.is_none() {
        assert!(
            std::env::var("SYNCS_REQUIRE_ALL").as_deref() != Ok("1"),
            "redis-server is missing"
        );
        eprintln!("redis-server not installed: skipped");
    }
    exe
}

/// `n` distinct loopback ports free right now, each with `port + 10000`
/// free too (a cluster node's bus port), all below the kernel's ephemeral
/// range: no outgoing connection takes one between this pick and the bind
/// of the server it is for (a sentinel or node that cannot bind its port
/// exits, and the test waits for it in vain). A port from the ephemeral
/// range did that to a sentinel once in CI. A port is handed out once per
/// process (tests run in parallel: one may not have bound its ports yet).
pub fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = u64::from(low.saturating_sub(20000).max(1000));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = (u64::from(std::process::id()) ^ now) | 1;
    let mut ports = Vec::new();
    while ports.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 10000 + (x % span) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        let pair = [p, p + 10000];
        if pair.iter().all(|q| !given.contains(q) && free(*q)) {
            given.extend(pair);
            ports.push(p);
        }
    }
    ports
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `exe args`, output discarded.
    pub fn spawn(name: &str, exe: &str, args: &[String]) -> Proc {
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {exe} does not start: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("{}: kill -{signal}: {e}", self.name));
        assert!(status.success(), "{}: kill -{signal}: {status}", self.name);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls `probe` every 20 ms until it gives a value; panics naming `what`
/// after `within`.
pub fn poll<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One command on a new blocking connection, with a 5 s limit.
pub fn try_call(port: u16, args: &[&[u8]]) -> Result<Reply, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    encode_command(&mut out, args);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(r) = take_reply(&mut buf).map_err(|e| e.to_string())? {
            return Ok(r);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// [`try_call`] that must succeed.
pub fn call(port: u16, args: &[&[u8]]) -> Reply {
    try_call(port, args).unwrap_or_else(|e| panic!("127.0.0.1:{port} {args:?}: {e}"))
}

/// The text of a bulk reply.
pub fn text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// `INFO <section>` as text ("" when not answered).
pub fn info(port: u16, section: &str) -> String {
    try_call(port, &[&b"INFO"[..], section.as_bytes()])
        .ok()
        .and_then(|r| text(&r))
        .unwrap_or_default()
}

/// The value of `field:` in an INFO text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The elements of a list, as text.
pub fn list(port: u16, key: &str) -> Vec<String> {
    match call(port, &[&b"LRANGE"[..], key.as_bytes(), b"0", b"-1"]) {
        Reply::Array(Some(items)) => items
            .iter()
            .map(|r| text(r).unwrap_or_else(|| panic!("{r:?}")))
            .collect(),
        other => panic!("LRANGE {key}: {other:?}"),
    }
}

/// Waits until the `redis-server` `server` answers on 127.0.0.1:`port`,
/// and checks that the one answering is that process: a server that could
/// not bind its port exits, and another's answer would have two tests
/// share one server (one's `CLIENT KILL` or end then cuts the other's
/// connections).
pub fn wait_own_redis(server: &Proc, port: u16) {
    wait_ping(port);
    let info = info(port, "server");
    let pid = info_field(&info, "process_id").and_then(|p| p.parse::<u32>().ok());
    assert_eq!(
        pid,
        Some(server.pid()),
        "127.0.0.1:{port} is answered by another process than {}",
        server.name
    );
}

/// Waits until 127.0.0.1:`port` answers PING.
pub fn wait_ping(port: u16) {
    poll(
        &format!("127.0.0.1:{port} answers PING"),
        Duration::from_secs(10),
        || matches!(try_call(port, &[&b"PING"[..]]), Ok(Reply::Status(_))).then_some(()),
    )
}
