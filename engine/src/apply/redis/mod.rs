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
//! read next shows it) or never will.

mod conn;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use syncs_dsl::Target as TargetDef;
use tokio::sync::Mutex;

use self::conn::{Conn, Endpoint};
use super::{Applied, TargetError};
use crate::op::{Op, RedisOp};
use crate::stats;
use crate::wire::reply::{error_code, escape, Reply};
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

#[derive(Debug)]
pub struct RedisTarget {
    name: String,
    endpoint: Endpoint,
    /// `pool` connections; a stream always uses the same one, so its runs
    /// stay in order while different streams proceed in parallel.
    slots: Vec<Mutex<Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The connection, when no run has it checked out and the last one
    /// finished cleanly.
    live: Option<Live>,
    /// The `CLIENT ID` of this slot's connection while it is checked out,
    /// and after it was dropped with a request possibly in flight: the next
    /// connection kills it before sending anything.
    fence: Option<u64>,
}

#[derive(Debug)]
struct Live {
    conn: Conn,
    good_dbs: HashSet<u32>,
    /// Last applied sequence per stream, as read from / written to the target.
    markers: HashMap<u64, u64>,
}

/// What each queued command in the MULTI is.
enum Part {
    Select,
    /// A command of the item at this index.
    Command(usize),
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

/// Turns on [`SHARED_STREAMS`] for this process (the NATS server mode).
pub fn set_shared_streams(on: bool) {
    SHARED_STREAMS.store(on, Ordering::Relaxed);
}

fn shared_streams() -> bool {
    SHARED_STREAMS.load(Ordering::Relaxed)
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
    pub fn new(def: &TargetDef) -> Result<Self, String> {
        let endpoint = Endpoint::parse(
            &def.url,
            def.options
                .connect_timeout
                .unwrap_or(Duration::from_secs(5)),
            def.options.timeout.unwrap_or(Duration::from_secs(30)),
        )?;
        let pool = def.options.pool.unwrap_or(1).max(1) as usize;
        Ok(Self {
            name: def.name.clone(),
            endpoint,
            slots: (0..pool).map(|_| Mutex::new(Slot::default())).collect(),
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

    /// Whether the server answers at all, on a connection of its own.
    pub async fn probe(&self) -> Result<(), TargetError> {
        let mut conn = self
            .endpoint
            .connect()
            .await
            .map_err(|e| self.unavailable(e))?;
        match conn.command(&[&b"PING"[..]]).await {
            Ok(Reply::Status(_)) => Ok(()),
            Ok(other) => Err(self.unavailable(format!("PING answered {other:?}"))),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    pub async fn apply(
        &self,
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Vec<Applied>, TargetError> {
        let index = (stream % self.slots.len() as u64) as usize;
        let mut slot = self.slots[index].lock().await;
        let mut live = match slot.live.take() {
            Some(live) => live,
            None => Live {
                conn: self.connect(&mut slot.fence).await?,
                good_dbs: HashSet::new(),
                markers: HashMap::new(),
            },
        };
        // Checked out: from here until it is put back, a failure or a
        // dropped future drops `live` (the socket and the cached markers),
        // and the fence stays set for the next connection.
        slot.fence = live.conn.id();
        let result = self.apply_checked_out(&mut live, stream, items).await;
        if result.is_ok() {
            slot.live = Some(live);
            slot.fence = None;
        }
        result
    }

    /// A new connection; first kills the one `fence` names, if any.
    async fn connect(&self, fence: &mut Option<u64>) -> Result<Conn, TargetError> {
        let mut conn = self
            .endpoint
            .connect()
            .await
            .map_err(|e| self.unavailable(e))?;
        if conn.id().is_none() {
            tracing::warn!(target = %self.name, "CLIENT ID not answered: a run cut off mid-way cannot be fenced (Redis 5 or later and the CLIENT command are needed for exactly once after timeouts)");
        }
        if let Some(old) = *fence {
            let id = old.to_string();
            let outcome = match conn
                .command(&[&b"CLIENT"[..], b"KILL", b"ID", id.as_bytes()])
                .await
                .map_err(|e| self.unavailable(format!("fencing the previous connection: {e}")))?
            {
                Reply::Int(1) => "killed",
                Reply::Int(_) => "gone",
                Reply::Error(e) if e.starts_with(b"ERR No such client") => "gone",
                other => {
                    tracing::warn!(target = %self.name, old, "could not kill the connection dropped mid-run ({other:?}); a run still queued on it may apply twice");
                    "refused"
                }
            };
            metrics::counter!(stats::SERVER_REDIS_FENCES, "target" => self.name.clone(), "outcome" => outcome)
                .increment(1);
            *fence = None;
        }
        Ok(conn)
    }

    async fn apply_checked_out(
        &self,
        live: &mut Live,
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Vec<Applied>, TargetError> {
        let mut conflicts = 0;
        loop {
            if let Some(out) = self.apply_on(live, stream, items).await? {
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

    /// The error replies among `replies` (one per part), grouped by the item
    /// whose command got them. An error on a bookkeeping command (SELECT,
    /// the marker) makes the run's outcome unknown: unavailable, retry.
    fn errors_by_item(
        &self,
        parts: &[Part],
        replies: &[Reply],
        what: &str,
    ) -> Result<HashMap<usize, Vec<String>>, TargetError> {
        let mut errors: HashMap<usize, Vec<String>> = HashMap::new();
        for (part, reply) in parts.iter().zip(replies) {
            if let Some(e) = reply.as_error() {
                match part {
                    Part::Command(i) => errors.entry(*i).or_default().push(escape(e)),
                    Part::Select | Part::Marker => {
                        return Err(
                            self.unavailable(format!("bookkeeping command {what}: {}", escape(e)))
                        )
                    }
                }
            }
        }
        Ok(errors)
    }

    /// The last sequence of `stream` applied at this target (0: none).
    async fn marker(&self, live: &mut Live, stream: u64) -> Result<u64, TargetError> {
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
        let m = match value {
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
        for &(_, op) in active {
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
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Option<Vec<Applied>>, TargetError> {
        let mut out = vec![Applied::Ok; items.len()];
        let Some(last_seq) = items.iter().map(|(seq, _)| *seq).max() else {
            return Ok(Some(out));
        };
        let marker = self.marker(live, stream).await?;
        let mut active: Vec<(usize, &RedisOp)> = Vec::new();
        let mut skipped = 0u64;
        for (i, (seq, op)) in items.iter().enumerate() {
            match op {
                Op::Mongo(_) => {
                    out[i] = Applied::Refused("a Mongo write cannot go to a Redis target".into())
                }
                Op::Redis(_) if *seq <= marker => skipped += 1,
                Op::Redis(r) => active.push((i, r)),
            }
        }
        if skipped > 0 {
            metrics::counter!(stats::SERVER_REDIS_ALREADY_APPLIED, "target" => self.name.clone())
                .increment(skipped);
            tracing::info!(target = %self.name, skipped, marker, "skipped records this target had already applied");
        }
        if last_seq <= marker {
            if shared_streams() {
                live.conn
                    .command(&[&b"UNWATCH"[..]])
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
            return Ok(Some(out));
        }

        let bad_dbs = self.check_dbs(live, &active).await?;
        active.retain(|&(i, op)| match bad_dbs.iter().find(|(d, _)| *d == op.db) {
            Some((_, why)) => {
                out[i] = Applied::Refused(format!("target db {} refused: {why}", op.db));
                false
            }
            None => true,
        });

        // One MULTI/EXEC: the data, then the stream's marker. A command
        // refused while queueing aborts the EXEC; it is taken out and the
        // rest sent again.
        let field = self.marker_field(stream);
        let last = last_seq.to_string();
        let mut first_round = true;
        loop {
            // An aborted EXEC ends the WATCH: watch again, and plan again
            // if the marker moved meanwhile.
            if !first_round && shared_streams() && self.marker(live, stream).await? != marker {
                return Ok(None);
            }
            first_round = false;
            let mut packed = Vec::with_capacity(64 * (active.len() + 4));
            let mut parts: Vec<Part> = Vec::new();
            encode_command(&mut packed, &[&b"MULTI"[..]]);
            let mut current_db = None;
            for &(i, op) in &active {
                if current_db != Some(op.db) {
                    select(&mut packed, op.db);
                    parts.push(Part::Select);
                    current_db = Some(op.db);
                }
                for c in &op.commands {
                    encode_command(&mut packed, c.args());
                    parts.push(Part::Command(i));
                }
            }
            select(&mut packed, MARKER_DB);
            parts.push(Part::Select);
            encode_command(
                &mut packed,
                &[
                    b"HSET",
                    APPLIED_KEY.as_bytes(),
                    field.as_bytes(),
                    last.as_bytes(),
                ],
            );
            parts.push(Part::Marker);
            encode_command(&mut packed, &[&b"EXEC"[..]]);
            let total = parts.len() + 2;
            let replies = live
                .conn
                .round_trip(&packed, total)
                .await
                .map_err(|e| self.broken(e))?;
            if let Some(e) = replies[0].as_error() {
                return Err(self.unavailable(format!("MULTI refused: {}", escape(e))));
            }
            let queued = &replies[1..total - 1];
            match &replies[total - 1] {
                Reply::Array(Some(results)) if results.len() == parts.len() => {
                    let errors = self.errors_by_item(&parts, results, "failed")?;
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
                    if !shared_streams() {
                        live.markers.insert(stream, last_seq);
                    }
                    return Ok(Some(out));
                }
                Reply::Array(None) if shared_streams() => return Ok(None),
                Reply::Error(e) => {
                    if is_transient(e) {
                        return Err(self.unavailable(escape(e)));
                    }
                    // EXECABORT: find the commands refused at queue time.
                    let refused = self.errors_by_item(&parts, queued, "refused")?;
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
                }
                other => return Err(self.broken(format!("unexpected EXEC reply {other:?}"))),
            }
        }
    }
}
