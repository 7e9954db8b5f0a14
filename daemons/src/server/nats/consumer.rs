//! One target's way through one partition: a durable consumer of its own
//! (`p<partition>-<target>`), the sources it has seen, and their
//! checkpoints at this target.
//!
//! Each source's records are applied in sequence order. A record that
//! arrives ahead of a missing one waits (the missing one is redelivered or
//! resent); a record at or below the checkpoint is a duplicate,
//! acknowledged and skipped. Every record is decoded and routed by each
//! target's consumer, which applies only its own share; the accounting of
//! a record (records received, refusals to the dead-letter file, drops) is
//! done once, by the consumer of the rules' first target.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use syncs_engine::stats;
use tokio_util::sync::CancellationToken;

use super::partition::NO_TARGET;
use super::Ctx;
use crate::nats::envelope::{self, Envelope};
use crate::nats::{self as common, NatsSettings};
use crate::server::batch::{apply_with_retry, prepare_batch, DownSince};
use crate::server::rules::Snapshot;

/// How often the gauges of a source are brought up to date, also while a
/// run waits for its target.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

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
    /// Records received and not yet applied, by sequence (those after a
    /// missing one wait here); every delivery of a record is kept, to be
    /// acknowledged once the record is applied.
    held: BTreeMap<u64, Held>,
    /// Since when the next record is missing while later ones wait.
    gap_since: Option<Instant>,
    /// Messages of the partition not yet delivered to this consumer, as of
    /// the last one delivered.
    pending: u64,
}

/// A record received, with every delivery of it.
#[derive(Debug)]
struct Held {
    payload: Bytes,
    /// When JetStream took it from the proxy (ms since the epoch).
    published_ms: u64,
    msgs: Vec<jetstream::Message>,
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
        for held in s.held.values() {
            for m in &held.msgs {
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
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("pulling from {name}"))?;
        let mut chunks = messages.ready_chunks(ctx.conf.batch);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let chunk = tokio::select! {
                _ = self.token.cancelled() => return Ok(()),
                _ = tick.tick() => Vec::new(),
                c = chunks.next() => match c {
                    Some(c) => c,
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
                let Some(Envelope {
                    stream,
                    seq,
                    name: source_name,
                }) = msg.headers.as_ref().and_then(envelope::decode)
                else {
                    metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => "bad_nats_message")
                        .increment(1);
                    tracing::warn!(partition = p, subject = %msg.subject, "message without syncs headers; terminated");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                };
                let src = match sources.entry(stream) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.load_source(stream, &source_name).await?)
                    }
                };
                if seq <= src.applied {
                    metrics::counter!(stats::SERVER_DUPLICATES).increment(1);
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
                let payload = msg.payload.clone();
                src.held
                    .entry(seq)
                    .or_insert_with(|| Held {
                        payload,
                        published_ms,
                        msgs: Vec::new(),
                    })
                    .msgs
                    .push(msg);
                if !touched.contains(&stream) {
                    touched.push(stream);
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
            for src in sources.values() {
                self.gauges(src, 0, None);
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
            .set((src.pending + (src.held.len() + in_flight) as u64) as f64);
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
            let Some((&first, _)) = src.held.first_key_value() else {
                src.gap_since = None;
                return Ok(true);
            };
            if first > src.applied + 1 {
                let since = *src.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() < ctx.conf.gap_timeout {
                    return Ok(true);
                }
                let missing = first - src.applied - 1;
                tracing::error!(
                    partition = p, source = %src.label, target = self.target, missing,
                    "sequence gap: records {}..{} never arrived within {:?}; going on without them",
                    src.applied + 1, first - 1, ctx.conf.gap_timeout
                );
                metrics::counter!(stats::SERVER_NATS_GAPS).increment(missing);
                src.applied = first - 1;
            }
            src.gap_since = None;
            // The run: consecutive sequences from applied + 1, at most `batch`.
            let mut run: Vec<(u64, Held)> = Vec::new();
            let mut expect = src.applied + 1;
            while run.len() < ctx.conf.batch {
                match src.held.remove(&expect) {
                    Some(h) => run.push((expect, h)),
                    None => break,
                }
                expect += 1;
            }
            let records: Vec<Bytes> = run.iter().map(|(_, h)| h.payload.clone()).collect();
            let oldest = run.first().map(|(_, h)| h.published_ms);
            let first_seq = src.applied + 1;
            let last = first_seq + records.len() as u64 - 1;
            if !self.apply(stream, src, first_seq, &records, oldest).await {
                // Stopped while the target was down: give the run back unacked.
                src.held.extend(run);
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
                    src.held.extend(run);
                    return Err(e)
                        .with_context(|| format!("moving the checkpoint {key} to {last}"));
                }
            };
            src.revision = Some(revision);
            src.applied = last;
            for (_, h) in run {
                for m in h.msgs {
                    if let Err(e) = m.ack().await {
                        tracing::debug!(partition = p, "ack: {e}");
                    }
                }
            }
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
        let applying = apply_with_retry(
            shared, &src.label, stream, target, items, self.token, self.down,
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
