//! The Redis Cluster applier: a run becomes one MULTI/EXEC per hash slot,
//! each carrying that slot's marker, sent as one pipeline per master with
//! the masters in parallel; exactly once per slot
//! (docs/design/redis-cluster.md §2, §3).
//!
//! # A run
//!
//! 1. The items are grouped by the slot of their keys (`group.rs`); an
//!    item that has no slot of its own is refused with its reason.
//! 2. Each group goes to the master the slot map (`topology.rs`) names.
//!    Per master, the markers not cached are read (one `HMGET` per slot,
//!    one round trip); items at or below their slot's marker are skipped;
//!    each group is `MULTI <data> HSET <slot marker> <field> <last seq>
//!    EXEC`, and all of a master's groups plus `WAIT <replicas> <ms>` go as
//!    one pipeline.
//! 3. Each group's replies decide (design §2.5): `MOVED` updates the map,
//!    fetches it again and resends the group to the owner; `ASK` resends
//!    it once to the named node after `ASKING` (no map change, nothing
//!    cached); `TRYAGAIN` resends after a pause (25 → 400 ms, 2 s per run
//!    at most); `READONLY` drops the connection and fetches the map.
//!    Only the redirected groups go again; at most [`MAX_REDIRECT_ROUNDS`].
//! 4. `apply` returns `Ok` only when every group is committed **and** each
//!    master's WAIT saw `replicas` replicas (wait.rs): a shortfall is
//!    *unavailable*, so the acknowledgement stays held and the run is
//!    retried; the retry skips what is committed through the markers, and
//!    reports for those items the outcomes they had (a refusal inside EXEC
//!    stays a refusal).
//!
//! A group whose items were all skipped, on a marker that this connection
//! did not write and see confirmed, gets a *touch* (`HSET` of the same
//! value) so that WAIT covers it: a record is never acknowledged on the
//! word of a marker that may not have reached a replica.
//!
//! # Correct under cancellation, as the single-node applier
//!
//! Each master has `pool` connections; a stream always uses the same one.
//! A run checks it out for its whole time at that master and puts it back
//! only when every reply is read. A failed or dropped run drops the
//! connection and the markers cached on it, and leaves the connection's
//! `CLIENT ID` as the *fence* of that pool place, kept with its server
//! (address and `run_id`, fence.rs): the next connection to the node kills
//! the old one before anything else, unless the node restarted since (ids
//! are per process; a restarted node has no old connection).
//!
//! # Markers cached
//!
//! Per connection, `(stream, slot) → (value, epoch)`, only for values this
//! connection wrote and saw confirmed by WAIT. An entry is believed only
//! while the slot map still gives the slot to this node with the same
//! epoch, and never for a slot reached through `ASK`. In shared-streams
//! mode (NATS) nothing is cached: each group's marker is read under
//! `WATCH`, one group at a time per node, and an EXEC that finds it changed
//! is planned again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use syncs_dsl::Target as TargetDef;

use super::conn::{Conn, Endpoint};
use super::fence::{Fence, Server};
use super::group::{self, Group, Layout, Outcome, Redirect};
use super::regress::Confirmed;
use super::topology::{NodeAddr, Topology};
use super::wait::{Held, Marker, Verdict, Wait};
use super::{shared_streams, stream_field, RedisSettings, WATCH_RETRIES};
use crate::apply::{Applied, TargetError};
use crate::op::{Op, RedisOp};
use crate::stats;
use crate::wire::reply::Reply;

/// Rounds of redirects (`MOVED`, `ASK`, `READONLY`) within one run before
/// the target counts as unavailable (what redis-rs allows too).
pub const MAX_REDIRECT_ROUNDS: u32 = 16;
/// First and longest pause after a `TRYAGAIN`.
const TRYAGAIN_FIRST: Duration = Duration::from_millis(25);
const TRYAGAIN_MAX: Duration = Duration::from_millis(400);
/// Pauses after `TRYAGAIN` within one run, in all, before unavailable.
const TRYAGAIN_BUDGET: Duration = Duration::from_secs(2);

/// Counts since the target was built (the same events go to the metrics
/// named in `stats.rs`); for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub moved: u64,
    pub ask: u64,
    pub tryagain: u64,
    pub wait_shortfalls: u64,
    pub marker_regressions: u64,
    /// Slot map fetches.
    pub refreshes: u64,
    /// Connections killed (or found gone) before their place was reused.
    pub fences: u64,
    /// Groups planned again after their WATCHed marker changed (shared
    /// streams).
    pub conflicts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    moved: AtomicU64,
    ask: AtomicU64,
    tryagain: AtomicU64,
    wait_shortfalls: AtomicU64,
    marker_regressions: AtomicU64,
    refreshes: AtomicU64,
    fences: AtomicU64,
    conflicts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A Redis Cluster target.
