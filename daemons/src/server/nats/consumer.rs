//! One target's way through one partition: a durable consumer of its own
//! (`p<partition>-<target>`), the sources it has seen, and their
//! checkpoints at this target.
//!
//! Each source's records are applied in sequence order, in runs of up to
//! [`RUN_RECORDS`] whatever the messages that carried them (one record per
//! message in format 1, many in format 2). Records that arrive ahead of a
//! missing one wait (the missing one is redelivered or resent); a message
//! whose records are all at or below the checkpoint is a duplicate,
//! acknowledged and skipped. A message is acknowledged once the checkpoint
//! covers its last record, so JetStream (and the purge, which follows the
//! consumers' ack floors) never lets go of a record not yet applied here.
//! Every record is decoded and routed by each target's consumer, which
//! applies only its own share; the accounting of a record (records
//! received, refusals to the dead-letter file, drops) is done once, by the
//! consumer of the rules' first target.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use syncs_engine::apply::{self, RunId};
use syncs_engine::op::Op;
use syncs_engine::stats;
use tokio_util::sync::CancellationToken;

use super::partition::NO_TARGET;
use super::Ctx;
use crate::nats::envelope::{self, Envelope, EnvelopeError};
use crate::nats::{self as common, NatsSettings};
use crate::server::batch::{apply_with_retry, prepare_batch, DownSince, RUN_RECORDS};
use crate::server::rules::Snapshot;

/// How often the gauges of a source are brought up to date, also while a
/// run waits for its target.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Bytes pulled at a time, at most (besides `batch` messages).
const PULL_BYTES: usize = 8 << 20;

/// One source's place at this target within the partition.
#[derive(Debug, Default)]
struct Source {
    label: String,
    /// The checkpoint's key in the applied bucket.
    key: String,
    /// Last sequence applied at this target (the checkpoint).
    applied: u64,
    /// The checkpoint's KV revision (None: no key yet).
    revision: Option<u64>,
    /// Messages received whose records are not all applied, by their first
    /// and last record (the same records carried twice, as after a resend,
    /// are one piece with two deliveries).
    held: BTreeMap<(u64, u64), Piece>,
    /// Records in `held`.
    held_records: u64,
    /// Since when the next record is missing while later ones wait.
    gap_since: Option<Instant>,
    /// Messages of the partition not yet delivered to this consumer, as of
    /// the last one delivered.
    pending: u64,
}

/// Consecutive records received in one message, with every delivery of it.
#[derive(Debug)]
struct Piece {
    records: Vec<Bytes>,
    /// Format 2: the source's record published before these (no record
    /// lies between): a hole below `first` down to it is no loss.
    prev: Option<u64>,
    /// When JetStream took it from the proxy (ms since the epoch).
    published_ms: u64,
    msgs: Vec<jetstream::Message>,
}

/// What a source can do next, from its checkpoint and held pieces.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Nothing is held.
    Nothing,
    /// A held piece has the next record: apply a run.
    Run,
    /// The sequences from the next one up to `first` - 1 were never used:
    /// go on from `first`.
    Jump { first: u64 },
    /// Records from the next one up to `upto` are missing; `first` is the
    /// first held after them.
    Gap { upto: u64, first: u64 },
}

/// A run taken from the held pieces: its records from `applied + 1` on,
/// the pieces it applies completely (acknowledged after the checkpoint),
/// and when its oldest record was published.
struct Run {
    records: Vec<Bytes>,
    done: Vec<((u64, u64), Piece)>,
    oldest_ms: Option<u64>,
}

