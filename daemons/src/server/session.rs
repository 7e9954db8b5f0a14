//! One proxy connection: handshake, then batches applied in order and
//! acknowledged.
//!
//! A stream belongs to one session at a time: a new connection with the
//! same stream id (the proxy reconnected) cancels the old session, waits
//! until it has finished its batch in hand, and continues from the last
//! applied sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, OptionFuture};
use futures::{SinkExt, StreamExt};
use syncs_engine::apply::dead_letter::Origin;
use syncs_engine::apply::{Applied, Target};
use syncs_engine::op::Op;
use syncs_engine::route::{route, Outcome};
use syncs_engine::stats;
use syncs_engine::wire::client::decode_payload;
use syncs_engine::wire::peer::{refuse, Message, PeerCodec, PeerError, MIN_VERSION, VERSION};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::rules::Snapshot;
use super::Shared;

/// Protocol overhead allowed above the largest record in one message.
const PEER_SLACK: u64 = 1 << 20;
/// Records gathered into one run from batches already received, at most.
const GATHER_RECORDS: usize = 8192;

/// How long a new connection has to say HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream's place in the server.
#[derive(Debug, Default)]
pub struct StreamSlot {
    state: tokio::sync::Mutex<StreamState>,
    owner: std::sync::Mutex<Option<CancellationToken>>,
}

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) last_applied: u64,
}

/// The batch could not be finished (shutdown while a target was down).
#[derive(Debug, thiserror::Error)]
#[error("interrupted before the batch was applied; not acknowledged")]
pub(crate) struct Interrupted;

