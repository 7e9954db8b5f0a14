//! The Mongo applier: consecutive writes on one namespace go as one ordered
//! write command (`insert`, `update` or `delete` with many statements), the
//! wire-level form of an ordered bulk write that every MongoDB version (and
//! FerretDB) speaks.
//!
//! An ordered command stops at its first write error: that write is refused
//! (dead-lettered by the caller) and the rest of the run is sent again after
//! it, so one bad document never takes its neighbours with it. A
//! duplicate-key error on an insert is the mark of a redelivered write: it
//! is counted, logged and treated as applied.
//!
//! A collection drop (`MongoWrite::Drop`, routed only where a rule names
//! it) is its own `drop` command; a collection that is not there
//! (`NamespaceNotFound`) counts as dropped, so a redelivered drop is
//! harmless.

use std::time::Duration;

use bson::raw::cstr;
use bson::{doc, rawdoc, Bson, Document, RawArrayBuf, RawDocumentBuf};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::Client;
use syncs_dsl::Target as TargetDef;
use tokio::sync::OnceCell;

use super::{Applied, TargetError};
use crate::op::{MongoOp, MongoUpdate, MongoWrite, Op};
use crate::stats;

/// Write statements per command, and encoded bytes per command (MongoDB
/// takes up to 100,000 statements and 48 MB per message).
const MAX_STATEMENTS: usize = 1000;
const MAX_COMMAND_BYTES: usize = 8 << 20;
/// Update and delete statements per command. Kept small because FerretDB
/// v1 holds a SQLite connection per statement until the command ends and
/// deadlocks past its pool of 100; MongoDB is as fast at this size.
const MAX_MATCHING_STATEMENTS: usize = 50;
/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's error code for a database or collection that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;
/// Command error codes that mean "try again later".
const TRANSIENT_CODES: [i32; 14] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150,
];

#[derive(Debug)]
pub struct MongoTarget {
    name: String,
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
    pool: Option<u32>,
    client: OnceCell<Client>,
}

/// The wire command a write belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verb {
    Insert,
    Update,
    Delete,
    /// A collection drop: one command per write, never batched.
    Drop,
}

