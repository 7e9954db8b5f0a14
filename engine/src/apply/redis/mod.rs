//! The Redis applier: one MULTI/EXEC per run of operations, exactly once.
//!
//! A run of a stream's operations goes as one pipeline: `MULTI`, each
//! operation's commands (with a `SELECT` only where the db changes; a
//! transaction's commands simply sit inside the one MULTI), then
//! `HSET syncs:applied <stream>:<target> <last sequence>` in db 0, then `EXEC`. The
//! data and the stream's marker commit together, so after a crash at any
//! point the marker says exactly what was applied, and records at or below
//! it are skipped when they are delivered again: no gap, no duplicate.
//!
//! Plain `SET key value` commands that follow each other go as one `MSET`
//! (merge.rs; the `merge_sets` option, on by default).
//!
//! A command Redis refuses at run time (WRONGTYPE) fails alone and is
//! reported for its operation; one refused while queueing (wrong arity)
//! aborts the EXEC, so it is taken out and the rest sent again. A db number
//! is tried alone once per connection before use, so a `SELECT` that fails
//! can never send commands into another db.
//!
//! # Correct under cancellation, by construction
//!
//! A connection and the markers cached on it are *checked out* of their
//! slot for the whole of a run and put back only when the run's replies
//! are all read. A run that fails, or whose future is dropped at any
//! `.await`, drops the connection and its cache with it: nothing it might
//! have changed is ever believed. Before anything else, the next connection
//! of the slot kills the dropped one by its `CLIENT ID` (the *fence*): Redis
//! runs commands one at a time, so once `CLIENT KILL` has answered, an EXEC
//! still queued on the old connection has either run already (the marker
//! read next shows it) or never will. The fence holds the server's address
//! and run id with the client id (fence.rs): an id means nothing on another
//! server.
//!
//! # Replicas: WAIT
//!
//! With `replicas` > 0 each run's EXEC is followed, in the same round trip,
//! by `WAIT <replicas> <replica_timeout>`; a run counts as applied only when
//! enough replicas have it (wait.rs). A shortfall leaves the data committed
//! but the run unavailable: its retry skips the records, touches the marker
//! and waits again.
//!
//! # Where the server is
//!
//! A target names one server (a URL) or a master by its sentinels
//! (sentinel.rs). Every new connection asks the sentinels afresh, and
//! anything that may mean a failover drops the connection.

mod ahead;
mod assign;
mod cluster;
mod conn;
mod fence;
mod group;
mod merge;
mod regress;
mod sentinel;
mod topology;
mod wait;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use syncs_dsl::{Target as TargetDef, TargetKind, TargetOptions};
use tokio::sync::Mutex;

use self::ahead::Ahead;
pub use self::cluster::{ClusterStats, RedisClusterTarget};
use self::conn::{Conn, Endpoint};
use self::fence::{Fence, Server};
use self::regress::Confirmed;
use self::sentinel::Resolver;
use self::wait::{Held, Marker, Verdict, Wait};
use super::{Applied, Run, RunId, TargetError};
use crate::op::{Op, RedisOp};
use crate::stats;
use crate::wire::reply::{error_code, escape, ExecReply, Reply};
use crate::wire::resp::encode_command;

/// Error codes that say "not now" rather than "never": retried.
const TRANSIENT: [&[u8]; 8] = [
    b"LOADING",
    b"BUSY",
    b"TRYAGAIN",
    b"MASTERDOWN",
    b"CLUSTERDOWN",
    b"READONLY",
    b"NOREPLICAS",
    b"OOM",
];

/// How a Redis target connects and what it waits for. The DSL's options
/// map onto it ([`RedisSettings::from_def`]); the defaults are those of
/// a plain `redis` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Connections (at least 1), opened as streams first need them: a
    /// stream always uses the same one. Default [`default_pool`].
    pub pool: usize,
    pub connect_timeout: Duration,
    /// For a whole round trip, WAIT included: longer than `replica_timeout`.
    pub timeout: Duration,
    /// Replicas that must have each run before it counts as applied (0:
    /// no WAIT, the default for plain `redis`).
    pub replicas: u32,
    /// How long WAIT waits for them.
    pub replica_timeout: Duration,
    /// Plain `SET`s that follow each other go as one `MSET` (merge.rs).
    /// Default true; not used by `redis-cluster` targets.
    pub merge_sets: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            pool: default_pool(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            replicas: 0,
            replica_timeout: Duration::from_secs(1),
            merge_sets: true,
        }
    }
}

impl RedisSettings {
    /// From a target's definition; what its options leave out has its
    /// default, which for `replicas` depends on the kind (1 for
    /// `redis-cluster` and `redis-sentinel`, 0 for `redis`).
    pub fn from_def(def: &TargetDef) -> Self {
        let default = Self::default();
        let options = &def.options;
        Self {
            pool: options.pool.map_or(default.pool, |p| (p as usize).max(1)),
            connect_timeout: options.connect_timeout.unwrap_or(default.connect_timeout),
            timeout: options
                .timeout
                .unwrap_or(TargetOptions::DEFAULT_REDIS_TIMEOUT),
            replicas: def.replicas(),
            replica_timeout: def.replica_timeout(),
            merge_sets: def.merge_sets(),
        }
    }
}