impl Source {
    fn hold(&mut self, key: (u64, u64), piece: Piece) {
        match self.held.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.get_mut().msgs.extend(piece.msgs);
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                self.held_records += piece.records.len() as u64;
                e.insert(piece);
            }
        }
    }

    fn release(&mut self, key: &(u64, u64)) -> Option<Piece> {
        let piece = self.held.remove(key)?;
        self.held_records -= piece.records.len() as u64;
        Some(piece)
    }

    /// Takes the pieces whose records are all at or below the checkpoint.
    fn settled(&mut self) -> Vec<Piece> {
        let done: Vec<(u64, u64)> = self
            .held
            .range(..=(self.applied, u64::MAX))
            .filter(|(&(_, last), _)| last <= self.applied)
            .map(|(&k, _)| k)
            .collect();
        done.iter().filter_map(|k| self.release(k)).collect()
    }

    /// What stands between the checkpoint and the held records (call after
    /// [`Source::settled`]: then every piece starting at or before
    /// `applied + 1` has that record).
    fn next(&self) -> Next {
        if self
            .held
            .range(..=(self.applied + 1, u64::MAX))
            .next()
            .is_some()
        {
            return Next::Run;
        }
        match self.held.first_key_value() {
            None => Next::Nothing,
            // The proxy says no record lies between: its spool skipped
            // these sequences (a restart after a crash).
            Some((&(first, _), piece)) if piece.prev.is_some_and(|p| p <= self.applied) => {
                Next::Jump { first }
            }
            // With format 2 the missing records end at `prev`.
            Some((&(first, _), piece)) => Next::Gap {
                upto: piece.prev.unwrap_or(first - 1),
                first,
            },
        }
    }

    /// The records from `applied + 1` on while held pieces have them, at
    /// most `max`.
    fn take_run(&mut self, max: usize) -> Run {
        let mut run = Run {
            records: Vec::new(),
            done: Vec::new(),
            oldest_ms: None,
        };
        let mut expect = self.applied + 1;
        while run.records.len() < max {
            // Pieces starting at or before `expect`: those the run already
            // holds every record of are done, the one reaching furthest
            // feeds it.
            let mut best: Option<(u64, u64)> = None;
            let mut covered = Vec::new();
            for (&(first, last), _) in self.held.range(..=(expect, u64::MAX)) {
                if last < expect {
                    covered.push((first, last));
                } else if best.is_none_or(|(_, l)| last > l) {
                    best = Some((first, last));
                }
            }
            for k in covered {
                if let Some(p) = self.release(&k) {
                    run.done.push((k, p));
                }
            }
            let Some(key @ (first, last)) = best else {
                break;
            };
            let Some(piece) = self.held.get(&key) else {
                break;
            };
            run.oldest_ms.get_or_insert(piece.published_ms);
            let from = (expect - first) as usize;
            let n = ((last - expect + 1) as usize).min(max - run.records.len());
            run.records
                .extend_from_slice(&piece.records[from..from + n]);
            expect += n as u64;
            if expect > last {
                if let Some(p) = self.release(&key) {
                    run.done.push((key, p));
                }
            }
        }
        run
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the partition for `target` until `token` is cancelled or the
/// subscription fails; what is held and not applied goes back to
/// JetStream at once, for the next reader.
pub(super) async fn run(ctx: Arc<Ctx>, p: u16, target: String, token: CancellationToken) {
    let mut sources: HashMap<u64, Source> = HashMap::new();
    let down = DownSince::default();
    let reader = Reader {
        ctx: &ctx,
        p,
        target: &target,
        token: &token,
        down: &down,
    };
    let result = reader.consume(&mut sources).await;
    for s in sources.values() {
        for piece in s.held.values() {
            for m in &piece.msgs {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
    if let Err(e) = result {
        tracing::warn!(partition = p, %target, "consumer stopped: {e:#}");
    }
}

/// What one consumer task works with.
struct Reader<'a> {
    ctx: &'a Ctx,
    p: u16,
    target: &'a str,
    token: &'a CancellationToken,
    down: &'a DownSince,
}

impl Reader<'_> {
    async fn consume(&self, sources: &mut HashMap<u64, Source>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let p = self.p;
        let name = NatsSettings::consumer_name(p, self.target);
        let consumer = ctx
            .stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: ctx.conf.settings.partition_filter(p),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: ctx.conf.ack_wait,
                    max_ack_pending: ctx.conf.max_ack_pending,
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("consumer {name}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(ctx.conf.batch)
            .max_bytes_per_batch(PULL_BYTES)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("pulling from {name}"))?;
        let mut chunks = messages.ready_chunks(ctx.conf.batch);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let (chunk, ticked) = tokio::select! {
                _ = self.token.cancelled() => return Ok(()),
                _ = tick.tick() => (Vec::new(), true),
                c = chunks.next() => match c {
                    Some(c) => (c, false),
                    None => anyhow::bail!("the pull subscription of {name} ended"),
                },
            };
            let mut touched: Vec<u64> = Vec::new();
            for item in chunk {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(partition = p, "pulling: {e}");
                        continue;
                    }
                };
                let (env, records) = match read_message(&msg) {
                    Ok(v) => v,
                    Err(EnvelopeError::Newer(f)) => {
                        // Never terminated: a newer server reads it.
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        anyhow::bail!(
                            "message of format {f} from a newer syncs on {}: upgrade this sync_server",
                            msg.subject
                        );
                    }
                    Err(EnvelopeError::Bad(why)) => {
                        // Every target's consumer terminates it; one counts it.
                        if self.accounts(&ctx.shared.rules.current()) {
                            metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => "bad_nats_message")
                                .increment(1);
                            tracing::warn!(partition = p, subject = %msg.subject, "bad message ({why}); terminated");
                        }
                        let _ = msg.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                let src = match sources.entry(env.stream) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.load_source(env.stream, &env.name).await?)
                    }
                };
                if env.last() <= src.applied {
                    metrics::counter!(stats::SERVER_DUPLICATES).increment(u64::from(env.count));
                    let _ = msg.ack().await;
                    continue;
                }
                let (pending, published_ms) = match msg.info() {
                    Ok(i) => (
                        i.pending,
                        u64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                    ),
                    Err(_) => (src.pending, now_ms()),
                };
                src.pending = pending;
                src.hold(
                    (env.seq, env.last()),
                    Piece {
                        records,
                        prev: env.prev,
                        published_ms,
                        msgs: vec![msg],
                    },
                );
                if !touched.contains(&env.stream) {
                    touched.push(env.stream);
                }
            }
            // Sources with a gap are looked at on every tick too.
            for (s, src) in sources.iter() {
                if src.gap_since.is_some() && !touched.contains(s) {
                    touched.push(*s);
                }
            }
            for stream in touched {
                let Some(src) = sources.get_mut(&stream) else {
                    continue;
                };
                if !self.drain(stream, src).await? {
                    return Ok(());
                }
            }
            if ticked {
                for src in sources.values() {
                    self.gauges(src, 0, None);
                }
            }
        }
    }

    /// A source seen for the first time in this partition: its checkpoint
    /// at this target (at first, the joint one an older syncs wrote).
    async fn load_source(&self, stream: u64, name: &str) -> anyhow::Result<Source> {
        let key = common::checkpoint_key(stream, self.target);
        let (applied, revision) = match self.read(&key).await? {
            Some((n, revision)) => (n, Some(revision)),
            None => {
                let legacy = common::legacy_checkpoint_key(stream);
                (self.read(&legacy).await?.map_or(0, |(n, _)| n), None)
            }
        };
        Ok(Source {
            label: format!("{name}/{}", common::legacy_checkpoint_key(stream)),
            key,
            applied,
            revision,
            ..Default::default()
        })
    }

    /// A checkpoint and its revision; `None`: no such key (or deleted).
    async fn read(&self, key: &str) -> anyhow::Result<Option<(u64, u64)>> {
        let entry = self
            .ctx
            .applied
            .entry(key)
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading the checkpoint {key}"))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| anyhow!("checkpoint {key} is not a number"))?;
                Ok(Some((n, e.revision)))
            }
            // A deleted key still has a revision to compare against.
            Some(e) => Ok(Some((0, e.revision))),
            None => Ok(None),
        }
    }

    /// Whether this consumer does the accounting of each record: the
    /// rules' first target does (or the placeholder when there is none).
    fn accounts(&self, snap: &Snapshot) -> bool {
        match snap.rules.targets().first() {
            Some(t) => t.name == self.target,
            None => self.target == NO_TARGET,
        }
    }

    /// Brings the per-target gauges of `src` up to date; `in_flight`
    /// records (the oldest published at `oldest_ms`) are being applied.
    fn gauges(&self, src: &Source, in_flight: usize, oldest_ms: Option<u64>) {
        let labels = [
            ("source", src.label.clone()),
            ("target", self.target.to_owned()),
        ];
        let oldest = oldest_ms.or_else(|| src.held.values().next().map(|h| h.published_ms));
        let behind = oldest.map_or(0.0, |ms| now_ms().saturating_sub(ms) as f64 / 1000.0);
        metrics::gauge!(stats::SERVER_TARGET_POSITION, &labels).set(src.applied as f64);
        metrics::gauge!(stats::SERVER_TARGET_BEHIND_RECORDS, &labels)
            .set((src.pending + src.held_records + in_flight as u64) as f64);
        metrics::gauge!(stats::SERVER_TARGET_BEHIND_SECONDS, &labels).set(behind);
        metrics::gauge!(stats::SERVER_TARGET_DOWN_SECONDS, &labels)
            .set(self.down.duration().unwrap_or_default().as_secs_f64());
    }

    /// Applies the source's records that follow its checkpoint without a
    /// hole, moves the checkpoint, acknowledges. Returns false when stopped.
    async fn drain(&self, stream: u64, src: &mut Source) -> anyhow::Result<bool> {
        let ctx = self.ctx;
        let p = self.p;
        loop {
            ack_all(p, src.settled()).await;
            let expect = src.applied + 1;
            match src.next() {
                Next::Run => {}
                Next::Nothing => {
                    src.gap_since = None;
                    return Ok(true);
                }
                Next::Jump { first } => {
                    tracing::info!(
                        partition = p, source = %src.label, target = self.target,
                        "sequences {expect}..{} were never used by the source; going on",
                        first - 1
                    );
                    src.applied = first - 1;
                    continue;
                }
                Next::Gap { upto, first } => {
                    let since = *src.gap_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < ctx.conf.gap_timeout {
                        return Ok(true);
                    }
                    let missing = upto - src.applied;
                    tracing::error!(
                        partition = p, source = %src.label, target = self.target, missing,
                        "sequence gap: records {expect}..{upto} never arrived within {:?}; going on without them",
                        ctx.conf.gap_timeout
                    );
                    metrics::counter!(stats::SERVER_NATS_GAPS).increment(missing);
                    src.applied = first - 1;
                    continue;
                }
            }
            src.gap_since = None;
            let run = src.take_run(RUN_RECORDS);
            let first_seq = src.applied + 1;
            let last = first_seq + run.records.len() as u64 - 1;
            if !self
                .apply(stream, src, first_seq, &run.records, run.oldest_ms)
                .await
            {
                // Stopped while the target was down: give the run back unacked.
                for (k, piece) in run.done {
                    src.hold(k, piece);
                }
                return Ok(false);
            }
            let value = Bytes::from(last.to_string());
            let written = match src.revision {
                Some(rev) => ctx
                    .applied
                    .update(&src.key, value, rev)
                    .await
                    .map_err(|e| anyhow!("{e}")),
                None => ctx
                    .applied
                    .create(&src.key, value)
                    .await
                    .map_err(|e| anyhow!("{e}")),
            };
            let revision = match written {
                Ok(r) => r,
                Err(e) => {
                    // Another server moved it (our lease lapsed) or NATS is
                    // down: the run is applied but not acknowledged; whoever
                    // reads it next skips it at the Redis marker.
                    let key = src.key.clone();
                    for (k, piece) in run.done {
                        src.hold(k, piece);
                    }
                    return Err(e)
                        .with_context(|| format!("moving the checkpoint {key} to {last}"));
                }
            };
            src.revision = Some(revision);
            src.applied = last;
            ack_all(p, run.done.into_iter().map(|(_, piece)| piece).collect()).await;
            self.gauges(src, 0, None);
        }
    }

    /// Decodes and routes one run, and applies this target's share of it
    /// (keeping the gauges current while the target is down). False: stopped.
    async fn apply(
        &self,
        stream: u64,
        src: &Source,
        first_seq: u64,
        records: &[Bytes],
        oldest_ms: Option<u64>,
    ) -> bool {
        let shared = &self.ctx.shared;
        let snap = shared.rules.current();
        let accounts = self.accounts(&snap);
        // Records after `seen_upto` are new to the accounting.
        let seen_upto = if accounts { src.applied } else { u64::MAX };
        let prepared = prepare_batch(
            shared,
            snap,
            &src.label,
            src.applied,
            seen_upto,
            first_seq,
            records,
        )
        .await;
        let Some(id) = prepared.snap.rules.target_id(self.target) else {
            return true;
        };
        let (Some((items, _)), Some(target)) = (
            prepared.per_target.get(usize::from(id.0)),
            prepared.snap.targets.get(id),
        ) else {
            return true;
        };
        if items.is_empty() {
            return true;
        }
        let items: Vec<(u64, &Op)> = items.iter().map(|(seq, op)| (*seq, op)).collect();
        let run = apply::Run::new(RunId::NONE, &items);
        let applying = apply_with_retry(
            shared, &src.label, stream, target, run, None, self.token, self.down,
        );
        tokio::pin!(applying);
        let mut every = tokio::time::interval(GAUGE_EVERY);
        let applied = loop {
            tokio::select! {
                r = &mut applying => break r,
                _ = every.tick() => self.gauges(src, records.len(), oldest_ms),
            }
        };
        if applied.is_ok() {
            metrics::histogram!(stats::SERVER_BATCH_SECONDS)
                .record(prepared.started.elapsed().as_secs_f64());
        }
        applied.is_ok()
    }
}