/// Runs one session on a connection whose transport (TLS or plaintext) is
/// set up: HELLO, then AUTH and the token check, then WELCOME and batches.
pub async fn run(
    socket: crate::security::BoxIo,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let max = u64::from(shared.max_frame) * 2 + PEER_SLACK;
    let mut framed = Framed::new(socket, PeerCodec::new(max));
    let hello = tokio::time::timeout(HELLO_TIMEOUT, framed.next())
        .await
        .context("no HELLO in time")?;
    let (stream, name, version) = match hello {
        Some(Ok(Message::Hello {
            version,
            stream,
            name,
        })) => {
            if !(MIN_VERSION..=VERSION).contains(&version) {
                let reason = format!(
                    "this server speaks protocol versions {MIN_VERSION} to {VERSION}, not {version}"
                );
                let _ = framed
                    .send(Message::Refuse {
                        code: refuse::BAD_VERSION,
                        reason: reason.clone(),
                    })
                    .await;
                bail!("{peer}: {reason}");
            }
            // Refused here (REFUSE sent, counted) before any BATCH is read.
            shared
                .security
                .authenticate(&mut framed, version, peer)
                .await?;
            (stream, name, version)
        }
        Some(Ok(other)) => {
            let _ = framed
                .send(Message::Refuse {
                    code: refuse::BAD_MESSAGE,
                    reason: "expected HELLO".into(),
                })
                .await;
            bail!("{peer}: expected HELLO, got {other:?}");
        }
        Some(Err(e)) => bail!("{peer}: bad HELLO: {e}"),
        None => return Ok(()),
    };
    let source = format!("{name}/{stream:016x}");
    let slot = {
        let mut streams = shared.streams.lock().await;
        Arc::clone(streams.entry(stream).or_default())
    };
    let mine = shared.stop.child_token();
    if let Ok(mut owner) = slot.owner.lock() {
        if let Some(old) = owner.replace(mine.clone()) {
            old.cancel();
        }
    }
    let mut state = slot.state.lock().await;
    framed
        .send(Message::Welcome {
            // The proxy's own version: a version 1 proxy expects 1.
            version,
            last_applied: state.last_applied,
        })
        .await?;
    tracing::info!(%peer, %source, last_applied = state.last_applied, "proxy connected");

    // Two stages: while one batch is applied (mostly waiting for the
    // targets), the next is decoded and routed. Batches are applied and
    // acknowledged strictly in order.
    let mut running: Option<BoxFuture<'static, (Result<(), Interrupted>, u64)>> = None;
    let mut queued: Option<Prepared> = None;
    let mut prepared_upto = state.last_applied;
    let source: Arc<str> = source.into();
    let start = |prepared: Prepared| -> BoxFuture<'static, (Result<(), Interrupted>, u64)> {
        let (shared, source, stop) = (Arc::clone(&shared), Arc::clone(&source), mine.clone());
        Box::pin(async move {
            let result = execute_batch(&shared, &source, stream, &prepared, &stop).await;
            (result, prepared.last)
        })
    };
    // A message read while gathering batches, to handle next.
    let mut held = None;
    // Every way out of this loop (the proxy gone, a read or write error, a
    // bad message, a stop) leads to the same place below, which finishes the
    // runs in hand: a run whose EXEC may have been sent is never dropped.
    let outcome: anyhow::Result<()> = async {
        loop {
            let msg = if held.is_some() && queued.is_none() && !mine.is_cancelled() {
                held.take().flatten()
            } else {
                tokio::select! {
                // A stop lets the batch in hand finish and be acknowledged.
                _ = mine.cancelled(), if running.is_none() => break,
                Some((result, last)) = OptionFuture::from(running.as_mut()) => {
                    running = queued.take().map(&start);
                    result?;
                    state.last_applied = state.last_applied.max(last);
                    framed
                        .send(Message::Ack {
                            seq: state.last_applied,
                        })
                        .await?;
                    continue;
                }
                m = framed.next(), if held.is_none() && queued.is_none() && !mine.is_cancelled() => m,
                }
            };
            match msg {
                None => break,
                Some(Ok(Message::Batch { records, .. })) if records.is_empty() => {
                    framed
                        .send(Message::Ack {
                            seq: state.last_applied,
                        })
                        .await?;
                }
                Some(Ok(Message::Batch {
                    first_seq,
                    mut records,
                })) => {
                    // Batches already waiting join this one (in sequence), so a
                    // busy server applies fewer, larger runs.
                    while records.len() < GATHER_RECORDS {
                        match framed.next().now_or_never() {
                            None => break,
                            Some(Some(Ok(Message::Batch {
                                first_seq: next,
                                records: more,
                            }))) if !more.is_empty() && next == first_seq + records.len() as u64 => {
                                records.extend(more)
                            }
                            Some(other) => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    if first_seq > prepared_upto + 1 && prepared_upto != 0 {
                        tracing::error!(
                            %source, first_seq, last_applied = prepared_upto,
                            "sequence gap: records {}..{} never arrived (a proxy whose machine \
                             crashed skips the sequences it may have used: see its log)",
                            prepared_upto + 1, first_seq - 1
                        );
                    }
                    let prepared =
                        prepare_batch(&shared, &source, prepared_upto, first_seq, &records).await;
                    prepared_upto = prepared_upto.max(prepared.last);
                    if running.is_none() {
                        running = Some(start(prepared));
                    } else {
                        queued = Some(prepared);
                    }
                }
                Some(Ok(other)) => {
                    let _ = framed
                        .send(Message::Refuse {
                            code: refuse::BAD_MESSAGE,
                            reason: "expected BATCH".into(),
                        })
                        .await;
                    bail!("{source}: unexpected {other:?}");
                }
                Some(Err(PeerError::Io(e))) => {
                    // Reset or cut: nothing was refused, the proxy
                    // reconnects and WELCOME tells it where to go on.
                    metrics::counter!(stats::SERVER_CONNECTION_ERRORS).increment(1);
                    bail!("{source}: connection lost: {e}");
                }
                Some(Err(e)) => {
                    metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => "bad_peer_message")
                        .increment(1);
                    let _ = framed
                        .send(Message::Refuse {
                            code: refuse::BAD_MESSAGE,
                            reason: e.to_string(),
                        })
                        .await;
                    bail!("{source}: {e}");
                }
            }
        }
        Ok(())
    }
    .await;
    // The proxy is gone (or the session stops): finish the batches in
    // hand, the prepared one too (its dead letters are already written:
    // preparing it again after a resend would write them twice). Without
    // a connection there is no ACK; WELCOME tells the proxy next time.
    for batch in [running, queued.map(&start)].into_iter().flatten() {
        let (result, last) = batch.await;
        if result.is_err() {
            break;
        }
        state.last_applied = state.last_applied.max(last);
    }
    tracing::info!(%source, last_applied = state.last_applied, "proxy session closed");
    outcome
}

/// Decodes, routes and applies one batch. Returns only when every record
/// is applied, dead-lettered or dropped by rule — or with `Interrupted`.
pub(crate) async fn apply_batch(
    shared: &Shared,
    source: &str,
    stream: u64,
    state: &mut StreamState,
    first_seq: u64,
    records: &[Bytes],
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    let prepared = prepare_batch(shared, source, state.last_applied, first_seq, records).await;
    execute_batch(shared, source, stream, &prepared, stop).await
}

