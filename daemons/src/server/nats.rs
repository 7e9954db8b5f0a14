//! The server's NATS JetStream transport (`[transport] kind = nats`):
//! records come from the stream the proxies publish to, not from TCP.
//!
//! The stream's subjects are split into partitions (a source — one proxy
//! stream — always falls in the same one). Each partition has one durable
//! pull consumer, and a server reads a partition only while it holds the
//! partition's **lease**, a key in the KV bucket `<stream>_leases`:
//! created atomically (`create`), renewed with a compare-and-set on its
//! revision every third of the TTL, and dropped by the bucket's max age
//! when its holder dies. Every live server also keeps a `member.<id>` key
//! there; each one takes at most `ceil(partitions / members)` partitions
//! and gives back the extra, so N servers share the work.
//!
//! Within a partition, each source's records are applied in sequence order,
//! through the same path as the TCP session (`batch::apply_batch`: rules,
//! appliers, dead letters, metrics), then the source's checkpoint in the KV
//! bucket `<stream>_applied` is moved (compare-and-set), then the messages
//! are acknowledged. A record that arrives ahead of a missing one waits (the
//! missing one is redelivered or resent); a record at or below the
//! checkpoint is a duplicate, acknowledged and skipped. Redis targets read
//! their `syncs:applied` marker under WATCH in this mode, so exactly once
//! holds even while a lease changes hands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use syncs_engine::stats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::apply_batch;
use super::Shared;
use crate::backoff::Backoff;
use crate::nats::{self as common, ServerNats};

/// Gauge: partitions this server consumes now.
pub const PARTITIONS_HELD: &str = "syncs_server_nats_partitions_held";
/// Counter: partition leases taken (label `outcome`: taken | lost | released).
pub const LEASES: &str = "syncs_server_nats_leases_total";
/// Counter: records skipped after waiting `gap_timeout` for them.
pub const GAPS: &str = "syncs_server_nats_gap_records_total";

/// What every partition task shares.
#[derive(Debug)]
struct Ctx {
    shared: Arc<Shared>,
    conf: ServerNats,
    stream: jetstream::stream::Stream,
    applied: kv::Store,
}

/// Runs the NATS transport until `stop`; then finishes the batches in hand,
/// gives the leases back and returns.
pub async fn run(
    shared: Arc<Shared>,
    conf: ServerNats,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    syncs_engine::apply::redis::set_shared_streams(true);
    let id = conf.server_id.clone().unwrap_or_else(default_id);
    let client = common::connect(&conf.settings, &format!("syncs-server {id}")).await?;
    let js = jetstream::new(client);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let (stream, partitions, leases, applied) = loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = setup(&js, &conf) => r,
        };
        match attempt {
            Ok(v) => break v,
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!("NATS not ready: {e:#}; retrying in {wait:?}");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    tracing::info!(
        server_id = %id, stream = %conf.settings.stream, partitions,
        lease_ttl = ?conf.lease_ttl, "sync_server ready (NATS JetStream transport)"
    );
    crate::shutdown::notify_ready();
    let ctx = Arc::new(Ctx {
        shared,
        conf,
        stream,
        applied,
    });
    let mut coord = Coordinator {
        ctx,
        leases,
        id,
        partitions,
        held: BTreeMap::new(),
    };
    coord.run(&stop).await;
    crate::shutdown::notify_stopping();
    tracing::info!("sync_server stopped");
    Ok(())
}

