//! The pieces of applying records that the TCP session and the NATS
//! consumers share: decode and route a batch ([`prepare_batch`]), apply one
//! target's share with retries ([`apply_with_retry`]), and the dead-letter
//! file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use syncs_engine::apply::dead_letter::Origin;
use syncs_engine::apply::{Applied, Run, RunId, Target};
use syncs_engine::op::Op;
use syncs_engine::route::{route, Outcome};
use syncs_engine::stats;
use syncs_engine::wire::client::decode_payload;
use tokio_util::sync::CancellationToken;

use super::rules::Snapshot;
use super::Shared;
use crate::backoff::Backoff;

/// The batch could not be finished (shutdown while a target was down).
#[derive(Debug, thiserror::Error)]
#[error("interrupted before the batch was applied; not acknowledged")]
pub(crate) struct Interrupted;

/// Records applied in one run at most: the TCP session gathers batches and
/// a lane its queued entries up to it; a NATS consumer takes runs of it.
pub(crate) const RUN_RECORDS: usize = 8192;

/// Memory an operation takes beside its record's bytes (the decoded
/// command's vectors and slices), counted against a lane's backlog so that
/// `target_backlog` bounds memory, not only payload.
const OP_OVERHEAD: usize = 256;

/// A batch decoded and routed, ready to apply: the operations each target
/// receives, with the rules snapshot that routed them.
pub(crate) struct Prepared {
    pub(crate) snap: Arc<Snapshot>,
    /// Per target of `snap`: its operations, and the bytes of the records
    /// they came from.
    pub(crate) per_target: Vec<(Vec<(u64, Op)>, usize)>,
    pub(crate) started: Instant,
}

/// The first half of a batch: decodes and routes every record after
/// `skip_upto`. Records after `seen_upto` are new: undecodable and refused
/// ones go to the dead-letter file here, drops and routes are counted here.
/// Records up to `seen_upto` were prepared before (sent again for a target
/// that lagged): they are only routed again.
pub(crate) async fn prepare_batch(
    shared: &Shared,
    snap: Arc<Snapshot>,
    source: &str,
    skip_upto: u64,
    seen_upto: u64,
    first_seq: u64,
    records: &[Bytes],
) -> Prepared {
    let started = Instant::now();
    let mut per_target: Vec<(Vec<(u64, Op)>, usize)> =
        (0..snap.targets.len()).map(|_| (Vec::new(), 0)).collect();
    // Operations routed per (rule, target), counted once per batch.
    let mut routed: Vec<((Option<syncs_dsl::RuleId>, syncs_dsl::TargetId), u64)> = Vec::new();
    // Counted once per batch too: a registry lookup per record was ~9% of
    // the server's CPU.
    let (mut duplicates, mut received) = (0u64, 0u64);
    for (i, payload) in records.iter().enumerate() {
        let seq = first_seq + i as u64;
        if seq <= skip_upto {
            duplicates += 1;
            continue;
        }
        let new = seq > seen_upto;
        if new {
            received += 1;
        }
        let op = match decode_payload(payload) {
            Ok(op) => op,
            Err(e) => {
                if new {
                    metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => e.reason())
                        .increment(1);
                    tracing::warn!(%source, seq, "record refused: {e}");
                    dead_letter(
                        shared,
                        source,
                        seq,
                        None,
                        Err(payload),
                        "undecodable",
                        &e.to_string(),
                    )
                    .await;
                }
                continue;
            }
        };
        match route(&snap.rules, op) {
            Outcome::Refused(reason) => {
                if new {
                    tracing::warn!(%source, seq, "operation refused by routing: {reason}");
                    // Routing took the operation: decode it again for the
                    // dead letter (rare; the same bytes decoded before).
                    let op = decode_payload(payload);
                    let what = op.as_ref().map_err(|_| payload);
                    dead_letter(shared, source, seq, None, what, "unroutable", &reason).await;
                }
            }
            Outcome::Routed { ops, dropped } => {
                if let Some(d) = dropped.filter(|_| new) {
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
                    if new {
                        match routed.iter_mut().find(|(k, _)| *k == (r.rule, r.target)) {
                            Some((_, n)) => *n += 1,
                            None => routed.push(((r.rule, r.target), 1)),
                        }
                    }
                    if let Some((list, bytes)) = per_target.get_mut(usize::from(r.target.0)) {
                        if list.capacity() == 0 {
                            // Room for the rest of the batch at once.
                            list.reserve(records.len() - i);
                        }
                        list.push((seq, r.op));
                        *bytes += payload.len() + OP_OVERHEAD;
                    }
                }
            }
        }
    }
    if duplicates > 0 {
        metrics::counter!(stats::SERVER_DUPLICATES).increment(duplicates);
    }
    if received > 0 {
        metrics::counter!(stats::SERVER_RECORDS).increment(received);
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
        started,
    }
}