/// A batch decoded and routed, ready to apply: the operations each target
/// receives, with the rules snapshot that routed them.
pub(crate) struct Prepared {
    snap: Arc<Snapshot>,
    per_target: Vec<Vec<(u64, Op)>>,
    /// The batch's last sequence.
    last: u64,
    started: std::time::Instant,
}

/// The first half of a batch: decodes and routes every record after
/// `applied`; undecodable and refused records go to the dead-letter
/// file here, drops are counted here.
pub(crate) async fn prepare_batch(
    shared: &Shared,
    source: &str,
    applied: u64,
    first_seq: u64,
    records: &[Bytes],
) -> Prepared {
    let started = std::time::Instant::now();
    let snap = shared.rules.current();
    let mut per_target: Vec<Vec<(u64, Op)>> = (0..snap.targets.len()).map(|_| Vec::new()).collect();
    // Operations routed per (rule, target), counted once per batch.
    let mut routed: Vec<((Option<syncs_dsl::RuleId>, syncs_dsl::TargetId), u64)> = Vec::new();
    for (i, payload) in records.iter().enumerate() {
        let seq = first_seq + i as u64;
        if seq <= applied {
            metrics::counter!(stats::SERVER_DUPLICATES).increment(1);
            continue;
        }
        metrics::counter!(stats::SERVER_RECORDS).increment(1);
        let op = match decode_payload(payload) {
            Ok(op) => op,
            Err(e) => {
                metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => e.reason()).increment(1);
                tracing::warn!(%source, seq, "record refused: {e}");
                dead_letter(shared, source, seq, None, Err(payload), &e.to_string()).await;
                continue;
            }
        };
        match route(&snap.rules, &op) {
            Outcome::Refused(reason) => {
                tracing::warn!(%source, seq, "operation refused by routing: {reason}");
                dead_letter(shared, source, seq, None, Ok(&op), &reason).await;
            }
            Outcome::Routed { ops, dropped } => {
                if let Some(d) = dropped {
                    let rule = d
                        .rule
                        .map(|r| snap.rules.rule_name(r).to_owned())
                        .unwrap_or_else(|| "default".to_owned());
                    let reason = format!("{:?}", d.reason).to_lowercase();
                    tracing::debug!(%source, seq, %rule, %reason, "dropped by rule");
                    metrics::counter!(stats::SERVER_DROPPED, "rule" => rule, "reason" => reason)
                        .increment(1);
                }
                for r in ops {
                    match routed.iter_mut().find(|(k, _)| *k == (r.rule, r.target)) {
                        Some((_, n)) => *n += 1,
                        None => routed.push(((r.rule, r.target), 1)),
                    }
                    if let Some(list) = per_target.get_mut(usize::from(r.target.0)) {
                        list.push((seq, r.op));
                    }
                }
            }
        }
    }
    for ((rule, target), n) in routed {
        let rule = rule
            .map_or("default", |id| snap.rules.rule_name(id))
            .to_owned();
        let target = snap.rules.target(target).name.clone();
        metrics::counter!(stats::SERVER_ROUTED, "rule" => rule, "target" => target).increment(n);
    }
    Prepared {
        snap,
        per_target,
        last: first_seq + (records.len() as u64).saturating_sub(1),
        started,
    }
}

