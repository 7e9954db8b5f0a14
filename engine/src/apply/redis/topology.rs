//! Which master serves each hash slot of a Redis Cluster: read with
//! `CLUSTER SLOTS`, corrected by `MOVED` hints, refreshed by one caller at
//! a time and at most once per [`REFRESH_EVERY`].
//!
//! Every slot has an *epoch* that goes up whenever the slot's owner
//! changes. A marker cached on a node's connection carries the epoch it was
//! cached under and is believed only while the epoch is the same, so an
//! entry cached before a slot left a node is never used after the slot came
//! back to it (A → B → A).
//!
//! `CLUSTER SLOTS` is deprecated since Redis 7.0 but still served; it is
//! what every Redis version since 3.0 answers (`CLUSTER SHARDS` is 7.0+).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::conn::Endpoint;
use crate::route::slot::SLOTS;
use crate::wire::reply::{escape, Reply};

/// The least time between two `CLUSTER SLOTS` fetches.
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// A node's address as the cluster names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct NodeAddr {
    pub(super) host: String,
    pub(super) port: u16,
}

impl NodeAddr {
    pub(super) fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }

    /// Parses `host:port` as a redirect names a node (an IPv6 host has
    /// colons: the port is after the last one). An empty host means the
    /// host of the node that answered, `here`.
    pub(super) fn parse(text: &str, here: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Self::new(if host.is_empty() { here } else { host }, port))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One entry of `CLUSTER SLOTS`: slots `start..=end` are served by `master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) master: NodeAddr,
}

/// Reads a `CLUSTER SLOTS` reply from the node at `asked`.
///
/// Each entry is `[start, end, [host, port, id, …], replica…]`. A host of
/// `""` or nil means "the host you asked" (Redis 7's preferred endpoint
/// when it is not known to the node); `?` means no endpoint is known at
/// all, and that range is left without an owner.
pub(super) fn parse_slots(reply: &Reply, asked: &NodeAddr) -> Result<Vec<Range>, String> {
    let entries = match reply {
        Reply::Array(Some(entries)) => entries,
        Reply::Error(e) => return Err(format!("CLUSTER SLOTS refused: {}", escape(e))),
        other => return Err(format!("CLUSTER SLOTS answered {other:?}")),
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for (n, entry) in entries.iter().enumerate() {
        let bad = |what: &str| format!("CLUSTER SLOTS entry {n}: {what}");
        let Reply::Array(Some(fields)) = entry else {
            return Err(bad("not an array"));
        };
        let slot = |i: usize| match fields.get(i) {
            Some(Reply::Int(s)) => u16::try_from(*s).ok().filter(|s| *s < SLOTS),
            _ => None,
        };
        let (Some(start), Some(end)) = (slot(0), slot(1)) else {
            return Err(bad("slot numbers missing or out of range"));
        };
        if start > end {
            return Err(bad("range ends before it starts"));
        }
        let Some(Reply::Array(Some(master))) = fields.get(2) else {
            return Err(bad("no master"));
        };
        let host = match master.first() {
            Some(Reply::Bulk(Some(h))) if h.is_empty() => asked.host.clone(),
            Some(Reply::Bulk(None)) => asked.host.clone(),
            Some(Reply::Bulk(Some(h))) if &h[..] == b"?" => continue,
            Some(Reply::Bulk(Some(h))) => String::from_utf8(h.to_vec())
                .map_err(|_| bad(&format!("host {} is not text", escape(h))))?,
            _ => return Err(bad("master host missing")),
        };
        let port = match master.get(1) {
            Some(Reply::Int(p)) => u16::try_from(*p).map_err(|_| bad("port out of range"))?,
            _ => return Err(bad("master port missing")),
        };
        ranges.push(Range {
            start,
            end,
            master: NodeAddr { host, port },
        });
    }
    Ok(ranges)
}

/// The slot map proper.
#[derive(Debug)]
struct SlotMap {
    /// Per slot, an index into `nodes`.
    owner: Vec<Option<usize>>,
    /// Per slot, see the module doc.
    epoch: Vec<u64>,
    /// Every node ever named (few; never shrinks).
    nodes: Vec<NodeAddr>,
    last_epoch: u64,
    loaded: bool,
}

impl SlotMap {
    fn new() -> Self {
        Self {
            owner: vec![None; usize::from(SLOTS)],
            epoch: vec![0; usize::from(SLOTS)],
            nodes: Vec::new(),
            last_epoch: 0,
            loaded: false,
        }
    }

    fn intern(&mut self, addr: &NodeAddr) -> usize {
        match self.nodes.iter().position(|n| n == addr) {
            Some(i) => i,
            None => {
                self.nodes.push(addr.clone());
                self.nodes.len() - 1
            }
        }
    }

    /// Installs a full map; returns how many slots changed owner.
    fn install(&mut self, ranges: &[Range]) -> usize {
        let mut owner = vec![None; usize::from(SLOTS)];
        for r in ranges {
            let i = self.intern(&r.master);
            owner[usize::from(r.start)..=usize::from(r.end)].fill(Some(i));
        }
        self.last_epoch += 1;
        let mut changed = 0;
        for (s, new) in owner.into_iter().enumerate() {
            if self.owner[s] != new {
                self.owner[s] = new;
                self.epoch[s] = self.last_epoch;
                changed += 1;
            }
        }
        self.loaded = true;
        changed
    }

    /// `slot` is served by `to` (a `MOVED` said so).
    fn moved(&mut self, slot: u16, to: &NodeAddr) {
        let i = self.intern(to);
        let s = usize::from(slot % SLOTS);
        if self.owner[s] != Some(i) {
            self.last_epoch += 1;
            self.owner[s] = Some(i);
            self.epoch[s] = self.last_epoch;
        }
    }

    fn owner(&self, slot: u16) -> Option<(NodeAddr, u64)> {
        let s = usize::from(slot % SLOTS);
        self.owner[s].map(|i| (self.nodes[i].clone(), self.epoch[s]))
    }

    fn masters(&self) -> Vec<NodeAddr> {
        let used: HashSet<usize> = self.owner.iter().flatten().copied().collect();
        let mut out: Vec<NodeAddr> = used.into_iter().map(|i| self.nodes[i].clone()).collect();
        out.sort();
        out
    }
}

/// The slot map of one cluster target, shared by all its runs.
#[derive(Debug)]
pub(super) struct Topology {
    /// The nodes of the target's URL list, asked when no known master
    /// answers.
    seeds: Vec<NodeAddr>,
    /// Credentials and timeouts for every node.
    template: Endpoint,
    map: Mutex<SlotMap>,
    /// Something (a connection error, `READONLY`) suggests the map is out
    /// of date: refresh before the next round.
    stale: AtomicBool,
    /// Fetches done (successful or not); callers pass the count they saw,
    /// so that of several callers only the first fetches.
    fetches: AtomicU64,
    /// Held by the one caller fetching; holds the time of the last fetch.
    gate: tokio::sync::Mutex<Option<Instant>>,
}

impl Topology {
    pub(super) fn new(seeds: Vec<NodeAddr>, template: Endpoint) -> Self {
        Self {
            seeds,
            template,
            map: Mutex::new(SlotMap::new()),
            stale: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(None),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, SlotMap> {
        // The map is replaced whole or changed one slot at a time: a
        // panic elsewhere cannot leave it half-written.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node serving `slot` and the slot's epoch; `None`: no node does
    /// (the map is not loaded, or the slot is not covered).
    pub(super) fn owner(&self, slot: u16) -> Option<(NodeAddr, u64)> {
        self.map().owner(slot)
    }

    /// The distinct nodes serving at least one slot, sorted.
    pub(super) fn masters(&self) -> Vec<NodeAddr> {
        self.map().masters()
    }

    /// How many slots no node serves.
    pub(super) fn uncovered(&self) -> usize {
        self.map().owner.iter().filter(|o| o.is_none()).count()
    }

    /// Takes a `MOVED <slot> <to>` as the new truth for that slot.
    pub(super) fn moved(&self, slot: u16, to: &NodeAddr) {
        self.map().moved(slot, to);
    }

    pub(super) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether the map should be fetched before it is used.
    pub(super) fn needs_refresh(&self) -> bool {
        self.stale.load(Ordering::Relaxed) || !self.map().loaded
    }

    /// The fetch count to pass to [`Topology::refresh`].
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Acquire)
    }

    /// Fetches the map unless another caller did since this one saw
    /// `seen` fetches (single flight), no sooner than [`REFRESH_EVERY`]
    /// after the last fetch. `prefer` is asked first (the node a `MOVED`
    /// named knows it owns the slot), then the known masters, then the
    /// seeds. Cancellation safe: a dropped fetch changes nothing.
    pub(super) async fn refresh(
        &self,
        seen: u64,
        prefer: Option<&NodeAddr>,
    ) -> Result<bool, String> {
        let mut last = self.gate.lock().await;
        if self.fetches() != seen {
            return Ok(false);
        }
        if let Some(at) = *last {
            tokio::time::sleep_until((at + REFRESH_EVERY).into()).await;
        }
        self.stale.store(false, Ordering::Relaxed);
        let fetched = self.fetch(prefer).await;
        *last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Release);
        match fetched {
            Ok(ranges) => {
                let changed = self.map().install(&ranges);
                if changed > 0 {
                    tracing::info!(
                        changed,
                        "Redis Cluster slot map: {changed} slots changed owner"
                    );
                }
                Ok(true)
            }
            Err(e) => {
                self.stale.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// `CLUSTER SLOTS` from `prefer` if it answers with a map, else from
    /// whichever of the known masters and the seeds answers first: they
    /// are asked at once, so a node that is down (a connect timeout) does
    /// not hold up the others.
    async fn fetch(&self, prefer: Option<&NodeAddr>) -> Result<Vec<Range>, String> {
        let mut errors = Vec::new();
        if let Some(node) = prefer {
            match self.slots_from(node).await {
                Ok(ranges) => return Ok(ranges),
                Err(e) => errors.push(format!("{node}: {e}")),
            }
        }
        let mut others: Vec<NodeAddr> = Vec::new();
        for node in self.masters().into_iter().chain(self.seeds.iter().cloned()) {
            if Some(&node) != prefer && !others.contains(&node) {
                others.push(node);
            }
        }
        let mut asking: FuturesUnordered<_> = others
            .iter()
            .map(|node| async move { (node, self.slots_from(node).await) })
            .collect();
        while let Some((node, answer)) = asking.next().await {
            match answer {
                Ok(ranges) => return Ok(ranges),
                Err(e) => errors.push(format!("{node}: {e}")),
            }
        }
        Err(format!("no node gave the slot map ({})", errors.join("; ")))
    }

    async fn slots_from(&self, node: &NodeAddr) -> Result<Vec<Range>, String> {
        let endpoint = self.template.at(&node.host, node.port);
        let mut conn = endpoint.connect().await.map_err(|e| e.to_string())?;
        let reply = conn
            .command(&[&b"CLUSTER"[..], b"SLOTS"])
            .await
            .map_err(|e| e.to_string())?;
        let ranges = parse_slots(&reply, node)?;
        if ranges.is_empty() {
            return Err("no slots assigned".into());
        }
        Ok(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    fn node(host: Reply, port: i64, id: &str) -> Reply {
        Reply::Array(Some(vec![
            host,
            Reply::Int(port),
            bulk(id),
            Reply::Array(Some(vec![])),
        ]))
    }

    fn entry(start: i64, end: i64, nodes: Vec<Reply>) -> Reply {
        let mut fields = vec![Reply::Int(start), Reply::Int(end)];
        fields.extend(nodes);
        Reply::Array(Some(fields))
    }

    fn here() -> NodeAddr {
        NodeAddr::new("10.0.0.9", 7000)
    }

    #[test]
    fn cluster_slots_as_redis_7_answers() {
        let reply = Reply::Array(Some(vec![
            entry(
                0,
                5460,
                vec![
                    node(bulk("127.0.0.1"), 30001, "a"),
                    node(bulk("127.0.0.1"), 30004, "d"),
                ],
            ),
            entry(5461, 10922, vec![node(bulk(""), 30002, "b")]),
            entry(10923, 16383, vec![node(Reply::Bulk(None), 30003, "c")]),
        ]));
        let ranges = parse_slots(&reply, &here()).expect("a map");
        assert_eq!(
            ranges,
            [
                Range {
                    start: 0,
                    end: 5460,
                    master: NodeAddr::new("127.0.0.1", 30001)
                },
                Range {
                    start: 5461,
                    end: 10922,
                    master: NodeAddr::new("10.0.0.9", 30002)
                },
                Range {
                    start: 10923,
                    end: 16383,
                    master: NodeAddr::new("10.0.0.9", 30003)
                },
            ]
        );
    }

    #[test]
    fn an_unknown_endpoint_leaves_its_range_unowned() {
        let reply = Reply::Array(Some(vec![
            entry(0, 10, vec![node(bulk("?"), 30001, "a")]),
            entry(11, 20, vec![node(bulk("h"), 30002, "b")]),
        ]));
        let ranges = parse_slots(&reply, &here()).expect("a map");
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].start, 11);
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        for bad in [
            Reply::Int(1),
            Reply::Error(Bytes::from_static(
                b"ERR This instance has cluster support disabled",
            )),
            Reply::Array(Some(vec![Reply::Int(3)])),
            Reply::Array(Some(vec![entry(0, 16384, vec![node(bulk("h"), 1, "a")])])),
            Reply::Array(Some(vec![entry(9, 3, vec![node(bulk("h"), 1, "a")])])),
            Reply::Array(Some(vec![entry(0, 3, vec![])])),
            Reply::Array(Some(vec![entry(0, 3, vec![node(bulk("h"), 70000, "a")])])),
            Reply::Array(Some(vec![entry(
                0,
                3,
                vec![node(Reply::Bulk(Some(Bytes::from_static(b"\xff"))), 1, "a")],
            )])),
        ] {
            assert!(parse_slots(&bad, &here()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redirect_addresses() {
        assert_eq!(
            NodeAddr::parse("127.0.0.1:6381", "x"),
            Some(NodeAddr::new("127.0.0.1", 6381))
        );
        assert_eq!(
            NodeAddr::parse("::1:6381", "x"),
            Some(NodeAddr::new("::1", 6381))
        );
        assert_eq!(
            NodeAddr::parse(":6381", "h"),
            Some(NodeAddr::new("h", 6381))
        );
        assert_eq!(NodeAddr::parse("h", "h"), None);
        assert_eq!(NodeAddr::parse("h:x", "h"), None);
        assert_eq!(NodeAddr::new("::1", 1).to_string(), "[::1]:1");
    }

    #[test]
    fn epochs_change_with_owners_only() {
        let a = NodeAddr::new("a", 1);
        let b = NodeAddr::new("b", 1);
        let mut map = SlotMap::new();
        let all = |n: &NodeAddr| {
            vec![Range {
                start: 0,
                end: SLOTS - 1,
                master: n.clone(),
            }]
        };
        assert_eq!(map.install(&all(&a)), usize::from(SLOTS));
        let (owner, e1) = map.owner(7).expect("owned");
        assert_eq!(owner, a);
        // The same map again: nothing changes.
        assert_eq!(map.install(&all(&a)), 0);
        assert_eq!(map.owner(7), Some((a.clone(), e1)));
        // A → B → A: the epoch is a new one, not the first one again.
        map.moved(7, &b);
        let (_, e2) = map.owner(7).expect("owned");
        assert_ne!(e1, e2);
        assert_eq!(map.owner(8), Some((a.clone(), e1)));
        map.install(&all(&a));
        let (owner, e3) = map.owner(7).expect("owned");
        assert_eq!(owner, a);
        assert!(e3 != e1 && e3 != e2);
        assert_eq!(map.masters(), [a]);
    }
}
