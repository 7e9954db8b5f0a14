//! The Redis applier: one MULTI/EXEC per run of operations, exactly once.
//!
//! A run of a stream's operations goes as one pipeline: `MULTI`, each
//! operation's commands (with a `SELECT` only where the db changes; a
//! transaction's commands simply sit inside the one MULTI), then
//! `HSET syncs:applied <stream> <last sequence>` in db 0, then `EXEC`. The
//! data and the stream's marker commit together, so after a crash at any
//! point the marker says exactly what was applied, and records at or below
//! it are skipped when they are delivered again: no gap, no duplicate.
//!
//! A command Redis refuses at run time (WRONGTYPE) fails alone and is
//! reported for its operation; one refused while queueing (wrong arity)
//! aborts the EXEC, so it is taken out and the rest sent again. A db number
//! is tried alone once per connection before use, so a `SELECT` that fails
//! can never send commands into another db.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, Value};
use syncs_dsl::Target as TargetDef;
use tokio::sync::Mutex;

use super::{Applied, TargetError};
use crate::op::{Op, RedisCommand, RedisOp};

/// Error codes that say "not now" rather than "never": retried.
const TRANSIENT: [&str; 8] = [
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "NOREPLICAS",
    "OOM",
];

#[derive(Debug)]
pub struct RedisTarget {
    name: String,
    client: Client,
    config: AsyncConnectionConfig,
    /// `pool` connections; a stream always uses the same one, so its runs
    /// stay in order while different streams proceed in parallel.
    conns: Vec<Mutex<Option<Live>>>,
}

#[derive(Debug)]
struct Live {
    conn: MultiplexedConnection,
    good_dbs: HashSet<u32>,
    /// Last applied sequence per stream, as read from / written to the target.
    markers: HashMap<u64, u64>,
}

/// What each queued command in the MULTI is.
enum Slot {
    Select,
    /// A command of the item at this index.
    Command(usize),
    Marker,
}

/// The hash, in db [`MARKER_DB`] of each Redis target, that holds the last
/// applied sequence of every stream (field: the stream id in 16 hex digits).
pub const APPLIED_KEY: &str = "syncs:applied";
/// The db holding [`APPLIED_KEY`].
pub const MARKER_DB: u32 = 0;
/// Records skipped because the target had applied them already.
pub const ALREADY_APPLIED: &str = "syncs_server_redis_already_applied_total";
/// Runs planned again because another server moved the marker hash under
/// WATCH (shared streams only).
pub const MARKER_CONFLICTS: &str = "syncs_server_redis_marker_conflicts_total";

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

fn stream_field(stream: u64) -> String {
    format!("{stream:016x}")
}

fn first_word(msg: &str) -> &str {
    msg.split_whitespace().next().unwrap_or("")
}