impl MongoTarget {
    pub fn new(def: &TargetDef) -> Result<Self, String> {
        if !def.url.starts_with("mongodb://") && !def.url.starts_with("mongodb+srv://") {
            return Err(format!(
                "bad Mongo URL `{}`: must start with mongodb:// or mongodb+srv://",
                def.url
            ));
        }
        Ok(Self {
            name: def.name.clone(),
            url: def.url.clone(),
            timeout: def.options.timeout.unwrap_or(Duration::from_secs(5)),
            connect_timeout: def
                .options
                .connect_timeout
                .unwrap_or(Duration::from_secs(5)),
            pool: def.options.pool,
            client: OnceCell::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> TargetError {
        TargetError::unavailable(&self.name, reason)
    }

    /// Whether the server answers a `ping`.
    pub async fn probe(&self) -> Result<(), TargetError> {
        let client = self.client().await?;
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|e| self.unavailable(e))
    }

    async fn client(&self) -> Result<&Client, TargetError> {
        self.client
            .get_or_try_init(|| async {
                let mut opts = mongodb::options::ClientOptions::parse(&self.url)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                opts.server_selection_timeout = Some(self.timeout);
                opts.connect_timeout = Some(self.connect_timeout);
                if let Some(pool) = self.pool {
                    opts.max_pool_size = Some(pool);
                }
                opts.app_name = Some("syncs".into());
                Client::with_options(opts).map_err(|e| self.unavailable(e))
            })
            .await
    }

    pub async fn apply(&self, ops: &[&Op]) -> Result<Vec<Applied>, TargetError> {
        let client = self.client().await?;
        let mut out = vec![Applied::Ok; ops.len()];
        let mut i = 0;
        while i < ops.len() {
            let Op::Mongo(first) = ops[i] else {
                out[i] = Applied::Refused("a Redis command cannot go to a Mongo target".into());
                i += 1;
                continue;
            };
            // The run: consecutive writes with the same namespace and verb.
            let verb = verb(&first.write);
            if verb == Verb::Drop {
                out[i] = self.drop_collection(client, first).await?;
                i += 1;
                continue;
            }
            let mut end = i + 1;
            let mut statements = statement_count(&first.write);
            while end < ops.len() && statements < MAX_STATEMENTS {
                match ops[end] {
                    Op::Mongo(m)
                        if m.db == first.db
                            && m.coll == first.coll
                            && self::verb(&m.write) == verb =>
                    {
                        statements += statement_count(&m.write);
                        end += 1;
                    }
                    _ => break,
                }
            }
            let run: Vec<&MongoOp> = ops[i..end]
                .iter()
                .filter_map(|op| match op {
                    Op::Mongo(m) => Some(m.as_ref()),
                    Op::Redis(_) => None,
                })
                .collect();
            self.apply_run(client, &run, &mut out[i..end]).await?;
            i = end;
        }
        Ok(out)
    }

    /// Drops `op`'s collection. Not there is dropped; trouble reaching the
    /// target is "unavailable" (retried); any other refusal is the write's.
    async fn drop_collection(&self, client: &Client, op: &MongoOp) -> Result<Applied, TargetError> {
        let db = client.database(&op.db);
        match db.run_command(doc! { "drop": &op.coll }).await {
            Ok(_) => Ok(Applied::Ok),
            Err(e) if is_namespace_not_found(&e) => Ok(Applied::Ok),
            Err(e) if is_transient(&e) => Err(self.unavailable(e)),
            Err(e) => Ok(Applied::Refused(e.to_string())),
        }
    }

    /// Applies one run (same namespace, same verb), resuming after each
    /// refused write.
    async fn apply_run(
        &self,
        client: &Client,
        run: &[&MongoOp],
        out: &mut [Applied],
    ) -> Result<(), TargetError> {
        let db = client.database(&run[0].db);
        let coll = run[0].coll.as_str();
        // Statements, each encoded once and tagged with the op it belongs
        // to: a chunk is a copy of their bytes, not of their documents.
        let mut stmts: Vec<(usize, RawDocumentBuf)> = Vec::new();
        for (n, op) in run.iter().enumerate() {
            let before = stmts.len();
            if let Err(e) = statements(&op.write, |d| stmts.push((n, d))) {
                // All of the write or none of it.
                stmts.truncate(before);
                out[n] = Applied::Refused(format!("cannot encode the write as BSON: {e}"));
            }
        }
        let mut start = 0;
        // After a write makes the target drop the connection while the
        // target still answers a ping, statements go one by one to find it.
        let mut isolate = false;
        let mut strikes = 0u32;
        while start < stmts.len() {
            // Cut the command at MAX_COMMAND_BYTES.
            let mut end = start;
            let mut bytes = 0;
            let verb = verb(&run[0].write);
            let max_statements = match verb {
                Verb::Insert => MAX_STATEMENTS,
                Verb::Update | Verb::Delete | Verb::Drop => MAX_MATCHING_STATEMENTS,
            };
            while end < stmts.len()
                && (end == start
                    || (!isolate && bytes < MAX_COMMAND_BYTES && end - start < max_statements))
            {
                bytes += stmts[end].1.as_bytes().len();
                end += 1;
            }
            let mut chunk = RawArrayBuf::new();
            for (_, d) in &stmts[start..end] {
                chunk.push(d);
            }
            let command = match verb {
                Verb::Insert => rawdoc! { "insert": coll, "documents": chunk, "ordered": true },
                Verb::Update => rawdoc! { "update": coll, "updates": chunk, "ordered": true },
                // A drop has no statements (`apply` sends it on its own),
                // so it never gets here.
                Verb::Delete | Verb::Drop => {
                    rawdoc! { "delete": coll, "deletes": chunk, "ordered": true }
                }
            };
            let reply = match db.run_raw_command(command).await {
                Ok(r) => {
                    strikes = 0;
                    r
                }
                Err(e) if is_transient(&e) => {
                    // Down, or a poison write? A target that answers a ping
                    // right after is up: the write itself is the trouble.
                    if db.run_command(doc! { "ping": 1 }).await.is_err() {
                        return Err(self.unavailable(e));
                    }
                    if end - start > 1 {
                        tracing::warn!(target = %self.name, "the target dropped a write command but answers pings; sending writes one by one to find the culprit");
                        isolate = true;
                        continue;
                    }
                    strikes += 1;
                    if strikes < 2 {
                        continue;
                    }
                    let (n, _) = stmts[start];
                    out[n] = Applied::Refused(format!(
                        "the target closed the connection on this write twice while answering pings (a value it cannot store?): {e}"
                    ));
                    strikes = 0;
                    start = end;
                    continue;
                }
                Err(e) => {
                    // The command as a whole was refused (bad namespace, …):
                    // every write in this chunk is refused with the reason.
                    for (n, _) in &stmts[start..end] {
                        out[*n] = Applied::Refused(e.to_string());
                    }
                    start = end;
                    continue;
                }
            };
            if let Ok(wce) = reply.get_document("writeConcernError") {
                return Err(self.unavailable(format!("write concern error: {wce}")));
            }
            let first_error = reply
                .get_array("writeErrors")
                .ok()
                .and_then(|errs| errs.first())
                .and_then(Bson::as_document);
            match first_error {
                None => start = end,
                Some(err) => {
                    let index = err
                        .get_i32("index")
                        .ok()
                        .map(|v| v as usize)
                        .or_else(|| err.get_i64("index").ok().map(|v| v as usize))
                        .unwrap_or(0);
                    let code = err.get_i32("code").unwrap_or(0);
                    let msg = err.get_str("errmsg").unwrap_or("write error");
                    let at = (start + index).min(end - 1);
                    let (n, _) = stmts[at];
                    if code == DUPLICATE_KEY && verb == Verb::Insert {
                        metrics::counter!(stats::SERVER_MONGO_DUPLICATE_KEYS, "target" => self.name.clone())
                            .increment(1);
                        tracing::warn!(target = %self.name, "insert met an existing _id (a redelivered write?): {msg}");
                    } else {
                        out[n] = Applied::Refused(format!("code {code}: {msg}"));
                    }
                    start = at + 1;
                }
            }
        }
        Ok(())
    }
}

fn verb(w: &MongoWrite) -> Verb {
    match w {
        MongoWrite::InsertOne { .. } | MongoWrite::InsertMany { .. } => Verb::Insert,
        MongoWrite::UpdateOne { .. }
        | MongoWrite::UpdateMany { .. }
        | MongoWrite::ReplaceOne { .. } => Verb::Update,
        MongoWrite::DeleteOne { .. } | MongoWrite::DeleteMany { .. } => Verb::Delete,
        MongoWrite::Drop => Verb::Drop,
    }
}

fn statement_count(w: &MongoWrite) -> usize {
    match w {
        MongoWrite::InsertMany { documents } => documents.len(),
        _ => 1,
    }
}

/// The wire statements of one write, in order, encoded.
fn statements(
    w: &MongoWrite,
    mut push: impl FnMut(RawDocumentBuf),
) -> Result<(), bson::error::Error> {
    match w {
        MongoWrite::InsertOne { document } => push(raw(document)?),
        MongoWrite::InsertMany { documents } => {
            for d in documents {
                push(raw(d)?);
            }
        }
        MongoWrite::UpdateOne {
            filter,
            update: u,
            upsert,
        } => push(update(filter, RawUpdate::of(u), false, *upsert)?),
        MongoWrite::UpdateMany {
            filter,
            update: u,
            upsert,
        } => push(update(filter, RawUpdate::of(u), true, *upsert)?),
        MongoWrite::ReplaceOne {
            filter,
            replacement,
            upsert,
        } => push(update(filter, RawUpdate::Doc(replacement), false, *upsert)?),
        MongoWrite::DeleteOne { filter } => push(rawdoc! { "q": raw(filter)?, "limit": 1 }),
        MongoWrite::DeleteMany { filter } => push(rawdoc! { "q": raw(filter)?, "limit": 0 }),
        // Applied on its own (`drop_collection`): no statement.
        MongoWrite::Drop => {}
    }
    Ok(())
}

fn raw(d: &Document) -> Result<RawDocumentBuf, bson::error::Error> {
    RawDocumentBuf::try_from(d)
}

/// An update (or replace) statement.
fn update(
    filter: &Document,
    u: RawUpdate<'_>,
    multi: bool,
    upsert: bool,
) -> Result<RawDocumentBuf, bson::error::Error> {
    let mut s = rawdoc! { "q": raw(filter)? };
    match u {
        RawUpdate::Doc(d) => s.append(cstr!("u"), raw(d)?),
        RawUpdate::Pipeline(p) => {
            let mut stages = RawArrayBuf::new();
            for d in p {
                stages.push(raw(d)?);
            }
            s.append(cstr!("u"), stages);
        }
    }
    s.append(cstr!("multi"), multi);
    s.append(cstr!("upsert"), upsert);
    Ok(s)
}

/// The `u` of an update statement: a document or a pipeline's stages.
enum RawUpdate<'a> {
    Doc(&'a Document),
    Pipeline(&'a [Document]),
}

impl<'a> RawUpdate<'a> {
    fn of(u: &'a MongoUpdate) -> Self {
        match u {
            MongoUpdate::Document(d) => RawUpdate::Doc(d),
            MongoUpdate::Pipeline(p) => RawUpdate::Pipeline(p),
        }
    }
}

/// The namespace to drop is not there (MongoDB before 7.0, FerretDB).
fn is_namespace_not_found(e: &MongoError) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND)
}

/// Network trouble, elections, shutdowns: retry later, hold the ack.
fn is_transient(e: &MongoError) -> bool {
    if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. }
        | ErrorKind::Shutdown => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(w: &MongoWrite) -> Vec<Document> {
        let mut out = Vec::new();
        statements(w, |d| out.push(Document::try_from(d).expect("valid BSON"))).expect("encodable");
        out
    }