/// Since when a target has been failing, as one lane sees it.
#[derive(Debug, Default)]
pub(crate) struct DownSince(Mutex<Option<Instant>>);

impl DownSince {
    /// An attempt that began at `attempt` failed: the target has been
    /// down since then at least (a Mongo attempt can take seconds to fail).
    fn failed(&self, attempt: Instant) {
        if let Ok(mut since) = self.0.lock() {
            since.get_or_insert(attempt);
        }
    }

    fn recovered(&self) {
        if let Ok(mut since) = self.0.lock() {
            *since = None;
        }
    }

    /// How long the target has been failing; `None`: it is not.
    pub(crate) fn duration(&self) -> Option<Duration> {
        self.0
            .lock()
            .ok()
            .and_then(|since| since.map(|t| t.elapsed()))
    }
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

/// Applies `run` on one target, retrying while it is unavailable; `next`,
/// the run the caller applies after it, may be sent ahead
/// ([`Target::apply_then`]). A run that keeps failing while the target
/// answers is applied one sequence at a time, and a sequence that still
/// fails so is dead-lettered with the target's last error: one bad record
/// never stops a stream for ever.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_with_retry(
    shared: &Shared,
    source: &str,
    stream: u64,
    target: &Target,
    run: Run<'_>,
    next: Option<Run<'_>>,
    stop: &CancellationToken,
    down: &DownSince,
) -> Result<(), Interrupted> {
    let started = Instant::now();
    let items = run.items;
    let results = match retry(source, stream, target, run, next, stop, down).await? {
        Attempt::Done(results) => results,
        Attempt::Suspect(reason) => {
            tracing::warn!(%source, target = target.name(), "{reason}; applying the run one record at a time to find the one at fault");
            let mut results = Vec::with_capacity(items.len());
            for group in items.chunk_by(|a, b| a.0 == b.0) {
                let one = Run::new(RunId::NONE, group);
                match retry(source, stream, target, one, None, stop, down).await? {
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
    // Counted once per run: a registry lookup (and a label string) per
    // record was ~3% of the server's CPU.
    let (mut redis, mut mongo) = (0u64, 0u64);
    for ((seq, op), result) in items.iter().zip(results) {
        match result {
            Applied::Ok => match op {
                Op::Redis(_) => redis += 1,
                Op::Mongo(_) => mongo += 1,
            },
            Applied::Refused(reason) => {
                tracing::warn!(%source, seq, target = target.name(), "target refused: {reason}");
                dead_letter(
                    shared,
                    source,
                    *seq,
                    Some(target.name()),
                    Ok(op),
                    "refused",
                    &reason,
                )
                .await;
            }
        }
    }
    for (kind, n) in [("redis", redis), ("mongo", mongo)] {
        if n > 0 {
            metrics::counter!(stats::SERVER_APPLIED, "target" => target.name().to_owned(), "kind" => kind)
                .increment(n);
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
    run: Run<'_>,
    next: Option<Run<'_>>,
    stop: &CancellationToken,
    down: &DownSince,
) -> Result<Attempt, Interrupted> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut attempts = 0u32;
    let mut suspects = 0u32;
    loop {
        let attempt = Instant::now();
        let e = match target.apply_then(stream, run, next).await {
            Ok(results) => {
                down.recovered();
                if attempts > 0 {
                    tracing::info!(%source, target = target.name(), attempts, "target back; run applied");
                }
                return Ok(Attempt::Done(results));
            }
            Err(e) => e,
        };
        attempts += 1;
        down.failed(attempt);
        let wait = backoff.next_wait();
        metrics::counter!(stats::SERVER_TARGET_RETRIES, "target" => target.name().to_owned())
            .increment(1);
        if attempts == 1 || attempts.is_power_of_two() {
            tracing::warn!(%source, attempts, "{e}; retrying in {wait:?}, holding the acknowledgement");
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
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn dead_letter(
    shared: &Shared,
    source: &str,
    seq: u64,
    target: Option<&str>,
    op: Result<&Op, &Bytes>,
    kind: &'static str,
    reason: &str,
) {
    let label = target.unwrap_or("none").to_owned();
    // A refusal for a cluster target's slots is named apart, whoever made it
    // (the router, or the applier's own check).
    let kind = if reason.starts_with("cross_slot:") {
        "cross_slot"
    } else {
        kind
    };
    metrics::counter!(stats::SERVER_DEAD_LETTERED, "target" => label, "reason" => kind)
        .increment(1);
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
        // The line carries the operation: it is only in this log now.
        tracing::error!(%source, seq, path = %shared.dead_letters.path().display(), "{e}");
    }
}
