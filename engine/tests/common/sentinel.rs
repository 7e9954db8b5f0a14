//! A Sentinel-managed Redis for tests: a master, two replicas and three
//! sentinels on free loopback ports, each in a temp dir of its own.
//!
//! Needs `procs.rs` included beside it (`mod procs;` at the test's root).
//! `SentinelSet::start` returns once every sentinel names the master, sees
//! both replicas and knows the other two sentinels (so that a crashed
//! master is failed over: quorum 2). Setting `SYNCS_KEEP_LOGS=1` keeps the
//! temp dir with every process' log.

#![allow(dead_code)]

use std::time::Duration;

use syncs_engine::wire::reply::Reply;

use crate::procs::{call, info, info_field, poll, redis_server, text, try_call, Proc};

/// The master's name the sentinels monitor.
pub const MASTER: &str = "mymaster";

pub struct SentinelSet {
    /// The data servers: index 0 is the first master.
    pub data: Vec<Proc>,
    pub data_ports: Vec<u16>,
    pub sentinels: Vec<Proc>,
    pub sentinel_ports: Vec<u16>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        if std::env::var("SYNCS_KEEP_LOGS").as_deref() == Ok("1") {
            if let Some(dir) = self.dir.take() {
                eprintln!("logs kept in {}", dir.keep().display());
            }
        }
    }
}

impl SentinelSet {
    /// Starts the set, or `None` where redis-server is missing.
    pub fn start() -> Option<SentinelSet> {
        let exe = redis_server()?;
        let dir = tempfile::tempdir().expect("a temp dir");
        let ports = crate::procs::free_ports(6);
        let (data_ports, sentinel_ports) = (ports[..3].to_vec(), ports[3..].to_vec());
        let master = data_ports[0];
        let mut data = Vec::new();
        for (i, port) in data_ports.iter().enumerate() {
            let name = format!("data-{port}");
            let home = dir.path().join(&name);
            std::fs::create_dir(&home).expect("a data dir");
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica needing a full sync (after a failover) gets it
                // at once, not after the default 5 s gathering others.
                "--repl-diskless-sync-delay",
                "0",
                "--logfile",
                &home.join("redis.log").display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push("--dir".into());
            args.push(home.display().to_string());
            if i > 0 {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            data.push(Proc::spawn(&name, exe, &args));
        }
        for (server, port) in data.iter().zip(&data_ports) {
            crate::procs::wait_own_redis(server, *port);
        }
        poll(
            "both replicas are in sync with the master",
            Duration::from_secs(20),
            || {
                let ok = info_field(&info(master, "replication"), "connected_slaves") == Some("2")
                    && data_ports[1..].iter().all(|p| {
                        info_field(&info(*p, "replication"), "master_link_status") == Some("up")
                    });
                ok.then_some(())
            },
        );

        let mut sentinels = Vec::new();
        for port in &sentinel_ports {
            let name = format!("sentinel-{port}");
            let home = dir.path().join(&name);
            std::fs::create_dir(&home).expect("a sentinel dir");
            // Written per run: a sentinel rewrites its config file.
            let conf = home.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {0}\nlogfile {0}/sentinel.log\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    home.display()
                ),
            )
            .expect("a sentinel config");
            let args = vec![conf.display().to_string(), "--sentinel".to_owned()];
            sentinels.push(Proc::spawn(&name, exe, &args));
        }
        let set = SentinelSet {
            data,
            data_ports,
            sentinels,
            sentinel_ports,
            dir: Some(dir),
        };
        poll(
            "every sentinel names the master, sees 2 replicas and 2 other sentinels",
            Duration::from_secs(30),
            || {
                set.sentinel_ports
                    .iter()
                    .all(|s| {
                        named_master(*s) == Some(master)
                            && count(*s, "replicas") == Some(2)
                            && count(*s, "sentinels") == Some(2)
                    })
                    .then_some(())
            },
        );
        Some(set)
    }

    /// The sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The master now: the port every live sentinel names, once the server
    /// there says it is the master (waits for a failover to settle).
    pub fn master(&self, within: Duration) -> u16 {
        poll("the sentinels agree on a master", within, || {
            let named: Vec<Option<u16>> = self
                .sentinel_ports
                .iter()
                .map(|s| named_master(*s))
                .collect();
            let first = named.first().copied().flatten()?;
            let agreed = named.iter().all(|n| *n == Some(first));
            (agreed && role(first).as_deref() == Some("master")).then_some(first)
        })
    }

    /// The index in `data` of the server at `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.data_ports
            .iter()
            .position(|p| *p == port)
            .unwrap_or_else(|| panic!("no data server at {port}"))
    }

    /// Asks a sentinel for a failover now.
    pub fn failover(&self) {
        let reply = call(
            self.sentinel_ports[0],
            &[&b"SENTINEL"[..], b"FAILOVER", MASTER.as_bytes()],
        );
        assert!(
            matches!(reply, Reply::Status(_)),
            "SENTINEL FAILOVER: {reply:?}"
        );
    }
}

/// The port of the master the sentinel at `sentinel` names (`None`: it
/// does not answer or know).
pub fn named_master(sentinel: u16) -> Option<u16> {
    match try_call(
        sentinel,
        &[
            &b"SENTINEL"[..],
            b"get-master-addr-by-name",
            MASTER.as_bytes(),
        ],
    ) {
        Ok(Reply::Array(Some(parts))) if parts.len() == 2 => text(&parts[1])?.parse().ok(),
        _ => None,
    }
}

/// The first element of `ROLE` at `port`.
pub fn role(port: u16) -> Option<String> {
    match try_call(port, &[&b"ROLE"[..]]).ok()? {
        Reply::Array(Some(parts)) => parts.first().and_then(text),
        _ => None,
    }
}

/// How many `replicas` or `sentinels` of the master a sentinel lists.
fn count(sentinel: u16, what: &str) -> Option<usize> {
    match try_call(
        sentinel,
        &[&b"SENTINEL"[..], what.as_bytes(), MASTER.as_bytes()],
    ) {
        Ok(Reply::Array(Some(list))) => Some(list.len()),
        _ => None,
    }
}