#[derive(Debug)]
pub struct RedisClusterTarget {
    name: String,
    /// Connections per node.
    pool: usize,
    /// Which place of each node's pool a stream uses (the same on every
    /// node; assign.rs).
    assign: super::assign::Assign,
    /// `None`: `replicas` is 0.
    wait: Option<Wait>,
    /// Credentials and timeouts of every node (from the first seed URL).
    template: Endpoint,
    topology: Topology,
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    /// Per `(stream, slot)`, the highest marker this target saw confirmed:
    /// a lower one read later is a regression (design §2.6). Never used to
    /// skip anything.
    confirmed: Confirmed<(u64, u16)>,
    /// Per stream, the outcomes of a run that failed after some of its
    /// groups committed, for its retry: there those items are skipped, and
    /// a refusal inside EXEC (WRONGTYPE) must still be reported.
    held: Mutex<HashMap<u64, Held>>,
    counters: Counters,
}

#[derive(Debug)]
struct Node {
    addr: NodeAddr,
    /// `addr` as a metric label.
    label: String,
    endpoint: Endpoint,
    pool: Vec<tokio::sync::Mutex<Place>>,
}

/// One connection place of a node's pool.
#[derive(Debug, Default)]
struct Place {
    /// The connection, when no run has it and the last one ended cleanly.
    live: Option<Live>,
    /// The connection to kill before this place is used again: the one a
    /// run has checked out, or dropped with a request possibly in flight.
    /// Kept with its server (address and run id, fence.rs).
    fence: Option<Fence>,
}

#[derive(Debug)]
struct Live {
    conn: Conn,
    server: Arc<Server>,
    /// Markers this connection wrote and saw confirmed.
    markers: HashMap<(u64, u16), Cached>,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    value: u64,
    epoch: u64,
}

/// A group on its way to a node.
#[derive(Debug, Clone)]
struct Pending {
    group: Group,
    /// Reached through `ASK`: sent to this node after `ASKING`.
    ask: Option<NodeAddr>,
    /// The slot's epoch when the map gave it to the node (`None` with ASK).
    epoch: Option<u64>,
}

/// A node's run failed; `keep`: every reply was read, so the connection
/// is in a known state and goes back to its place.
struct Failure {
    error: TargetError,
    keep: bool,
}

/// What was sent for a group.
struct Sent {
    group: usize,
    layout: Layout,
    /// The marker value the group writes.
    value: u64,
    /// The items applied (not skipped), as indexes into the run.
    applied: Vec<usize>,
}

/// One node's share of a round: what became of each group, as far as
/// known (a group whose replies were not read has no outcome).
struct NodeRun {
    groups: Vec<Pending>,
    outcomes: Vec<Option<Outcome>>,
    /// Per group, the items its committed EXEC applied.
    applied: Vec<Vec<usize>>,
    /// Groups committed on this connection and the marker each wrote.
    committed: Vec<(usize, u64)>,
    /// The first reply that makes the node's run fail.
    trouble: Option<Failure>,
}

impl NodeRun {
    fn new(groups: Vec<Pending>) -> Self {
        let n = groups.len();
        Self {
            groups,
            outcomes: vec![None; n],
            applied: vec![Vec::new(); n],
            committed: Vec::new(),
            trouble: None,
        }
    }
}