impl RedisTarget {
    pub fn new(def: &TargetDef) -> Result<Self, String> {
        let client = Client::open(def.url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(
                def.options
                    .connect_timeout
                    .unwrap_or(Duration::from_secs(5)),
            ))
            .set_response_timeout(Some(def.options.timeout.unwrap_or(Duration::from_secs(30))));
        let pool = def.options.pool.unwrap_or(1).max(1) as usize;
        Ok(Self {
            name: def.name.clone(),
            client,
            config,
            conns: (0..pool).map(|_| Mutex::new(None)).collect(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError {
            target: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    pub async fn apply(
        &self,
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Vec<Applied>, TargetError> {
        let slot = (stream % self.conns.len() as u64) as usize;
        let mut guard = self.conns[slot].lock().await;
        if guard.is_none() {
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| self.unavailable(e))?;
            *guard = Some(Live {
                conn,
                good_dbs: HashSet::new(),
                markers: HashMap::new(),
            });
        }
        let Some(live) = guard.as_mut() else {
            return Err(self.unavailable("no connection"));
        };
        let mut result = self.apply_on(live, stream, items).await;
        let mut conflicts = 0;
        while matches!(result, Ok(None)) && conflicts < WATCH_RETRIES {
            conflicts += 1;
            metrics::counter!(MARKER_CONFLICTS, "target" => self.name.clone()).increment(1);
            result = self.apply_on(live, stream, items).await;
        }
        match result {
            Ok(Some(out)) => Ok(out),
            Ok(None) => {
                *guard = None;
                Err(self.unavailable(format!(
                    "{APPLIED_KEY} changed under WATCH {WATCH_RETRIES} times in a row"
                )))
            }
            Err(e) => {
                // Drop the connection and the cached markers: after an error
                // the connection's state and what the last EXEC did are
                // unknown, so the markers are read again.
                *guard = None;
                Err(e)
            }
        }
    }

    /// The error replies among `replies` (one per slot), grouped by the item
    /// whose command got them. An error on a bookkeeping command (SELECT,
    /// the marker) makes the run's outcome unknown: unavailable, retry.
    fn errors_by_item(
        &self,
        slots: &[Slot],
        replies: &[Value],
        what: &str,
    ) -> Result<HashMap<usize, Vec<String>>, TargetError> {
        let mut errors: HashMap<usize, Vec<String>> = HashMap::new();
        for (slot, reply) in slots.iter().zip(replies) {
            if let Value::ServerError(e) = reply {
                match slot {
                    Slot::Command(i) => errors.entry(*i).or_default().push(e.to_string()),
                    Slot::Select | Slot::Marker => {
                        return Err(self.unavailable(format!("bookkeeping command {what}: {e}")))
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
        let mut pipe = Pipeline::new();
        pipe.add_command(Cmd::new().arg("SELECT").arg(MARKER_DB).to_owned());
        if shared {
            pipe.add_command(Cmd::new().arg("WATCH").arg(APPLIED_KEY).to_owned());
        }
        pipe.add_command(
            Cmd::new()
                .arg("HGET")
                .arg(APPLIED_KEY)
                .arg(stream_field(stream))
                .to_owned(),
        );
        let n = if shared { 3 } else { 2 };
        let replies = live
            .conn
            .req_packed_commands(&pipe, 0, n)
            .await
            .map_err(|e| self.unavailable(e))?;
        if let Some(Value::ServerError(e)) = replies.get(1).filter(|_| shared) {
            return Err(self.unavailable(format!("WATCH {APPLIED_KEY}: {e}")));
        }
        let m = match replies.get(n - 1) {
            Some(Value::BulkString(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    self.unavailable(format!(
                        "{APPLIED_KEY} holds a non-number for stream {stream:016x}"
                    ))
                })?,
            Some(Value::Nil) => 0,
            Some(Value::ServerError(e)) => {
                return Err(self.unavailable(format!("reading {APPLIED_KEY}: {e}")))
            }
            other => {
                return Err(
                    self.unavailable(format!("unexpected reply to HGET {APPLIED_KEY}: {other:?}"))
                )
            }
        };
        if !shared {
            live.markers.insert(stream, m);
        }
        Ok(m)
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
            metrics::counter!(ALREADY_APPLIED, "target" => self.name.clone()).increment(skipped);
            tracing::info!(target = %self.name, skipped, marker, "skipped records this target had already applied");
        }
        if last_seq <= marker {
            if shared_streams() {
                let unwatch = Cmd::new().arg("UNWATCH").to_owned();
                live.conn
                    .req_packed_command(&unwatch)
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
            return Ok(Some(out));
        }

        // Try each new db number alone first: a SELECT that fails inside
        // MULTI would leave the following commands in another db.
        let mut bad_dbs: Vec<(u32, String)> = Vec::new();
        for &(_, op) in &active {
            if live.good_dbs.contains(&op.db) || bad_dbs.iter().any(|(d, _)| *d == op.db) {
                continue;
            }
            let select = Cmd::new().arg("SELECT").arg(op.db).to_owned();
            match live.conn.req_packed_command(&select).await {
                Ok(Value::ServerError(e)) => bad_dbs.push((op.db, e.to_string())),
                Ok(_) => {
                    live.good_dbs.insert(op.db);
                }
                Err(e)
                    if e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
                {
                    bad_dbs.push((op.db, e.to_string()))
                }
                Err(e) => return Err(self.unavailable(e)),
            }
        }
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
        let mut first_round = true;
        loop {
            // An aborted EXEC ends the WATCH: watch again, and plan again
            // if the marker moved meanwhile.
            if !first_round && shared_streams() && self.marker(live, stream).await? != marker {
                return Ok(None);
            }
            first_round = false;
            let mut pipe = Pipeline::new();
            let mut slots: Vec<Slot> = Vec::new();
            pipe.add_command(Cmd::new().arg("MULTI").to_owned());
            let mut current_db = None;
            for &(i, op) in &active {
                if current_db != Some(op.db) {
                    pipe.add_command(Cmd::new().arg("SELECT").arg(op.db).to_owned());
                    slots.push(Slot::Select);
                    current_db = Some(op.db);
                }
                for c in &op.commands {
                    pipe.add_command(to_cmd(c));
                    slots.push(Slot::Command(i));
                }
            }
            pipe.add_command(Cmd::new().arg("SELECT").arg(MARKER_DB).to_owned());
            slots.push(Slot::Select);
            pipe.add_command(
                Cmd::new()
                    .arg("HSET")
                    .arg(APPLIED_KEY)
                    .arg(stream_field(stream))
                    .arg(last_seq)
                    .to_owned(),
            );
            slots.push(Slot::Marker);
            pipe.add_command(Cmd::new().arg("EXEC").to_owned());
            let total = slots.len() + 2;
            let replies = live
                .conn
                .req_packed_commands(&pipe, 0, total)
                .await
                .map_err(|e| self.unavailable(e))?;
            if replies.len() != total {
                return Err(
                    self.unavailable(format!("{} replies to {total} commands", replies.len()))
                );
            }
            if let Some(Value::ServerError(e)) = replies.first() {
                return Err(self.unavailable(format!("MULTI refused: {e}")));
            }
            let queued = &replies[1..total - 1];
            let exec = &replies[total - 1];
            match exec {
                Value::Array(results) if results.len() == slots.len() => {
                    let errors = self.errors_by_item(&slots, results, "failed")?;
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
                Value::Nil if shared_streams() => return Ok(None),
                Value::ServerError(e) => {
                    if is_transient(e.code()) {
                        return Err(self.unavailable(e));
                    }
                    // EXECABORT: find the commands refused at queue time.
                    let refused = self.errors_by_item(&slots, queued, "refused")?;
                    if refused.is_empty() {
                        return Err(self.unavailable(format!("EXEC failed: {e}")));
                    }
                    if let Some(transient) = refused
                        .values()
                        .flatten()
                        .find(|m| is_transient(first_word(m)))
                    {
                        return Err(self.unavailable(transient));
                    }
                    for (i, errs) in &refused {
                        out[*i] =
                            Applied::Refused(format!("refused by Redis: {}", errs.join("; ")));
                    }
                    active.retain(|(i, _)| !refused.contains_key(i));
                }
                other => return Err(self.unavailable(format!("unexpected EXEC reply {other:?}"))),
            }
        }
    }
}

fn to_cmd(c: &RedisCommand) -> Cmd {
    let mut cmd = Cmd::new();
    for a in c.args() {
        cmd.arg(&a[..]);
    }
    cmd
}

fn is_transient(code: &str) -> bool {
    TRANSIENT.contains(&code)
}