/// The envelope and records of a message.
fn read_message(msg: &jetstream::Message) -> Result<(Envelope, Vec<Bytes>), EnvelopeError> {
    let headers = msg
        .headers
        .as_ref()
        .ok_or_else(|| EnvelopeError::Bad("no headers".into()))?;
    let env = envelope::decode(headers)?;
    let records = envelope::records(&env, msg.payload.clone())?;
    Ok((env, records))
}

/// Acknowledges every delivery of `pieces` (their records are applied).
async fn ack_all(partition: u16, pieces: Vec<Piece>) {
    for piece in pieces {
        for m in piece.msgs {
            if let Err(e) = m.ack().await {
                tracing::debug!(partition, "ack: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece of records `first..=last`, each record its sequence as text.
    fn piece(first: u64, last: u64, prev: Option<u64>) -> ((u64, u64), Piece) {
        let records = (first..=last).map(|s| Bytes::from(s.to_string())).collect();
        (
            (first, last),
            Piece {
                records,
                prev,
                published_ms: first,
                msgs: Vec::new(),
            },
        )
    }

    fn source(applied: u64, pieces: &[(u64, u64)]) -> Source {
        let mut s = Source {
            applied,
            ..Default::default()
        };
        for &(f, l) in pieces {
            let (k, p) = piece(f, l, None);
            s.hold(k, p);
        }
        s
    }

    fn seqs(run: &Run) -> Vec<u64> {
        run.records
            .iter()
            .map(|r| {
                std::str::from_utf8(r)
                    .expect("utf8")
                    .parse()
                    .expect("number")
            })
            .collect()
    }

    fn done(run: &Run) -> Vec<(u64, u64)> {
        run.done.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn a_run_spans_messages_of_both_formats() {
        let mut s = source(0, &[(1, 3), (4, 4), (5, 9)]);
        assert_eq!(s.next(), Next::Run);
        let run = s.take_run(100);
        assert_eq!(seqs(&run), (1..=9).collect::<Vec<_>>());
        assert_eq!(done(&run), [(1, 3), (4, 4), (5, 9)]);
        assert_eq!(run.oldest_ms, Some(1));
        assert!(s.held.is_empty());
        assert_eq!(s.held_records, 0);
    }

    #[test]
    fn a_run_can_end_inside_a_message_which_stays_held() {
        let mut s = source(0, &[(1, 10)]);
        let run = s.take_run(4);
        assert_eq!(seqs(&run), [1, 2, 3, 4]);
        assert!(
            done(&run).is_empty(),
            "not acknowledged before its last record"
        );
        s.applied = 4;
        assert!(s.settled().is_empty());
        let run = s.take_run(100);
        assert_eq!(seqs(&run), [5, 6, 7, 8, 9, 10]);
        assert_eq!(done(&run), [(1, 10)]);
    }

    #[test]
    fn overlapping_resends_with_other_boundaries_give_each_record_once() {
        // Sent as 1..=6 and 7..=10, resent after a restart as 3..=8.
        let mut s = source(2, &[(1, 6), (3, 8), (7, 10)]);
        let run = s.take_run(100);
        assert_eq!(seqs(&run), (3..=10).collect::<Vec<_>>());
        let mut d = done(&run);
        d.sort_unstable();
        assert_eq!(d, [(1, 6), (3, 8), (7, 10)], "every delivery acknowledged");
    }

    #[test]
    fn the_same_message_twice_is_one_piece_with_two_deliveries() {
        let mut s = source(0, &[(1, 5)]);
        let (k, p) = piece(1, 5, None);
        s.hold(k, p);
        assert_eq!(s.held.len(), 1);
        assert_eq!(s.held_records, 5);
    }

    #[test]
    fn a_hole_stops_the_run_and_is_seen_as_such() {
        let mut s = source(0, &[(1, 2), (5, 6)]);
        let run = s.take_run(100);
        assert_eq!(seqs(&run), [1, 2]);
        s.applied = 2;
        assert_eq!(
            s.next(),
            Next::Gap { upto: 4, first: 5 },
            "3 and 4 are missing"
        );
    }

    #[test]
    fn format_2_tells_a_jump_from_a_gap() {
        // Records 7.. sent after record 2: 3..=6 were never used.
        let mut s = source(2, &[]);
        let (k, p) = piece(7, 9, Some(2));
        s.hold(k, p);
        assert_eq!(s.next(), Next::Jump { first: 7 });
        // Sent after record 4, but 3 and 4 were not received: a gap up to 4.
        let mut s = source(2, &[]);
        let (k, p) = piece(7, 9, Some(4));
        s.hold(k, p);
        assert_eq!(s.next(), Next::Gap { upto: 4, first: 7 });
        assert_eq!(source(2, &[]).next(), Next::Nothing);
    }

    #[test]
    fn settled_takes_only_what_the_checkpoint_covers() {
        let mut s = source(6, &[(1, 3), (4, 6), (5, 8), (9, 9)]);
        let mut gone: Vec<usize> = s.settled().iter().map(|p| p.records.len()).collect();
        gone.sort_unstable();
        assert_eq!(gone, [3, 3]);
        assert_eq!(s.held.keys().copied().collect::<Vec<_>>(), [(5, 8), (9, 9)]);
        assert_eq!(s.held_records, 5);
        let run = s.take_run(100);
        assert_eq!(seqs(&run), [7, 8, 9]);
    }
}