/// Where a Redis target's server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisSource {
    /// One server, by URL (`redis://user:pass@host:port`, `unix://...`).
    Url(String),
    /// The master a set of sentinels names.
    Sentinel(SentinelSource),
}

/// A `redis-sentinel` target's sentinels and master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSource {
    /// The sentinels' URLs, in the order to ask them. The first one's user
    /// and password are the data nodes' too, and the sentinels' unless
    /// `sentinel_password` is given.
    pub sentinels: Vec<String>,
    /// The master's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// The sentinels' own credentials, used when `sentinel_password` is
    /// given (a user without a password is refused).
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
}

#[derive(Debug)]
pub struct RedisTarget {
    name: String,
    source: Source,
    /// `None`: `replicas` is 0.
    wait: Option<Wait>,
    /// `pool` connections; a stream always uses the same one, so its runs
    /// stay in order while different streams proceed in parallel.
    slots: Vec<Mutex<Slot>>,
    /// Which slot each stream uses (assign.rs).
    assign: assign::Assign,
    /// Per stream, the highest marker a run was confirmed with: a lower one
    /// read later (after a failover) is a regression, logged and counted.
    confirmed: Confirmed<u64>,
    /// `merge_sets`, turned off for good once the target refuses an `MSET`.
    merge_sets: AtomicBool,
}

/// How a new connection finds its server.
#[derive(Debug)]
enum Source {
    Fixed(Endpoint),
    Sentinel(Resolver),
}

impl Source {
    fn new(source: RedisSource, settings: &RedisSettings) -> Result<Self, String> {
        let parse = |url: &str| Endpoint::parse(url, settings.connect_timeout, settings.timeout);
        match source {
            RedisSource::Url(url) => parse(&url).map(Source::Fixed),
            RedisSource::Sentinel(s) => {
                let Some(first) = s.sentinels.first() else {
                    return Err("a sentinel target needs at least one sentinel URL".into());
                };
                let data = parse(first).map_err(|e| format!("sentinel URL `{first}`: {e}"))?;
                // A sentinel answers at once or not at all: it gets
                // `connect_timeout` for its reply too.
                let wait = settings.connect_timeout;
                let mut sentinels = Vec::with_capacity(s.sentinels.len());
                for url in &s.sentinels {
                    let endpoint = parse(url)
                        .map_err(|e| format!("sentinel URL `{url}`: {e}"))?
                        .with_timeouts(wait, wait);
                    sentinels.push(match &s.sentinel_password {
                        Some(password) => endpoint
                            .with_credentials(s.sentinel_user.clone(), Some(password.clone())),
                        None if s.sentinel_user.is_some() => {
                            return Err("sentinel_user needs sentinel_password".into())
                        }
                        None => endpoint,
                    });
                }
                Resolver::new(sentinels, s.master, data).map(Source::Sentinel)
            }
        }
    }