/// The second half of a batch: applies each target's share (targets in
/// parallel). Returns only when every operation is applied or
/// dead-lettered — or with `Interrupted`.
pub(crate) async fn execute_batch(
    shared: &Shared,
    source: &str,
    stream: u64,
    prepared: &Prepared,
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    let Prepared {
        snap,
        per_target,
        started,
        ..
    } = prepared;
    let jobs = per_target
        .iter()
        .enumerate()
        .filter(|(_, items)| !items.is_empty())
        .filter_map(|(t, items)| {
            let target = snap.targets.get(syncs_dsl::TargetId(t as u16))?;
            Some(apply_with_retry(
                shared, source, stream, target, items, stop,
            ))
        });
    let results = futures::future::join_all(jobs).await;
    if results.iter().any(Result::is_err) {
        return Err(Interrupted);
    }
    metrics::histogram!(stats::SERVER_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Consecutive failures of one run that may be the run's own doing, with
/// the target answering a probe after each, before the run is taken apart
/// (and a single record given up).
const SUSPECT_LIMIT: u32 = 3;

/// What retrying a run came to.
enum Attempt {
    /// Applied: one outcome per item.
    Done(Vec<Applied>),
    /// The run failed [`SUSPECT_LIMIT`] times in a way that may be its own
    /// doing while the target kept answering: the reason.
    Suspect(String),
}

/// Applies `items` on one target, retrying while it is unavailable. A run
/// that keeps failing while the target answers is applied one sequence at
/// a time, and a sequence that still fails so is dead-lettered with the
/// target's last error: one bad record never stops a stream for ever.
async fn apply_with_retry(
    shared: &Shared,
    source: &str,
    stream: u64,
    target: &Target,
    items: &[(u64, Op)],
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    let started = std::time::Instant::now();
    let results = match retry(source, stream, target, items, stop).await? {
        Attempt::Done(results) => results,
        Attempt::Suspect(reason) => {
            tracing::warn!(%source, target = target.name(), "{reason}; applying the run one record at a time to find the one at fault");
            let mut results = Vec::with_capacity(items.len());
            for group in items.chunk_by(|a, b| a.0 == b.0) {
                match retry(source, stream, target, group, stop).await? {
                    Attempt::Done(r) => results.extend(r),
                    Attempt::Suspect(reason) => results.extend(group.iter().map(|_| {
                        Applied::Refused(format!(
                            "failed {SUSPECT_LIMIT} times on this record while the target answered: {reason}"
                        ))
                    })),
                }
            }
            results
        }
    };
    metrics::histogram!(stats::SERVER_APPLY_SECONDS, "target" => target.name().to_owned())
        .record(started.elapsed().as_secs_f64());
    let kind = |op: &Op| match op {
        Op::Redis(_) => "redis",
        Op::Mongo(_) => "mongo",
    };
    for ((seq, op), result) in items.iter().zip(results) {
        match result {
            Applied::Ok => {
                metrics::counter!(stats::SERVER_APPLIED, "target" => target.name().to_owned(), "kind" => kind(op))
                    .increment(1);
            }
            Applied::Refused(reason) => {
                tracing::warn!(%source, seq, target = target.name(), "target refused: {reason}");
                dead_letter(shared, source, *seq, Some(target.name()), Ok(op), &reason).await;
            }
        }
    }
    Ok(())
}

/// Applies one run until it is applied, the stream stops, or it looks like
/// the run itself is at fault.
async fn retry(
    source: &str,
    stream: u64,
    target: &Target,
    items: &[(u64, Op)],
    stop: &CancellationToken,
) -> Result<Attempt, Interrupted> {
    let ops: Vec<(u64, &Op)> = items.iter().map(|(seq, op)| (*seq, op)).collect();
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u32;
    let mut suspects = 0u32;
    loop {
        let e = match target.apply(stream, &ops).await {
            Ok(results) => {
                if attempts > 0 {
                    tracing::info!(%source, target = target.name(), attempts, "target back; run applied");
                }
                return Ok(Attempt::Done(results));
            }
            Err(e) => e,
        };
        attempts += 1;
        metrics::counter!(stats::SERVER_TARGET_RETRIES, "target" => target.name().to_owned())
            .increment(1);
        if attempts == 1 || attempts.is_power_of_two() {
            tracing::warn!(%source, attempts, "{e}; retrying in {backoff:?}, holding the acknowledgement");
        }
        // A run that failed "suspiciously" while the target answers a probe
        // counts against the run; any other failure starts the count again.
        let answers = e.suspect
            && tokio::select! {
                _ = stop.cancelled() => return Err(Interrupted),
                probe = target.probe() => probe.is_ok(),
            };
        suspects = if answers { suspects + 1 } else { 0 };
        if suspects >= SUSPECT_LIMIT {
            return Ok(Attempt::Suspect(e.reason));
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Interrupted),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn dead_letter(
    shared: &Shared,
    source: &str,
    seq: u64,
    target: Option<&str>,
    op: Result<&Op, &Bytes>,
    reason: &str,
) {
    let label = target.unwrap_or("none").to_owned();
    metrics::counter!(stats::SERVER_DEAD_LETTERED, "target" => label).increment(1);
    let origin = Origin {
        source,
        seq,
        target,
    };
    if let Err(e) = shared
        .dead_letters
        .record(&origin, op.map_err(|b| &b[..]), reason)
        .await
    {
        tracing::error!(
            %source, seq, path = %shared.dead_letters.path().display(),
            "cannot write the dead-letter file: {e}; the operation is only in this log: {reason}"
        );
    }
}