    #[test]
    fn each_write_becomes_the_statements_of_its_command() {
        let filter = doc! { "_id": 1 };
        let set = doc! { "$set": { "n": 2 } };
        let stage = doc! { "$set": { "m": "$n" } };
        let cases = [
            (
                MongoWrite::InsertMany {
                    documents: vec![doc! { "_id": 1 }, doc! { "_id": 2, "a": [1, "x"] }],
                },
                vec![doc! { "_id": 1 }, doc! { "_id": 2, "a": [1, "x"] }],
            ),
            (
                MongoWrite::UpdateOne {
                    filter: filter.clone(),
                    update: MongoUpdate::Document(set.clone()),
                    upsert: true,
                },
                vec![
                    doc! { "q": filter.clone(), "u": set.clone(), "multi": false, "upsert": true },
                ],
            ),
            (
                MongoWrite::UpdateMany {
                    filter: filter.clone(),
                    update: MongoUpdate::Pipeline(vec![stage.clone()]),
                    upsert: false,
                },
                vec![
                    doc! { "q": filter.clone(), "u": [stage.clone()], "multi": true, "upsert": false },
                ],
            ),
            (
                MongoWrite::ReplaceOne {
                    filter: filter.clone(),
                    replacement: doc! { "n": 3 },
                    upsert: false,
                },
                vec![
                    doc! { "q": filter.clone(), "u": { "n": 3 }, "multi": false, "upsert": false },
                ],
            ),
            (
                MongoWrite::DeleteOne {
                    filter: filter.clone(),
                },
                vec![doc! { "q": filter.clone(), "limit": 1 }],
            ),
            (
                MongoWrite::DeleteMany {
                    filter: filter.clone(),
                },
                vec![doc! { "q": filter.clone(), "limit": 0 }],
            ),
            (MongoWrite::Drop, vec![]),
        ];
        for (write, want) in cases {
            assert_eq!(encoded(&write), want, "{}", write.name());
        }
    }

    #[test]
    fn a_write_that_cannot_be_encoded_is_an_error_after_its_good_statements() {
        // BSON keys cannot hold a NUL byte.
        let mut bad = Document::new();
        bad.insert("a\0b", 1);
        let write = MongoWrite::InsertMany {
            documents: vec![doc! { "_id": 1 }, bad],
        };
        let mut got = 0;
        assert!(statements(&write, |_| got += 1).is_err());
        // The first document was pushed: `apply_run` takes it back, so that
        // a refused write is applied not at all.
        assert_eq!(got, 1);
    }
}