impl RedisClusterTarget {
    /// A target over the cluster that `seeds` (redis:// URLs of some of its
    /// nodes; the first one's credentials serve every node) belong to.
    /// `settings.pool` is per node; `replicas` as given (a `redis-cluster`
    /// definition makes it 1 unless set: [`RedisClusterTarget::from_def`]).
    /// Connecting is lazy: this never waits on the cluster.
    pub fn new(name: &str, seeds: &[String], settings: RedisSettings) -> Result<Self, String> {
        if seeds.is_empty() {
            return Err("a Redis Cluster target needs at least one node URL".into());
        }
        if settings.replicas > 0 && settings.replica_timeout >= settings.timeout {
            return Err(format!(
                "replica_timeout ({:?}) must be shorter than timeout ({:?})",
                settings.replica_timeout, settings.timeout
            ));
        }
        let mut endpoints = Vec::with_capacity(seeds.len());
        let mut addrs = Vec::with_capacity(seeds.len());
        for url in seeds {
            let endpoint = Endpoint::parse(url, settings.connect_timeout, settings.timeout)
                .map_err(|e| format!("`{url}`: {e}"))?;
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| format!("`{url}`: bad Redis URL: {e}"))?;
            let ConnectionAddr::Tcp(host, port) = info.addr() else {
                return Err(format!("`{url}`: cluster nodes are reached over TCP"));
            };
            if info.redis_settings().db() != 0 {
                return Err(format!(
                    "`{url}`: a Redis Cluster has only db 0; remove the db number"
                ));
            }
            addrs.push(NodeAddr::new(host, *port));
            endpoints.push(endpoint);
        }
        let template = endpoints.swap_remove(0);
        Ok(Self {
            name: name.to_owned(),
            pool: settings.pool.max(1),
            assign: super::assign::Assign::new(settings.pool),
            wait: Wait::new(settings.replicas, settings.replica_timeout),
            topology: Topology::new(addrs, template.clone()),
            template,
            nodes: Mutex::new(HashMap::new()),
            confirmed: Confirmed::new(name),
            held: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        })
    }

    /// A `redis-cluster` target from its definition (its URL list and
    /// options).
    pub fn from_def(def: &TargetDef) -> Result<Self, String> {
        let seeds: Vec<String> = def.urls().into_iter().map(str::to_owned).collect();
        Self::new(&def.name, &seeds, RedisSettings::from_def(def))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts of redirects, pauses, shortfalls, regressions since start.
    pub fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            moved: get(&c.moved),
            ask: get(&c.ask),
            tryagain: get(&c.tryagain),
            wait_shortfalls: get(&c.wait_shortfalls),
            marker_regressions: get(&c.marker_regressions),
            refreshes: get(&c.refreshes),
            fences: get(&c.fences),
            conflicts: get(&c.conflicts),
        }
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError::unavailable(&self.name, reason)
    }

    fn broken(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError::suspect(&self.name, reason)
    }

    /// This target's marker field for `stream` (as the single-node
    /// applier's): `<stream id hex>:<target>`.
    fn field(&self, stream: u64) -> String {
        format!("{}:{}", stream_field(stream), self.name)
    }

    fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(nodes.entry(addr.clone()).or_insert_with(|| {
            Arc::new(Node {
                addr: addr.clone(),
                label: addr.to_string(),
                endpoint: self.template.at(&addr.host, addr.port),
                pool: (0..self.pool)
                    .map(|_| tokio::sync::Mutex::new(Place::default()))
                    .collect(),
            })
        }))
    }

    /// Fetches the slot map (single flight, at most once per 100 ms).
    async fn refresh(&self, seen: u64, prefer: Option<&NodeAddr>) -> Result<(), TargetError> {
        let outcome = match self.topology.refresh(seen, prefer).await {
            // Another run fetched the map meanwhile: nothing was fetched here.
            Ok(false) => return Ok(()),
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        };
        bump(&self.counters.refreshes);
        let label = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!(stats::SERVER_REDIS_TOPOLOGY_REFRESHES, "target" => self.name.clone(), "outcome" => label)
            .increment(1);
        outcome.map_err(|e| self.unavailable(e))
    }

    /// Whether the cluster answers: the slot map is fetched, every slot has
    /// a master, and every master answers PING on a connection of its own.
    pub async fn probe(&self) -> Result<(), TargetError> {
        self.refresh(self.topology.fetches(), None).await?;
        let uncovered = self.topology.uncovered();
        if uncovered > 0 {
            return Err(self.unavailable(format!("{uncovered} slots have no master")));
        }
        let pings = self.topology.masters().into_iter().map(|addr| async move {
            let endpoint = self.template.at(&addr.host, addr.port);
            let mut conn = endpoint
                .connect()
                .await
                .map_err(|e| self.unavailable(format!("{addr}: {e}")))?;
            match conn.command(&[&b"PING"[..]]).await {
                Ok(Reply::Status(_)) => Ok(()),
                Ok(other) => Err(self.unavailable(format!("{addr}: PING answered {other:?}"))),
                Err(e) => Err(self.unavailable(format!("{addr}: {e}"))),
            }
        });
        futures::future::join_all(pings)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Applies `items` (sequence, operation) of one stream: see the module
    /// doc. One [`Applied`] per item, in order.
    pub async fn apply(
        &self,
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Vec<Applied>, TargetError> {
        // A retry of a run that failed after some groups committed: their
        // items are skipped now, with the outcomes they had then.
        let kept = {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.get(&stream)
                .and_then(|h| h.outcomes(items))
                .map(<[Applied]>::to_vec)
        };
        let mut out = kept.unwrap_or_else(|| vec![Applied::Ok; items.len()]);
        let result = self.apply_groups(stream, items, &mut out).await;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                held.remove(&stream);
                Ok(out)
            }
            Err(e) => {
                held.insert(stream, Held::new(items, &out));
                Err(e)
            }
        }
    }

    /// The rounds of a run: groups to nodes, replies to outcomes in `out`,
    /// redirected groups again.
    async fn apply_groups(
        &self,
        stream: u64,
        items: &[(u64, &Op)],
        out: &mut [Applied],
    ) -> Result<(), TargetError> {
        let mut pending: Vec<Pending> = group::by_slot(items, out)
            .into_iter()
            .map(|group| Pending {
                group,
                ask: None,
                epoch: None,
            })
            .collect();
        let mut redirect_rounds = 0;
        let mut conflicts = 0;
        let mut pause = TRYAGAIN_FIRST;
        let mut paused = Duration::ZERO;
        // A `MOVED` names the node to ask for the map first.
        let mut moved_to: Option<NodeAddr> = None;
        let mut seen = self.topology.fetches();
        while !pending.is_empty() {
            if moved_to.is_some() || self.topology.needs_refresh() {
                let refreshed = self.refresh(seen, moved_to.as_ref()).await;
                // After a MOVED the hint is enough to go on with.
                if moved_to.take().is_none() {
                    refreshed?;
                }
            }
            seen = self.topology.fetches();
            let mut by_node: BTreeMap<NodeAddr, Vec<Pending>> = BTreeMap::new();
            for mut p in pending.drain(..) {
                let addr = match &p.ask {
                    Some(to) => to.clone(),
                    None => {
                        let (addr, epoch) = self.topology.owner(p.group.slot).ok_or_else(|| {
                            self.topology.mark_stale();
                            self.unavailable(format!(
                                "slot {} is not served by any node (the cluster lacks a master?)",
                                p.group.slot
                            ))
                        })?;
                        p.epoch = Some(epoch);
                        addr
                    }
                };
                by_node.entry(addr).or_default().push(p);
            }
            let runs = by_node
                .into_iter()
                .map(|(addr, groups)| self.run_node(addr, stream, items, groups));
            let mut failed: Option<TargetError> = None;
            let mut redirected = false;
            let mut tryagain = false;
            for (run, error) in futures::future::join_all(runs).await {
                if let Some(e) = error {
                    // Prefer a plain "unavailable" over a suspect one: a
                    // node that is down says more than a lost reply.
                    if failed.as_ref().is_none_or(|f| f.suspect && !e.suspect) {
                        failed = Some(e);
                    }
                }
                let known = run.groups.into_iter().zip(run.outcomes).zip(run.applied);
                for ((mut p, outcome), applied) in known {
                    let Some(outcome) = outcome else { continue };
                    match outcome {
                        Outcome::Committed(errors) => {
                            for i in applied {
                                out[i] = Applied::Ok;
                            }
                            for (i, errs) in errors {
                                out[i] = Applied::Refused(self.refusal(items, i, &errs));
                            }
                        }
                        Outcome::Redirect(Redirect::Moved { slot, to }) => {
                            self.topology.moved(slot, &to);
                            moved_to = Some(to);
                            p.ask = None;
                            redirected = true;
                            pending.push(p);
                        }
                        Outcome::Redirect(Redirect::Ask { to }) => {
                            p.ask = Some(to);
                            redirected = true;
                            pending.push(p);
                        }
                        Outcome::Redirect(Redirect::ReadOnly(_)) => {
                            p.ask = None;
                            redirected = true;
                            pending.push(p);
                        }
                        Outcome::Redirect(Redirect::TryAgain(_)) => {
                            p.ask = None;
                            tryagain = true;
                            pending.push(p);
                        }
                        Outcome::Refused(refused) => {
                            for (i, errs) in &refused {
                                let errs = errs.join("; ");
                                // A CROSSSLOT keeps its `cross_slot:` reason
                                // first: the dead-letter counter's label.
                                out[*i] = Applied::Refused(if errs.starts_with("cross_slot:") {
                                    errs
                                } else {
                                    format!("refused by Redis: {errs}")
                                });
                            }
                            p.group.items.retain(|i| !refused.contains_key(i));
                            if !p.group.items.is_empty() {
                                pending.push(p);
                            }
                        }
                        Outcome::Conflict => {
                            conflicts += 1;
                            bump(&self.counters.conflicts);
                            metrics::counter!(stats::SERVER_REDIS_MARKER_CONFLICTS, "target" => self.name.clone())
                                .increment(1);
                            pending.push(p);
                        }
                        // The node's run failed with these: `failed` is set.
                        Outcome::Unavailable(_) | Outcome::Broken(_) => pending.push(p),
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if redirected {
                redirect_rounds += 1;
                if redirect_rounds >= MAX_REDIRECT_ROUNDS && !pending.is_empty() {
                    return Err(self.unavailable(format!(
                        "still redirected after {MAX_REDIRECT_ROUNDS} rounds (slots {})",
                        slot_list(&pending)
                    )));
                }
            }
            if conflicts >= WATCH_RETRIES {
                return Err(self.unavailable(format!(
                    "slot markers changed under WATCH {WATCH_RETRIES} times in one run"
                )));
            }
            if tryagain && !redirected {
                if paused >= TRYAGAIN_BUDGET {
                    return Err(self.unavailable(format!(
                        "slots {} are being migrated: TRYAGAIN for {paused:?}",
                        slot_list(&pending)
                    )));
                }
                tokio::time::sleep(pause).await;
                paused += pause;
                pause = (pause * 2).min(TRYAGAIN_MAX);
            }
        }
        Ok(())
    }

    /// The reason an item refused inside EXEC gets.
    fn refusal(&self, items: &[(u64, &Op)], i: usize, errs: &[String]) -> String {
        let transaction = matches!(items.get(i), Some((_, Op::Redis(r))) if r.is_transaction());
        if transaction {
            format!(
                "transaction ran with errors (Redis does not roll back): {}",
                errs.join("; ")
            )
        } else {
            errs.join("; ")
        }
    }

    /// One node's share of a round, on the node's connection for `stream`:
    /// what became of its groups, and why it failed if it did.
    async fn run_node(
        &self,
        addr: NodeAddr,
        stream: u64,
        items: &[(u64, &Op)],
        groups: Vec<Pending>,
    ) -> (NodeRun, Option<TargetError>) {
        let mut run = NodeRun::new(groups);
        let node = self.node(&addr);
        let index = self.assign.slot(stream).min(node.pool.len() - 1);
        let mut place = node.pool[index].lock().await;
        let mut live = match place.live.take() {
            Some(live) => live,
            None => match self.connect(&node, &mut place.fence).await {
                Ok(live) => live,
                Err(e) => {
                    self.topology.mark_stale();
                    return (run, Some(e));
                }
            },
        };
        // Checked out: from here until it is put back, a failure or a
        // dropped future drops `live` and leaves the fence set.
        place.fence = live.conn.id().map(|id| Fence {
            id,
            server: Arc::clone(&live.server),
        });
        let (error, keep) = match self.run_on(&node, &mut live, stream, items, &mut run).await {
            Ok(()) => {
                let demoted = run
                    .outcomes
                    .iter()
                    .any(|o| matches!(o, Some(Outcome::Redirect(Redirect::ReadOnly(_)))));
                if demoted {
                    self.topology.mark_stale();
                }
                (None, !demoted)
            }
            Err(Failure { error, keep }) => {
                // Whatever failed (a lost connection, CLUSTERDOWN from a
                // node with an old view, a demoted master's WAIT), the map
                // is fetched again before the next round (at most once per
                // 100 ms, whoever asks).
                self.topology.mark_stale();
                (Some(error), keep)
            }
        };
        if keep {
            place.live = Some(live);
            place.fence = None;
        } else if live.conn.is_idle() {
            // Every request was answered: nothing of this connection waits
            // in the server, so there is nothing to kill.
            place.fence = None;
        }
        (run, error)
    }

    /// A new connection to `node`; first kills the one `fence` names
    /// (fence.rs: only where it can still be).
    async fn connect(&self, node: &Node, fence: &mut Option<Fence>) -> Result<Live, TargetError> {
        let unavailable =
            |e: &dyn std::fmt::Display| self.unavailable(format!("{}: {e}", node.addr));
        let mut conn = node.endpoint.connect().await.map_err(|e| unavailable(&e))?;
        let server = Server::identify(node.endpoint.clone(), &mut conn)
            .await
            .map_err(|e| unavailable(&format!("INFO server: {e}")))?;
        if conn.id().is_none() {
            tracing::warn!(target = %self.name, node = %node.addr, "CLIENT ID not answered: a run cut off mid-way cannot be fenced");
        }
        if let Some(old) = fence.as_ref() {
            let outcome = old
                .settle(&self.name, &server, &mut conn)
                .await
                .map_err(|e| unavailable(&format!("fencing the previous connection: {e}")))?;
            bump(&self.counters.fences);
            metrics::counter!(stats::SERVER_REDIS_FENCES, "target" => self.name.clone(), "outcome" => outcome.label())
                .increment(1);
            *fence = None;
        }
        Ok(Live {
            conn,
            server: Arc::new(server),
            markers: HashMap::new(),
        })
    }

    /// The marker of `p`'s slot cached on `live`, if it can be believed.
    fn cached(&self, live: &Live, stream: u64, p: &Pending) -> Option<Marker> {
        if shared_streams() || p.ask.is_some() {
            return None;
        }
        let epoch = p.epoch?;
        live.markers
            .get(&(stream, p.group.slot))
            .filter(|c| c.epoch == epoch)
            .map(|c| Marker {
                value: c.value,
                confirmed: true,
            })
    }

    /// A marker read from Redis: checked against the highest one confirmed.
    /// Not confirmed itself: nothing says a replica has the write behind
    /// it (unless WAIT is off).
    fn read(&self, stream: u64, slot: u16, value: u64) -> Marker {
        if self.confirmed.read((stream, slot), value, || {
            format!("stream {} in slot {slot}", stream_field(stream))
        }) {
            bump(&self.counters.marker_regressions);
        }
        Marker {
            value,
            confirmed: self.wait.is_none(),
        }
    }

    fn confirm(&self, stream: u64, slot: u16, value: u64) {
        self.confirmed.confirm((stream, slot), value);
    }

    /// The groups of one node: markers, then data, then WAIT. In
    /// shared-streams mode one group at a time, each under its own WATCH;
    /// else all together in two round trips (the markers not cached; the
    /// groups with WAIT after them).
    async fn run_on(
        &self,
        node: &Node,
        live: &mut Live,
        stream: u64,
        items: &[(u64, &Op)],
        run: &mut NodeRun,
    ) -> Result<(), Failure> {
        let shared = shared_streams();
        let batches: Vec<Vec<usize>> = if shared {
            (0..run.groups.len()).map(|k| vec![k]).collect()
        } else {
            vec![(0..run.groups.len()).collect()]
        };
        for batch in &batches {
            let markers = self.markers(node, live, stream, batch, run).await?;
            if run.trouble.as_ref().is_some_and(|t| !t.keep) {
                // A read answered nonsense: send nothing more on this
                // connection.
                break;
            }
            let (mut packed, sent) = self.plan(node, stream, items, &markers, run);
            if sent.is_empty() {
                continue;
            }
            let wait_now = self.wait.filter(|_| !shared);
            let mut n: usize = sent.iter().map(|s| s.layout.replies()).sum();
            if let Some(wait) = &wait_now {
                wait.encode(&mut packed);
                n += 1;
            }
            // An IO error or timeout from here leaves the outcome unknown:
            // the connection goes and its fence stays.
            let replies = live
                .conn
                .round_trip(&packed, n)
                .await
                .map_err(|e| Failure {
                    error: self.broken(format!("{}: {e}", node.addr)),
                    keep: false,
                })?;
            self.read_replies(node, &sent, &replies, run);
            if let Some(wait) = &wait_now {
                self.waited(node, live, stream, wait, replies.last(), run)?;
            }
        }
        if let Some(t) = run.trouble.take_if(|t| !t.keep) {
            return Err(t);
        }
        match self.wait {
            Some(wait) if shared && !run.committed.is_empty() => {
                let mut packed = Vec::new();
                wait.encode(&mut packed);
                let replies = live
                    .conn
                    .round_trip(&packed, 1)
                    .await
                    .map_err(|e| Failure {
                        error: self.broken(format!("{}: WAIT: {e}", node.addr)),
                        keep: false,
                    })?;
                self.waited(node, live, stream, &wait, replies.last(), run)?;
            }
            Some(_) => {}
            None => {
                for &(k, value) in &run.committed {
                    self.remember(live, stream, &run.groups[k], value);
                }
            }
        }
        match run.trouble.take() {
            Some(t) => Err(t),
            None => Ok(()),
        }
    }

    /// A confirmed marker goes into the regression guard and the
    /// connection's cache (unless the slot was reached through ASK).
    fn remember(&self, live: &mut Live, stream: u64, p: &Pending, value: u64) {
        self.confirm(stream, p.group.slot, value);
        match p.epoch.filter(|_| p.ask.is_none() && !shared_streams()) {
            Some(epoch) => {
                live.markers
                    .insert((stream, p.group.slot), Cached { value, epoch });
            }
            None => {
                live.markers.remove(&(stream, p.group.slot));
            }
        }
    }

    /// WAIT's answer for the groups committed on this connection.
    fn waited(
        &self,
        node: &Node,
        live: &mut Live,
        stream: u64,
        wait: &Wait,
        reply: Option<&Reply>,
        run: &NodeRun,
    ) -> Result<(), Failure> {
        if run.committed.is_empty() {
            // Nothing of this run was written here (all redirected): what
            // WAIT says (a demoted master refuses it) concerns no group.
            return Ok(());
        }
        let verdict = reply.map_or(Verdict::Nonsense("no WAIT reply".into()), |r| wait.judge(r));
        let failure = match verdict {
            Verdict::Confirmed => {
                for &(k, value) in &run.committed {
                    self.remember(live, stream, &run.groups[k], value);
                }
                return Ok(());
            }
            Verdict::Shortfall(acked) => {
                bump(&self.counters.wait_shortfalls);
                metrics::counter!(stats::SERVER_REDIS_WAIT_SHORTFALLS, "target" => self.name.clone())
                    .increment(1);
                Failure {
                    error: self.unavailable(format!("{}: {}", node.addr, wait.shortfall(acked))),
                    keep: true,
                }
            }
            // "WAIT cannot be used with replica instances": demoted.
            Verdict::Refused(e) => Failure {
                error: self.unavailable(format!("{}: WAIT refused: {e}", node.addr)),
                keep: false,
            },
            Verdict::Nonsense(e) => Failure {
                error: self.broken(format!("{}: {e}", node.addr)),
                keep: false,
            },
        };
        // Committed, not confirmed: the retry skips these records and
        // touches the markers to wait again.
        for &(k, _) in &run.committed {
            live.markers.remove(&(stream, run.groups[k].group.slot));
        }
        Err(failure)
    }

    /// The markers of `batch`'s groups: from the cache where it can be
    /// believed, else read in one round trip (under WATCH in shared-streams
    /// mode). A group whose read was redirected gets that outcome instead.
    async fn markers(
        &self,
        node: &Node,
        live: &mut Live,
        stream: u64,
        batch: &[usize],
        run: &mut NodeRun,
    ) -> Result<Vec<(usize, Marker)>, Failure> {
        let field = self.field(stream);
        let mut markers = Vec::with_capacity(batch.len());
        let mut packed = Vec::new();
        let mut reads: Vec<(usize, Layout)> = Vec::new();
        for &k in batch {
            let p = &run.groups[k];
            match self.cached(live, stream, p) {
                Some(m) => markers.push((k, m)),
                None => {
                    let layout = group::encode_read(
                        &mut packed,
                        p.group.slot,
                        &field,
                        p.ask.is_some(),
                        shared_streams(),
                    );
                    reads.push((k, layout));
                }
            }
        }
        if reads.is_empty() {
            return Ok(markers);
        }
        let n = reads.iter().map(|(_, l)| l.replies()).sum();
        // Nothing is written by a read: a failure here is no suspect.
        let replies = live
            .conn
            .round_trip(&packed, n)
            .await
            .map_err(|e| Failure {
                error: self.unavailable(format!("{}: reading markers: {e}", node.addr)),
                keep: false,
            })?;
        let mut at = 0;
        for (k, layout) in &reads {
            let end = at + layout.replies();
            match group::read_marker(layout, &replies[at..end], &node.addr) {
                Ok(v) => markers.push((*k, self.read(stream, run.groups[*k].group.slot, v))),
                Err(o) => self.settle(node, run, *k, o),
            }
            at = end;
        }
        Ok(markers)
    }

    /// Skips what each group's marker covers and encodes the rest (or a
    /// touch); returns the pipeline and what is in it.
    fn plan(
        &self,
        node: &Node,
        stream: u64,
        items: &[(u64, &Op)],
        markers: &[(usize, Marker)],
        run: &mut NodeRun,
    ) -> (Vec<u8>, Vec<Sent>) {
        let field = self.field(stream);
        let mut packed = Vec::new();
        let mut sent = Vec::new();
        let mut skipped = 0u64;
        for &(k, marker) in markers {
            let p = &run.groups[k];
            let mut active: Vec<(usize, &RedisOp)> = Vec::new();
            let mut last = None;
            for &i in &p.group.items {
                match items.get(i) {
                    Some((seq, _)) if *seq <= marker.value => skipped += 1,
                    Some((seq, Op::Redis(r))) => {
                        active.push((i, r));
                        last = Some(*seq);
                    }
                    _ => {}
                }
            }
            let value = match last {
                Some(v) => v,
                // All skipped: nothing to do if the marker is known to be
                // safe, else a touch so that WAIT covers it.
                None if marker.confirmed => {
                    run.outcomes[k] = Some(Outcome::Committed(BTreeMap::new()));
                    continue;
                }
                None => marker.value,
            };
            let layout = group::encode_group(
                &mut packed,
                p.group.slot,
                &active,
                &field,
                value,
                p.ask.is_some(),
            );
            sent.push(Sent {
                group: k,
                layout,
                value,
                applied: active.iter().map(|(i, _)| *i).collect(),
            });
        }
        if skipped > 0 {
            metrics::counter!(stats::SERVER_REDIS_ALREADY_APPLIED, "target" => self.name.clone())
                .increment(skipped);
            tracing::info!(target = %self.name, node = %node.addr, skipped, "skipped records this target had already applied");
        }
        (packed, sent)
    }

    /// The replies of the groups `sent`, in order.
    fn read_replies(&self, node: &Node, sent: &[Sent], replies: &[Reply], run: &mut NodeRun) {
        let mut at = 0;
        let mut applied = 0u64;
        for s in sent {
            let end = at + s.layout.replies();
            let outcome = match replies.get(at..end) {
                Some(r) => group::read_group(&s.layout, r, &node.addr),
                None => Outcome::Broken("fewer replies than commands".into()),
            };
            at = end;
            if let Outcome::Committed(errors) = &outcome {
                run.committed.push((s.group, s.value));
                applied += s.applied.len().saturating_sub(errors.len()) as u64;
                run.applied[s.group].clone_from(&s.applied);
            }
            self.settle(node, run, s.group, outcome);
        }
        if applied > 0 {
            metrics::counter!(stats::SERVER_REDIS_CLUSTER_APPLIED, "target" => self.name.clone(), "node" => node.label.clone())
                .increment(applied);
        }
    }

    /// Records group `k`'s outcome, counting redirects and keeping the
    /// first failure.
    fn settle(&self, node: &Node, run: &mut NodeRun, k: usize, outcome: Outcome) {
        match &outcome {
            Outcome::Redirect(Redirect::Moved { .. }) => {
                self.redirected(node, "moved", &self.counters.moved)
            }
            Outcome::Redirect(Redirect::Ask { .. }) => {
                self.redirected(node, "ask", &self.counters.ask)
            }
            Outcome::Redirect(Redirect::TryAgain(_)) => {
                bump(&self.counters.tryagain);
                metrics::counter!(stats::SERVER_REDIS_TRYAGAIN, "target" => self.name.clone(), "node" => node.label.clone())
                    .increment(1);
            }
            Outcome::Redirect(Redirect::ReadOnly(why)) => {
                tracing::warn!(target = %self.name, node = %node.addr, "{why}: the node was demoted; fetching the slot map");
            }
            Outcome::Unavailable(why) => {
                if run.trouble.is_none() {
                    run.trouble = Some(Failure {
                        error: self.unavailable(format!("{}: {why}", node.addr)),
                        keep: true,
                    });
                }
            }
            Outcome::Broken(why) => {
                // Worse than unavailable: the connection goes.
                if run.trouble.as_ref().is_none_or(|f| f.keep) {
                    run.trouble = Some(Failure {
                        error: self.broken(format!("{}: {why}", node.addr)),
                        keep: false,
                    });
                }
            }
            Outcome::Committed(_) | Outcome::Refused(_) | Outcome::Conflict => {}
        }
        run.outcomes[k] = Some(outcome);
    }

    fn redirected(&self, node: &Node, kind: &'static str, counter: &AtomicU64) {
        bump(counter);
        metrics::counter!(stats::SERVER_REDIS_REDIRECTS, "target" => self.name.clone(), "node" => node.label.clone(), "kind" => kind)
            .increment(1);
    }
}

/// The slots of `pending`, for messages.
fn slot_list(pending: &[Pending]) -> String {
    let mut slots: Vec<u16> = pending.iter().map(|p| p.group.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    let mut shown: Vec<String> = slots.iter().take(8).map(u16::to_string).collect();
    if slots.len() > 8 {
        shown.push(format!("and {} more", slots.len() - 8));
    }
    shown.join(", ")
}