/// The stream (and its partition count) and the two KV buckets.
async fn setup(
    js: &jetstream::Context,
    conf: &ServerNats,
) -> anyhow::Result<(jetstream::stream::Stream, u16, kv::Store, kv::Store)> {
    let s = &conf.settings;
    let (stream, partitions) = common::ensure_stream(js, s).await?;
    let leases = common::ensure_bucket(js, &s.leases_bucket(), conf.lease_ttl, s.replicas).await?;
    let applied =
        common::ensure_bucket(js, &s.applied_bucket(), Duration::ZERO, s.replicas).await?;
    Ok((stream, partitions, leases, applied))
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| {
            s.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "server".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A partition this server holds.
#[derive(Debug)]
struct Held {
    revision: u64,
    renewed: Instant,
    token: CancellationToken,
    task: JoinHandle<()>,
}

/// Takes, renews and gives back partition leases.
#[derive(Debug)]
struct Coordinator {
    ctx: Arc<Ctx>,
    leases: kv::Store,
    id: String,
    partitions: u16,
    held: BTreeMap<u16, Held>,
}

fn lease_key(p: u16) -> String {
    format!("p{p}")
}

impl Coordinator {
    async fn run(&mut self, stop: &CancellationToken) {
        let tick = self.ctx.conf.lease_ttl / 3;
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!("lease round: {e:#}");
            }
            metrics::gauge!(PARTITIONS_HELD).set(self.held.len() as f64);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        let held: Vec<u16> = self.held.keys().copied().collect();
        for p in held {
            self.release(p).await;
        }
        let _ = self.leases.delete(self.member_key()).await;
        metrics::gauge!(PARTITIONS_HELD).set(0.0);
    }

    fn member_key(&self) -> String {
        format!("member.{}", self.id)
    }

    /// One round: say we are alive, renew what we hold, drop what ended,
    /// then take or give back partitions toward our fair share.
    async fn round(&mut self) -> anyhow::Result<()> {
        self.leases
            .put(self.member_key(), Bytes::from(self.id.clone()))
            .await
            .map_err(|e| anyhow!("{e}"))
            .context("announcing this server")?;
        let ids: Vec<u16> = self.held.keys().copied().collect();
        for p in ids {
            let Some(h) = self.held.get(&p) else { continue };
            if h.task.is_finished() {
                tracing::warn!(partition = p, "partition task ended; giving the lease back");
                self.release(p).await;
                continue;
            }
            match self
                .leases
                .update(lease_key(p), Bytes::from(self.id.clone()), h.revision)
                .await
            {
                Ok(rev) => {
                    if let Some(h) = self.held.get_mut(&p) {
                        h.revision = rev;
                        h.renewed = Instant::now();
                    }
                }
                // NATS unreachable for a moment: the lease still runs.
                Err(e)
                    if e.kind() != kv::UpdateErrorKind::WrongLastRevision
                        && h.renewed.elapsed() < self.ctx.conf.lease_ttl * 2 / 3 =>
                {
                    tracing::debug!(partition = p, "renewing the lease: {e}; trying again");
                }
                Err(e) => {
                    tracing::warn!(partition = p, "lease lost ({e}); stopping this partition");
                    metrics::counter!(LEASES, "outcome" => "lost").increment(1);
                    if let Some(h) = self.held.remove(&p) {
                        h.token.cancel();
                        let _ = h.task.await;
                    }
                }
            }
        }
        let members = self.members().await?.max(1);
        let fair = usize::from(self.partitions).div_ceil(members);
        if self.held.len() < fair {
            // Start the scan at a place of our own so servers starting
            // together do not all race for partition 0.
            let start = common::partition_of(fnv(&self.id), self.partitions);
            for i in 0..self.partitions {
                if self.held.len() >= fair {
                    break;
                }
                let p = (start + i) % self.partitions;
                if self.held.contains_key(&p) {
                    continue;
                }
                if let Ok(revision) = self
                    .leases
                    .create(lease_key(p), Bytes::from(self.id.clone()))
                    .await
                {
                    metrics::counter!(LEASES, "outcome" => "taken").increment(1);
                    tracing::info!(partition = p, members, fair, "partition lease taken");
                    let token = CancellationToken::new();
                    let task =
                        tokio::spawn(partition_task(Arc::clone(&self.ctx), p, token.clone()));
                    self.held.insert(
                        p,
                        Held {
                            revision,
                            renewed: Instant::now(),
                            token,
                            task,
                        },
                    );
                }
            }
        } else if self.held.len() > fair {
            let extra: Vec<u16> = self
                .held
                .keys()
                .rev()
                .take(self.held.len() - fair)
                .copied()
                .collect();
            for p in extra {
                tracing::info!(partition = p, members, fair, "giving a partition back");
                self.release(p).await;
            }
        }
        Ok(())
    }

    /// Live servers: `member.*` keys not yet expired.
    async fn members(&self) -> anyhow::Result<usize> {
        let mut keys = self
            .leases
            .keys()
            .await
            .map_err(|e| anyhow!("{e}"))
            .context("listing the lease bucket")?;
        let mut n = 0;
        while let Some(k) = keys.next().await {
            if k.map_err(|e| anyhow!("{e}"))?.starts_with("member.") {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Stops a partition's task (after its batch in hand) and deletes the
    /// lease, so another server can take the partition at once.
    async fn release(&mut self, p: u16) {
        let Some(h) = self.held.remove(&p) else {
            return;
        };
        h.token.cancel();
        let _ = h.task.await;
        metrics::counter!(LEASES, "outcome" => "released").increment(1);
        if let Err(e) = self
            .leases
            .delete_expect_revision(lease_key(p), Some(h.revision))
            .await
        {
            tracing::debug!(partition = p, "lease not deleted ({e}); it will expire");
        }
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One source's place within a held partition.
#[derive(Debug, Default)]
struct Source {
    label: String,
    /// Last applied sequence (the checkpoint).
    applied: u64,
    /// The checkpoint's KV revision (None: no key yet).
    revision: Option<u64>,
    /// Records received and not yet applied, by sequence (those after a
    /// missing one wait here); every delivery of a record is kept, to be
    /// acknowledged once the record is applied.
    held: BTreeMap<u64, (Bytes, Vec<jetstream::Message>)>,
    /// Since when the next record is missing while later ones wait.
    gap_since: Option<Instant>,
}

/// The identity a message carries in its headers.
fn identify(msg: &jetstream::Message) -> Option<(u64, u64, String)> {
    let h = msg.headers.as_ref()?;
    let stream = u64::from_str_radix(h.get(common::HDR_STREAM)?.as_str(), 16).ok()?;
    let seq: u64 = h.get(common::HDR_SEQ)?.as_str().parse().ok()?;
    let name = h
        .get(common::HDR_NAME)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    (seq > 0).then_some((stream, seq, name))
}

async fn partition_task(ctx: Arc<Ctx>, p: u16, token: CancellationToken) {
    let mut sources: HashMap<u64, Source> = HashMap::new();
    let result = consume(&ctx, p, &token, &mut sources).await;
    // What is held and not applied goes back at once, for the next owner.
    for s in sources.values() {
        for (_, msgs) in s.held.values() {
            for m in msgs {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
    if let Err(e) = result {
        tracing::warn!(partition = p, "partition stopped: {e:#}");
    }
}

async fn consume(
    ctx: &Ctx,
    p: u16,
    token: &CancellationToken,
    sources: &mut HashMap<u64, Source>,
) -> anyhow::Result<()> {
    let name = common::NatsSettings::consumer_name(p);
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
            _ = token.cancelled() => return Ok(()),
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
            let Some((stream, seq, name)) = identify(&msg) else {
                metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => "bad_nats_message")
                    .increment(1);
                tracing::warn!(partition = p, subject = %msg.subject, "message without syncs headers; terminated");
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            };
            let src = match sources.entry(stream) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(load_source(ctx, stream, &name).await?)
                }
            };
            if seq <= src.applied {
                metrics::counter!(stats::SERVER_DUPLICATES).increment(1);
                let _ = msg.ack().await;
                continue;
            }
            let payload = msg.payload.clone();
            src.held
                .entry(seq)
                .or_insert_with(|| (payload, Vec::new()))
                .1
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
            if !drain(ctx, p, stream, src, token).await? {
                return Ok(());
            }
        }
    }
}

/// A source seen for the first time in this partition: its checkpoint.
async fn load_source(ctx: &Ctx, stream: u64, name: &str) -> anyhow::Result<Source> {
    let key = format!("{stream:016x}");
    let entry = ctx
        .applied
        .entry(key.clone())
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading the checkpoint of {key}"))?;
    let (applied, revision) = match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let n = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| anyhow!("checkpoint of {key} is not a number"))?;
            (n, Some(e.revision))
        }
        Some(e) => (0, Some(e.revision)),
        None => (0, None),
    };
    Ok(Source {
        label: format!("{name}/{key}"),
        applied,
        revision,
        ..Default::default()
    })
}

/// Applies the source's records that follow its checkpoint without a hole,
/// moves the checkpoint, acknowledges. Returns false when stopped.
async fn drain(
    ctx: &Ctx,
    p: u16,
    stream: u64,
    src: &mut Source,
    token: &CancellationToken,
) -> anyhow::Result<bool> {
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
                partition = p, source = %src.label, missing,
                "sequence gap: records {}..{} never arrived within {:?}; going on without them",
                src.applied + 1, first - 1, ctx.conf.gap_timeout
            );
            metrics::counter!(GAPS).increment(missing);
            src.applied = first - 1;
        }
        src.gap_since = None;
        // The run: consecutive sequences from applied + 1, at most `batch`.
        let mut run: Vec<(u64, Bytes, Vec<jetstream::Message>)> = Vec::new();
        let mut expect = src.applied + 1;
        while run.len() < ctx.conf.batch {
            match src.held.remove(&expect) {
                Some((payload, msgs)) => run.push((expect, payload, msgs)),
                None => break,
            }
            expect += 1;
        }
        let records: Vec<Bytes> = run.iter().map(|(_, b, _)| b.clone()).collect();
        let first_seq = src.applied + 1;
        let last = first_seq + records.len() as u64 - 1;
        if apply_batch(
            &ctx.shared,
            &src.label,
            stream,
            src.applied,
            first_seq,
            &records,
            token,
        )
        .await
        .is_err()
        {
            // Stopped while a target was down: give the run back unacked.
            for (seq, payload, msgs) in run {
                src.held.insert(seq, (payload, msgs));
            }
            return Ok(false);
        }
        let key = format!("{stream:016x}");
        let value = Bytes::from(last.to_string());
        let written = match src.revision {
            Some(rev) => ctx
                .applied
                .update(&key, value, rev)
                .await
                .map_err(|e| anyhow!("{e}")),
            None => ctx
                .applied
                .create(&key, value)
                .await
                .map_err(|e| anyhow!("{e}")),
        };
        let revision = match written {
            Ok(r) => r,
            Err(e) => {
                // Another server moved it (our lease lapsed) or NATS is
                // down: the run is applied but not acknowledged; whoever
                // reads it next skips it at the Redis marker.
                for (seq, payload, msgs) in run {
                    src.held.insert(seq, (payload, msgs));
                }
                return Err(e).with_context(|| format!("moving the checkpoint of {key} to {last}"));
            }
        };
        src.revision = Some(revision);
        src.applied = last;
        for (_, _, msgs) in run {
            for m in msgs {
                if let Err(e) = m.ack().await {
                    tracing::debug!(partition = p, "ack: {e}");
                }
            }
        }
    }
}