    /// A connection to the server (the master, for sentinels), and where
    /// it goes.
    async fn connect(&self) -> Result<(Endpoint, Conn), String> {
        match self {
            Source::Fixed(endpoint) => match endpoint.connect().await {
                Ok(conn) => Ok((endpoint.clone(), conn)),
                Err(e) => Err(e.to_string()),
            },
            Source::Sentinel(resolver) => resolver.connect().await,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// The connection, when no run has it checked out and the last one
    /// finished cleanly.
    live: Option<Live>,
    /// This slot's connection while it is checked out, and after it was
    /// dropped with a request possibly in flight: the next connection kills
    /// it before sending anything.
    fence: Option<Fence>,
    /// Per stream, the outcomes of a run committed whose WAIT fell short,
    /// for its retry.
    held: HashMap<u64, Held>,
}

#[derive(Debug)]
struct Live {
    conn: Conn,
    server: Arc<Server>,
    good_dbs: HashSet<u32>,
    /// Last applied sequence per stream, as read from / written to the target.
    markers: HashMap<u64, Marker>,
    /// The last run's request, kept for the next one's: a fresh megabyte
    /// per run was allocated and first touched while the target waited.
    packed: Vec<u8>,
    /// The run sent ahead, queued in a MULTI not executed yet.
    ahead: Option<Ahead>,
}

impl Live {
    /// Whether `run` of `stream`, sent ahead as starting at `first`, can be
    /// planned without a question to the target (which would be queued
    /// in the open MULTI): its marker is known here and below `first`,
    /// and every db it uses was tried on this connection.
    fn knows(&self, stream: u64, first: u64, run: &[(u64, &Op)]) -> bool {
        !shared_streams()
            && self.markers.get(&stream).is_some_and(|m| m.value < first)
            && self.tried_dbs(run)
    }

    /// Whether every db of `run`'s Redis operations was tried on this
    /// connection (and found good). A run's operations mostly share one
    /// db: each is looked up where it changes (a lookup per operation was
    /// ~110 instructions per record).
    fn tried_dbs(&self, run: &[(u64, &Op)]) -> bool {
        let mut previous = None;
        run.iter().all(|(_, op)| match op {
            Op::Redis(r) if previous == Some(r.db) => true,
            Op::Redis(r) => {
                previous = Some(r.db);
                self.good_dbs.contains(&r.db)
            }
            Op::Mongo(_) => true,
        })
    }
}

/// A run's request buffer is kept for the next run up to this capacity
/// (a run of large records gives its memory back).
const KEEP_PACKED: usize = 4 << 20;

/// What each queued command in the MULTI is.
#[derive(Debug)]
enum Part {
    Select,
    /// A command of the item at this index.
    Command(usize),
    /// An `MSET` of plain `SET`s of these items (merge.rs).
    Merged(Vec<usize>),
    Marker,
}

/// The hash, in db [`MARKER_DB`] of each Redis target, that holds the last
/// applied sequence of every stream (field: the stream id in 16 hex digits,
/// `:`, the target's name).
pub const APPLIED_KEY: &str = "syncs:applied";
/// The db holding [`APPLIED_KEY`].
pub const MARKER_DB: u32 = 0;

/// Whether several servers may apply the same stream (the NATS transport:
/// a partition changes hands when a server dies). Then the marker is never
/// taken from the cache: it is read under `WATCH syncs:applied` before each
/// run, and a run whose EXEC finds the hash changed by another server is
/// aborted by Redis and planned again from the new marker. Exactly once
/// holds even while two servers briefly both believe they own a stream.
static SHARED_STREAMS: AtomicBool = AtomicBool::new(false);

/// Turns on shared-streams mode (`SHARED_STREAMS`) for this process (the NATS server mode).
pub fn set_shared_streams(on: bool) {
    SHARED_STREAMS.store(on, Ordering::Relaxed);
}

fn shared_streams() -> bool {
    SHARED_STREAMS.load(Ordering::Relaxed)
}

/// A Redis target's `pool` when its options leave it out, outside the
/// shared-streams mode: four streams (four proxies) apply in parallel,
/// each on a connection of its own. The connections open as streams first
/// use them, so one proxy costs one connection.
pub const DEFAULT_POOL: usize = 4;

/// [`DEFAULT_POOL`], but 1 in shared-streams mode: there every run WATCHes
/// the one marker hash, so two connections of one server would abort each
/// other's runs. [`set_shared_streams`] must come before the targets are
/// built.
pub fn default_pool() -> usize {
    if shared_streams() {
        1
    } else {
        DEFAULT_POOL
    }
}

/// Runs planned again after another server changed the marker hash between
/// our WATCH and EXEC, before the target counts as unavailable.
const WATCH_RETRIES: u32 = 64;

/// The marker field a stream had before each target had its own (read
/// once as a starting point when the target's own field is absent).
fn stream_field(stream: u64) -> String {
    format!("{stream:016x}")
}

fn is_transient(line: &[u8]) -> bool {
    TRANSIENT.contains(&error_code(line))
}

/// Appends `SELECT <db>`.
fn select(packed: &mut Vec<u8>, db: u32) {
    encode_command(packed, &[&b"SELECT"[..], db.to_string().as_bytes()]);
}

impl RedisTarget {
    /// A `redis` or `redis-sentinel` target from its definition.
    pub fn new(def: &TargetDef) -> Result<Self, String> {
        let source = match def.kind {
            TargetKind::RedisSentinel => RedisSource::Sentinel(SentinelSource {
                sentinels: def.urls().into_iter().map(str::to_owned).collect(),
                master: def
                    .sentinel_master()
                    .ok_or_else(|| format!("redis-sentinel target `{}` has no `master`", def.name))?
                    .to_owned(),
                sentinel_user: def.options.sentinel_user.clone(),
                sentinel_password: def.options.sentinel_password.clone(),
            }),
            _ => RedisSource::Url(def.url.clone()),
        };
        Self::with_settings(&def.name, source, RedisSettings::from_def(def))
    }

    /// A target named `name` at `source`. Refuses a `replica_timeout` not
    /// shorter than `timeout` (the round trip that carries WAIT would time
    /// out first).
    pub fn with_settings(
        name: &str,
        source: RedisSource,
        settings: RedisSettings,
    ) -> Result<Self, String> {
        if settings.replicas > 0 && settings.replica_timeout >= settings.timeout {
            return Err(format!(
                "replica_timeout ({:?}) must be shorter than timeout ({:?})",
                settings.replica_timeout, settings.timeout
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            source: Source::new(source, &settings)?,
            wait: Wait::new(settings.replicas, settings.replica_timeout),
            slots: (0..settings.pool.max(1))
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            assign: assign::Assign::new(settings.pool),
            confirmed: Confirmed::new(name),
            merge_sets: AtomicBool::new(settings.merge_sets),
        })
    }

    /// This target's marker field for `stream`: `<stream id hex>:<target>`,
    /// so that two targets on one Redis (two dbs, say) keep apart where
    /// each stands.
    fn marker_field(&self, stream: u64) -> String {
        format!("{}:{}", stream_field(stream), self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The target cannot take runs now; nothing says the run is at fault.
    fn unavailable(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError::unavailable(&self.name, reason)
    }

    /// The run was sent and its outcome is unknown: the connection failed
    /// or the reply made no sense. The run itself may be the cause.
    fn broken(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError::suspect(&self.name, reason)
    }

    /// Whether the server answers at all, on a connection of its own (to
    /// the master, for sentinels).
    pub async fn probe(&self) -> Result<(), TargetError> {
        let (_, mut conn) = self
            .source
            .connect()
            .await
            .map_err(|e| self.unavailable(e))?;
        match conn.command(&[&b"PING"[..]]).await {
            Ok(Reply::Status(_)) => Ok(()),
            Ok(other) => Err(self.unavailable(format!("PING answered {other:?}"))),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    /// See [`super::Target::apply_then`].
    pub async fn apply_then(
        &self,
        stream: u64,
        run: Run<'_>,
        next: Option<Run<'_>>,
    ) -> Result<Vec<Applied>, TargetError> {
        let index = self.assign.slot(stream).min(self.slots.len() - 1);
        let mut guard = self.slots[index].lock().await;
        let slot = &mut *guard;
        let mut live = match slot.live.take() {
            Some(live) => live,
            None => self.connect(&mut slot.fence).await?,
        };
        // Checked out: from here until it is put back, a failure or a
        // dropped future drops `live` (the socket and the cached markers),
        // and the fence stays set for the next connection.
        slot.fence = live.conn.id().map(|id| Fence {
            id,
            server: Arc::clone(&live.server),
        });
        let result = self
            .apply_checked_out(&mut live, &mut slot.held, stream, run, next)
            .await;
        match result {
            Ok(_) => {
                slot.live = Some(live);
                slot.fence = None;
            }
            // Every request was answered: nothing of this connection waits
            // in the server, so there is nothing to kill. The connection
            // goes all the same (for a sentinel target, the next one asks
            // where the master is).
            Err(_) if live.conn.is_idle() => slot.fence = None,
            Err(_) => {}
        }
        result
    }

    /// A new connection; first kills the one `fence` names, if any.
    async fn connect(&self, fence: &mut Option<Fence>) -> Result<Live, TargetError> {
        let (endpoint, mut conn) = self
            .source
            .connect()
            .await
            .map_err(|e| self.unavailable(e))?;
        let server = Server::identify(endpoint, &mut conn)
            .await
            .map_err(|e| self.unavailable(format!("INFO server: {e}")))?;
        if conn.id().is_none() {
            tracing::warn!(target = %self.name, "CLIENT ID not answered: a run cut off mid-way cannot be fenced (Redis 5 or later and the CLIENT command are needed for exactly once after timeouts)");
        }
        if let Some(old) = fence.as_ref() {
            let outcome = old
                .settle(&self.name, &server, &mut conn)
                .await
                .map_err(|e| self.unavailable(format!("fencing the previous connection: {e}")))?;
            metrics::counter!(stats::SERVER_REDIS_FENCES, "target" => self.name.clone(), "outcome" => outcome.label())
                .increment(1);
            *fence = None;
        }
        Ok(Live {
            conn,
            server: Arc::new(server),
            good_dbs: HashSet::new(),
            markers: HashMap::new(),
            packed: Vec::new(),
            ahead: None,
        })
    }

    async fn apply_checked_out(
        &self,
        live: &mut Live,
        held: &mut HashMap<u64, Held>,
        stream: u64,
        run: Run<'_>,
        next: Option<Run<'_>>,
    ) -> Result<Vec<Applied>, TargetError> {
        let mut conflicts = 0;
        loop {
            if let Some(out) = self.apply_on(live, held, stream, run, next).await? {
                return Ok(out);
            }
            conflicts += 1;
            metrics::counter!(stats::SERVER_REDIS_MARKER_CONFLICTS, "target" => self.name.clone())
                .increment(1);
            if conflicts >= WATCH_RETRIES {
                return Err(self.unavailable(format!(
                    "{APPLIED_KEY} changed under WATCH {WATCH_RETRIES} times in a row"
                )));
            }
        }
    }

    /// The error replies of a run (each with the position of the part
    /// that got it, in order), grouped by the item whose command got them.
    /// An error on a bookkeeping command (SELECT, the marker) makes the
    /// run's outcome unknown: unavailable, retry.
    fn errors_by_item<'e>(
        &self,
        parts: &[Part],
        replies: impl IntoIterator<Item = (usize, &'e [u8])>,
        what: &str,
    ) -> Result<HashMap<usize, Vec<String>>, TargetError> {
        let mut errors: HashMap<usize, Vec<String>> = HashMap::new();
        for (k, e) in replies {
            match parts.get(k) {
                Some(Part::Command(i)) => errors.entry(*i).or_default().push(escape(e)),
                Some(Part::Merged(items)) => {
                    for i in items {
                        errors.entry(*i).or_default().push(escape(e));
                    }
                }
                Some(Part::Select | Part::Marker) | None => {
                    return Err(
                        self.unavailable(format!("bookkeeping command {what}: {}", escape(e)))
                    )
                }
            }
        }
        Ok(errors)
    }

    /// The last sequence of `stream` applied at this target (0: none).
    async fn marker(&self, live: &mut Live, stream: u64) -> Result<Marker, TargetError> {
        let shared = shared_streams();
        if let (false, Some(m)) = (shared, live.markers.get(&stream)) {
            return Ok(*m);
        }
        let mut packed = Vec::new();
        select(&mut packed, MARKER_DB);
        if shared {
            encode_command(&mut packed, &[&b"WATCH"[..], APPLIED_KEY.as_bytes()]);
        }
        let field = self.marker_field(stream);
        let legacy = stream_field(stream);
        encode_command(
            &mut packed,
            &[
                &b"HMGET"[..],
                APPLIED_KEY.as_bytes(),
                field.as_bytes(),
                legacy.as_bytes(),
            ],
        );
        let n = if shared { 3 } else { 2 };
        let replies = live
            .conn
            .round_trip(&packed, n)
            .await
            .map_err(|e| self.unavailable(e))?;
        if let Some(e) = replies.iter().find_map(Reply::as_error) {
            return Err(self.unavailable(format!("reading {APPLIED_KEY}: {}", escape(e))));
        }
        // This target's own field; before there was one, the stream's.
        let value = match &replies[n - 1] {
            Reply::Array(Some(values)) => values
                .iter()
                .find_map(|v| match v {
                    Reply::Bulk(Some(b)) => Some(Ok(b)),
                    Reply::Bulk(None) => None,
                    other => Some(Err(format!("{other:?}"))),
                })
                .transpose(),
            other => Err(format!("{other:?}")),
        }
        .map_err(|other| {
            self.unavailable(format!("unexpected reply to HMGET {APPLIED_KEY}: {other}"))
        })?;
        let value = match value {
            Some(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    self.unavailable(format!(
                        "{APPLIED_KEY} holds a non-number for stream {stream:016x}"
                    ))
                })?,
            None => 0,
        };
        self.confirmed
            .read(stream, value, || format!("stream {}", stream_field(stream)));
        // Read, not written here: nothing says a replica has it.
        let m = Marker {
            value,
            confirmed: self.wait.is_none(),
        };
        if !shared {
            live.markers.insert(stream, m);
        }
        Ok(m)
    }

    /// Tries each db number of `active` not yet used on this connection
    /// alone: a SELECT that fails inside MULTI would leave the following
    /// commands in another db. Returns the refused ones with the reason.
    async fn check_dbs(
        &self,
        live: &mut Live,
        active: &[(usize, &RedisOp)],
    ) -> Result<Vec<(u32, String)>, TargetError> {
        let mut bad_dbs: Vec<(u32, String)> = Vec::new();
        // A run's operations mostly share one db: it is looked up once.
        let mut previous = None;
        for &(_, op) in active {
            if previous == Some(op.db) {
                continue;
            }
            previous = Some(op.db);
            if live.good_dbs.contains(&op.db) || bad_dbs.iter().any(|(d, _)| *d == op.db) {
                continue;
            }
            let mut packed = Vec::new();
            select(&mut packed, op.db);
            match live.conn.round_trip(&packed, 1).await {
                Ok(replies) => match replies.first().and_then(Reply::as_error) {
                    Some(e) => bad_dbs.push((op.db, escape(e))),
                    None => {
                        live.good_dbs.insert(op.db);
                    }
                },
                Err(e) => return Err(self.unavailable(e)),
            }
        }
        Ok(bad_dbs)
    }

    /// `Ok(None)`: another server changed the marker hash since it was
    /// read (shared streams only); nothing was applied, plan again.
    async fn apply_on(
        &self,
        live: &mut Live,
        held: &mut HashMap<u64, Held>,
        stream: u64,
        run: Run<'_>,
        next: Option<Run<'_>>,
    ) -> Result<Option<Vec<Applied>>, TargetError> {
        let items = run.items;
        // The run the call before sent ahead (ahead.rs) is committed below
        // when it is this run and can be planned without asking the target
        // anything (a question would be queued in its MULTI); otherwise it
        // is discarded first.
        let mut ahead = match live.ahead.take() {
            Some(a) if a.is(stream, run.id) && live.knows(stream, a.first, items) => Some(a),
            Some(a) => {
                self.discard(live, &a).await?;
                None
            }
            None => None,
        };
        let mut out = vec![Applied::Ok; items.len()];
        let Some(last_seq) = items.iter().map(|(seq, _)| *seq).max() else {
            return Ok(Some(out));
        };
        let marker = self.marker(live, stream).await?;
        // A retry of a run that committed and fell short of replicas: its
        // records are skipped now, with the outcomes they had then.
        let kept = held.get(&stream).and_then(|h| h.outcomes(items));
        let mut active: Vec<(usize, &RedisOp)> = Vec::with_capacity(items.len());
        let mut skipped = 0u64;
        for (i, (seq, op)) in items.iter().enumerate() {
            match op {
                Op::Mongo(_) => {
                    out[i] = Applied::Refused("a Mongo write cannot go to a Redis target".into())
                }
                Op::Redis(_) if *seq <= marker.value => {
                    skipped += 1;
                    if let Some(outcome) = kept.and_then(|k| k.get(i)) {
                        out[i] = outcome.clone();
                    }
                }
                Op::Redis(r) => active.push((i, r)),
            }
        }
        if skipped > 0 {
            metrics::counter!(stats::SERVER_REDIS_ALREADY_APPLIED, "target" => self.name.clone())
                .increment(skipped);
            tracing::info!(target = %self.name, skipped, marker = marker.value, "skipped records this target had already applied");
        }
        if last_seq <= marker.value && marker.confirmed {
            if shared_streams() {
                live.conn
                    .command(&[&b"UNWATCH"[..]])
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
            held.remove(&stream);
            return Ok(Some(out));
        }
        // From here the marker is written: past the run, or (a *touch*)
        // again with the value it has, so that WAIT, which counts only
        // this connection's writes, confirms everything up to it.
        let new_marker = last_seq.max(marker.value);
        if new_marker == marker.value {
            tracing::debug!(target = %self.name, marker = marker.value, "every record applied already; touching the marker to confirm it with WAIT");
        }

        let bad_dbs = self.check_dbs(live, &active).await?;
        if !bad_dbs.is_empty() {
            active.retain(|&(i, op)| match bad_dbs.iter().find(|(d, _)| *d == op.db) {
                Some((_, why)) => {
                    out[i] = Applied::Refused(format!("target db {} refused: {why}", op.db));
                    false
                }
                None => true,
            });
        }

        // One MULTI/EXEC: the data, then the stream's marker. A command
        // refused while queueing aborts the EXEC; it is taken out and the
        // rest sent again.
        let field = self.marker_field(stream);
        let mut first_round = true;
        loop {
            // An aborted EXEC ends the WATCH: watch again, and plan again
            // if the marker moved meanwhile.
            if !first_round
                && shared_streams()
                && self.marker(live, stream).await?.value != marker.value
            {
                return Ok(None);
            }
            let mut packed = std::mem::take(&mut live.packed);
            packed.clear();
            // Already queued (sent ahead, planned as it is planned here:
            // every record after the marker, every db good): only EXEC.
            let parts = match ahead.take() {
                Some(a) if a.marker == new_marker => a.parts,
                Some(a) => {
                    self.discard(live, &a).await?;
                    run_body(&active, &field, new_marker, self.merges(), &mut packed)
                }
                None => run_body(&active, &field, new_marker, self.merges(), &mut packed),
            };
            encode_command(&mut packed, &[&b"EXEC"[..]]);
            // After EXEC, in the same round trip (inside MULTI it would not
            // block). Its answer counts only when the EXEC committed.
            if let Some(wait) = &self.wait {
                wait.encode(&mut packed);
            }
            live.conn.send(&packed).await.map_err(|e| self.broken(e))?;
            // The next run goes out while this one executes; its EXEC waits
            // for this one's result.
            let sent_ahead = match next.filter(|_| first_round) {
                Some(next) => {
                    self.send_ahead(live, held, stream, new_marker, next, &mut packed)
                        .await?
                }
                None => None,
            };
            first_round = false;
            let replies = live
                .conn
                .read_run(parts.len(), usize::from(self.wait.is_some()))
                .await
                .map_err(|e| self.broken(e))?;
            if packed.capacity() <= KEEP_PACKED {
                live.packed = packed;
            }
            if let Some(e) = replies.multi.as_error() {
                return Err(self.unavailable(format!("MULTI refused: {}", escape(e))));
            }
            match &replies.exec {
                ExecReply::Ran { results, errors } if *results == parts.len() => {
                    let errors = self.errors_by_item(
                        &parts,
                        errors.iter().map(|(k, e)| (*k, e.as_ref())),
                        "failed",
                    )?;
                    for (i, errs) in errors {
                        let transaction = matches!(items[i].1, Op::Redis(r) if r.is_transaction());
                        out[i] = Applied::Refused(if transaction {
                            format!(
                                "transaction ran with errors (Redis does not roll back): {}",
                                errs.join("; ")
                            )
                        } else {
                            errs.join("; ")
                        });
                    }
                    if let Some(wait) = &self.wait {
                        let verdict = replies
                            .after
                            .first()
                            .map_or(Verdict::Nonsense("no WAIT reply".into()), |r| wait.judge(r));
                        if verdict != Verdict::Confirmed {
                            // Committed, not confirmed: the retry skips the
                            // records (with these outcomes) and waits again.
                            live.markers.remove(&stream);
                            held.insert(stream, Held::new(items, &out));
                        }
                        match verdict {
                            Verdict::Confirmed => {}
                            Verdict::Shortfall(k) => {
                                metrics::counter!(stats::SERVER_REDIS_WAIT_SHORTFALLS, "target" => self.name.clone())
                                    .increment(1);
                                return Err(self.unavailable(wait.shortfall(k)));
                            }
                            Verdict::Refused(e) => {
                                return Err(self.unavailable(format!(
                                    "WAIT refused (no longer the master?): {e}"
                                )))
                            }
                            Verdict::Nonsense(e) => return Err(self.broken(e)),
                        }
                    }
                    self.confirmed.confirm(stream, new_marker);
                    if !shared_streams() {
                        live.markers.insert(
                            stream,
                            Marker {
                                value: new_marker,
                                confirmed: true,
                            },
                        );
                    }
                    held.remove(&stream);
                    live.ahead = sent_ahead;
                    return Ok(Some(out));
                }
                ExecReply::Other(Reply::Array(None)) if shared_streams() => return Ok(None),
                ExecReply::Other(Reply::Error(e)) => {
                    if is_transient(e) {
                        return Err(self.unavailable(escape(e)));
                    }
                    // EXECABORT: an MSET refused while queueing (an ACL
                    // without it, say) turns merging off, and the run goes
                    // again as it came.
                    if let Some(why) = replies.not_queued.iter().find_map(|(k, r)| {
                        let e = r.as_error()?;
                        let merged = matches!(parts.get(*k), Some(Part::Merged(_)));
                        (merged && !is_transient(e)).then(|| escape(e))
                    }) {
                        self.merges_refused(&why);
                        if let Some(a) = sent_ahead {
                            self.discard(live, &a).await?;
                        }
                        continue;
                    }
                    // EXECABORT: find the commands refused at queue time.
                    let refused = self.errors_by_item(
                        &parts,
                        replies
                            .not_queued
                            .iter()
                            .filter_map(|(k, r)| r.as_error().map(|e| (*k, e))),
                        "refused",
                    )?;
                    if refused.is_empty() {
                        return Err(self.broken(format!("EXEC failed: {}", escape(e))));
                    }
                    if let Some(transient) = refused
                        .values()
                        .flatten()
                        .find(|m| is_transient(m.as_bytes()))
                    {
                        return Err(self.unavailable(transient));
                    }
                    for (i, errs) in &refused {
                        out[*i] =
                            Applied::Refused(format!("refused by Redis: {}", errs.join("; ")));
                    }
                    active.retain(|(i, _)| !refused.contains_key(i));
                    // The next run was queued on the assumption that this
                    // one committed: it goes before this one is sent again.
                    if let Some(a) = sent_ahead {
                        self.discard(live, &a).await?;
                    }
                }
                other => return Err(self.broken(format!("unexpected EXEC reply {other:?}"))),
            }
        }
    }

    /// Sends `next`, the run to follow the one just sent (which writes
    /// `marker`), as far as its `MULTI` and commands (ahead.rs), when it
    /// can be planned now exactly as it will be then: outside the
    /// shared-streams mode, on a connection of this stream's alone, every
    /// record after `marker`, every db already tried on this connection,
    /// and no outcomes held for a retry. `packed` is free to use.
    async fn send_ahead(
        &self,
        live: &mut Live,
        held: &HashMap<u64, Held>,
        stream: u64,
        marker: u64,
        next: Run<'_>,
        packed: &mut Vec<u8>,
    ) -> Result<Option<Ahead>, TargetError> {
        let (Some(first), Some(last)) = (next.items.first(), next.items.last()) else {
            return Ok(None);
        };
        let (first, last) = (first.0, last.0);
        if next.id == RunId::NONE
            || shared_streams()
            || held.contains_key(&stream)
            || !self.assign.alone(stream)
            || first <= marker
        {
            return Ok(None);
        }
        if !live.tried_dbs(next.items) {
            return Ok(None);
        }
        let active: Vec<(usize, &RedisOp)> = next
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, (_, op))| match op {
                Op::Redis(r) => Some((i, r)),
                Op::Mongo(_) => None,
            })
            .collect();
        packed.clear();
        let field = self.marker_field(stream);
        let parts = run_body(&active, &field, last, self.merges(), packed);
        live.conn.send(packed).await.map_err(|e| self.broken(e))?;
        Ok(Some(Ahead::new(stream, next.id, first, parts, last)))
    }

    /// Whether plain `SET`s are merged into `MSET`s now.
    fn merges(&self) -> bool {
        self.merge_sets.load(Ordering::Relaxed)
    }

    /// The target refused an `MSET` while queueing: `SET`s go one by one
    /// from now on.
    fn merges_refused(&self, why: &str) {
        if self.merge_sets.swap(false, Ordering::Relaxed) {
            metrics::counter!(stats::SERVER_REDIS_MSET_REFUSED, "target" => self.name.clone())
                .increment(1);
            tracing::warn!(
                target = %self.name,
                "the target refused MSET ({why}); plain SETs go to it one by one from now on \
                 (merge_sets = false in its options says so from the start)"
            );
        }
    }

    /// Drops the run sent ahead on this connection: `DISCARD`, and the
    /// replies to its `MULTI`, its queued commands and the `DISCARD`.
    async fn discard(&self, live: &mut Live, ahead: &Ahead) -> Result<(), TargetError> {
        let mut packed = Vec::new();
        encode_command(&mut packed, &[&b"DISCARD"[..]]);
        let replies = live
            .conn
            .round_trip(&packed, ahead.parts.len() + 2)
            .await
            .map_err(|e| self.broken(e))?;
        match replies.last() {
            Some(Reply::Status(ok)) if ok.as_ref() == b"OK" => Ok(()),
            other => Err(self.broken(format!("unexpected DISCARD reply {other:?}"))),
        }
    }
}

/// Appends a run's `MULTI` and the commands queued after it to `packed`:
/// each operation's commands (with a `SELECT` where the db changes; with
/// `merge`, plain `SET`s that follow each other as one `MSET`), then
/// `HSET` of the stream's marker `field` to `marker` in [`MARKER_DB`].
/// Returns what each queued command is.
fn run_body(
    active: &[(usize, &RedisOp)],
    field: &str,
    marker: u64,
    merge: bool,
    packed: &mut Vec<u8>,
) -> Vec<Part> {
    // Sized up front: growing a run's megabyte by doubling copied it again
    // each time (a SELECT is ~30 bytes, MULTI, the marker and EXEC
    // together under 256).
    let (mut commands, mut bytes) = (0, 0);
    for c in active.iter().flat_map(|(_, op)| &op.commands) {
        commands += 1;
        bytes += c.resp().len();
    }
    packed.reserve(bytes + 256 + 32 * 4);
    let mut parts: Vec<Part> = Vec::with_capacity(commands + 4);
    encode_command(packed, &[&b"MULTI"[..]]);
    let mut current_db = None;
    let mut pairs = merge::Pairs::default();
    for &(i, op) in active {
        if current_db != Some(op.db) {
            pairs.flush(packed, &mut parts);
            select(packed, op.db);
            parts.push(Part::Select);
            current_db = Some(op.db);
        }
        for c in &op.commands {
            let resp = c.resp();
            if merge && merge::is_plain_set(resp) {
                pairs.push(i, resp, packed, &mut parts);
            } else {
                pairs.flush(packed, &mut parts);
                packed.extend_from_slice(resp);
                parts.push(Part::Command(i));
            }
        }
    }
    pairs.flush(packed, &mut parts);
    select(packed, MARKER_DB);
    parts.push(Part::Select);
    encode_command(
        packed,
        &[
            b"HSET",
            APPLIED_KEY.as_bytes(),
            field.as_bytes(),
            marker.to_string().as_bytes(),
        ],
    );
    parts.push(Part::Marker);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(urls: &[&str], user: Option<&str>, password: Option<&str>) -> RedisSource {
        RedisSource::Sentinel(SentinelSource {
            sentinels: urls.iter().map(|u| u.to_string()).collect(),
            master: "m".into(),
            sentinel_user: user.map(str::to_owned),
            sentinel_password: password.map(str::to_owned),
        })
    }

    #[test]
    fn sentinel_sources_are_checked() {
        let settings = RedisSettings::default();
        let e = Source::new(sentinel(&[], None, None), &settings).expect_err("no sentinel");
        assert!(e.contains("at least one sentinel"), "{e}");
        let e = Source::new(sentinel(&["redis://h:1"], Some("u"), None), &settings)
            .expect_err("a user alone");
        assert!(e.contains("sentinel_password"), "{e}");
        let e = Source::new(
            sentinel(&["redis://h:1", "http://x"], None, None),
            &settings,
        )
        .expect_err("a bad URL");
        assert!(e.contains("`http://x`"), "{e}");
    }

    #[test]
    fn sentinel_credentials() {
        let settings = RedisSettings::default();
        let urls = ["redis://data:pw@h:1", "redis://data:pw@h:2"];
        let Ok(Source::Sentinel(own)) = Source::new(sentinel(&urls, None, None), &settings) else {
            panic!("a sentinel source")
        };
        let text = format!("{own:?}");
        assert_eq!(text.matches("Some(\"data\")").count(), 3, "{text}");
        let Ok(Source::Sentinel(apart)) =
            Source::new(sentinel(&urls, Some("sen"), Some("spw")), &settings)
        else {
            panic!("a sentinel source")
        };
        let text = format!("{apart:?}");
        // Both sentinels take their own credentials; the data nodes keep
        // the URL's.
        assert_eq!(text.matches("Some(\"sen\")").count(), 2, "{text}");
        assert_eq!(text.matches("Some(\"data\")").count(), 1, "{text}");
        // No password shows.
        assert!(!text.contains("pw"), "{text}");
        assert_eq!(text.matches("Some(\"***\")").count(), 3, "{text}");
    }

    #[test]
    fn settings_from_def() {
        let mut def = TargetDef {
            name: "t".into(),
            kind: TargetKind::Redis,
            url: "redis://127.0.0.1:6379".into(),
            options: TargetOptions {
                pool: Some(0),
                timeout: Some(Duration::from_secs(2)),
                ..TargetOptions::default()
            },
        };
        let s = RedisSettings::from_def(&def);
        assert_eq!(s.pool, 1);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.replicas, 0);
        // A sentinel target waits for one replica unless told otherwise.
        def.kind = TargetKind::RedisSentinel;
        assert_eq!(RedisSettings::from_def(&def).replicas, 1);
        def.options.replicas = Some(2);
        def.options.replica_timeout = Some(Duration::from_millis(300));
        let s = RedisSettings::from_def(&def);
        assert_eq!(
            (s.replicas, s.replica_timeout),
            (2, Duration::from_millis(300))
        );
        // `pool` left out: up to four streams apply in parallel (this test
        // process never turns the NATS shared-streams mode on).
        def.options.pool = None;
        assert_eq!(RedisSettings::from_def(&def).pool, DEFAULT_POOL);
    }
}
