//! The Redis applier: one pipeline per run of operations.
//!
//! Each operation selects its db (a `SELECT` only where the db changes), a
//! transaction is wrapped in MULTI/EXEC, and the replies are read back one
//! per operation. A db number is tried alone once per connection before
//! use, so a `SELECT` that fails can never send commands into another db.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, Value};
use syncs_dsl::Target as TargetDef;
use tokio::sync::Mutex;

use super::{Applied, TargetError};
use crate::op::{Op, RedisCommand, RedisOp};

/// Error codes that say "not now" rather than "never": retried.
const TRANSIENT: [&str; 7] = [
    "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "NOREPLICAS",
];

#[derive(Debug)]
pub struct RedisTarget {
    name: String,
    client: Client,
    config: AsyncConnectionConfig,
    conn: Mutex<Option<Live>>,
}

#[derive(Debug)]
struct Live {
    conn: MultiplexedConnection,
    good_dbs: HashSet<u32>,
}

/// What each reply in the pipeline answers.
enum Slot {
    Select,
    Single(usize),
    Multi,
    Queued,
    Exec(usize),
}

impl RedisTarget {
    pub fn new(def: &TargetDef) -> Result<Self, String> {
        let client = Client::open(def.url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
        let timeout = def.options.timeout.unwrap_or(Duration::from_secs(5));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout.max(Duration::from_secs(1)) * 6));
        Ok(Self {
            name: def.name.clone(),
            client,
            config,
            conn: Mutex::new(None),
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

    pub async fn apply(&self, ops: &[&Op]) -> Result<Vec<Applied>, TargetError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| self.unavailable(e))?;
            *guard = Some(Live {
                conn,
                good_dbs: HashSet::new(),
            });
        }
        let Some(live) = guard.as_mut() else {
            return Err(self.unavailable("no connection"));
        };
        match self.apply_on(live, ops).await {
            Ok(out) => Ok(out),
            Err(e) => {
                // Drop the connection: its state after an error is unknown.
                *guard = None;
                Err(e)
            }
        }
    }

    async fn apply_on(&self, live: &mut Live, ops: &[&Op]) -> Result<Vec<Applied>, TargetError> {
        let mut out = vec![Applied::Ok; ops.len()];
        let redis_ops: Vec<(usize, &RedisOp)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Redis(r) => Some((i, r)),
                Op::Mongo(_) => {
                    out[i] = Applied::Refused("a Mongo write cannot go to a Redis target".into());
                    None
                }
            })
            .collect();

        // Try each new db number alone first.
        let mut bad_dbs: Vec<(u32, String)> = Vec::new();
        for &(_, op) in &redis_ops {
            if live.good_dbs.contains(&op.db) || bad_dbs.iter().any(|(d, _)| *d == op.db) {
                continue;
            }
            let mut select = Cmd::new();
            select.arg("SELECT").arg(op.db);
            match live.conn.req_packed_command(&select).await {
                Ok(Value::ServerError(e)) => bad_dbs.push((op.db, e.to_string())),
                Ok(_) => {
                    live.good_dbs.insert(op.db);
                }
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                    bad_dbs.push((op.db, e.to_string()))
                }
                Err(e) => return Err(self.unavailable(e)),
            }
        }

        let mut pipe = Pipeline::new();
        let mut slots = Vec::new();
        let mut current_db = None;
        for &(i, op) in &redis_ops {
            if let Some((_, why)) = bad_dbs.iter().find(|(d, _)| *d == op.db) {
                out[i] = Applied::Refused(format!("target db {} refused: {why}", op.db));
                continue;
            }
            if current_db != Some(op.db) {
                pipe.add_command({
                    let mut c = Cmd::new();
                    c.arg("SELECT").arg(op.db);
                    c
                });
                slots.push(Slot::Select);
                current_db = Some(op.db);
            }
            if op.is_transaction() {
                pipe.add_command(Cmd::new().arg("MULTI").to_owned());
                slots.push(Slot::Multi);
                for c in &op.commands {
                    pipe.add_command(to_cmd(c));
                    slots.push(Slot::Queued);
                }
                pipe.add_command(Cmd::new().arg("EXEC").to_owned());
                slots.push(Slot::Exec(i));
            } else {
                pipe.add_command(to_cmd(&op.commands[0]));
                slots.push(Slot::Single(i));
            }
        }
        if slots.is_empty() {
            return Ok(out);
        }
        let replies = live
            .conn
            .req_packed_commands(&pipe, 0, slots.len())
            .await
            .map_err(|e| self.unavailable(e))?;
        if replies.len() != slots.len() {
            return Err(self.unavailable(format!(
                "{} replies to {} commands",
                replies.len(),
                slots.len()
            )));
        }
        let mut queued_errors: Vec<String> = Vec::new();
        for (slot, reply) in slots.iter().zip(replies) {
            match slot {
                Slot::Select => {
                    if let Value::ServerError(e) = reply {
                        // Cannot happen after the probe above unless the
                        // server changed under us: treat as unavailable.
                        return Err(self.unavailable(format!("SELECT failed: {e}")));
                    }
                }
                Slot::Multi => queued_errors.clear(),
                Slot::Queued => {
                    if let Value::ServerError(e) = reply {
                        queued_errors.push(e.to_string());
                    }
                }
                Slot::Single(i) => {
                    if let Value::ServerError(e) = reply {
                        if is_transient(e.code()) {
                            return Err(self.unavailable(e));
                        }
                        out[*i] = Applied::Refused(e.to_string());
                    }
                }
                Slot::Exec(i) => {
                    out[*i] = match reply {
                        Value::Array(results) => {
                            let errors: Vec<String> = results
                                .iter()
                                .enumerate()
                                .filter_map(|(n, r)| match r {
                                    Value::ServerError(e) => Some(format!("command #{}: {e}", n + 1)),
                                    _ => None,
                                })
                                .collect();
                            if errors.is_empty() {
                                Applied::Ok
                            } else {
                                Applied::Refused(format!(
                                    "transaction ran with errors (Redis does not roll back): {}",
                                    errors.join("; ")
                                ))
                            }
                        }
                        Value::ServerError(e) => {
                            if is_transient(e.code()) && queued_errors.is_empty() {
                                return Err(self.unavailable(e));
                            }
                            Applied::Refused(format!(
                                "transaction not applied: {e} {}",
                                queued_errors.join("; ")
                            ))
                        }
                        Value::Nil => Applied::Refused("transaction aborted (EXEC returned nil)".into()),
                        other => Applied::Refused(format!("unexpected EXEC reply {other:?}")),
                    };
                }
            }
        }
        Ok(out)
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
