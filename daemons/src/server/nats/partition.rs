//! One held partition: a consumer per target, kept in step with the rules,
//! and the purge of what every target is done with.
//!
//! The stream keeps records by limits, not by acknowledgement, so that
//! each target can read it at its own pace; the holder of partition 0
//! deletes (purges) the records every consumer of every partition has
//! acknowledged. A target that is down keeps the records it has not applied
//! in the stream (bounded by the stream's `max_bytes`, past which the
//! proxies spool), and holds back no other target.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use futures::StreamExt;
use syncs_engine::stats;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{consumer, Ctx};
use crate::backoff::Backoff;
use crate::nats::NatsSettings;

/// How often the target set is compared with the rules, ended consumers
/// are started again, and what every target is done with is purged.
const TICK: Duration = Duration::from_secs(1);

/// The consumer of a partition whose rules name no target: it reads and
/// accounts (drops, refusals) so that the records can be purged.
pub(super) const NO_TARGET: &str = "-";

/// One target's consumer task.
#[derive(Debug)]
struct Reader {
    token: CancellationToken,
    task: JoinHandle<()>,
    backoff: Backoff,
}

impl Reader {
    fn start(ctx: &Arc<Ctx>, p: u16, target: &str) -> Self {
        let token = CancellationToken::new();
        let task = tokio::spawn(consumer::run(
            Arc::clone(ctx),
            p,
            target.to_owned(),
            token.clone(),
        ));
        Reader {
            token,
            task,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
        }
    }

    /// Lets the batch in hand finish; the records held and not applied
    /// are handed back to JetStream.
    async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// The consumers a rule set needs: one per target it declares.
fn wanted(ctx: &Ctx) -> Vec<String> {
    let snap = ctx.shared.rules.current();
    let names: Vec<String> = snap
        .rules
        .targets()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    if names.is_empty() {
        vec![NO_TARGET.to_owned()]
    } else {
        names
    }
}

pub(super) async fn run(ctx: Arc<Ctx>, p: u16, token: CancellationToken) {
    let mut readers: BTreeMap<String, Reader> = BTreeMap::new();
    // A reader that ended waits here until its backoff has passed.
    let mut restart_at: BTreeMap<String, (Instant, Backoff)> = BTreeMap::new();
    let mut purged = 0u64;
    let mut generation = 0u64;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        let current = ctx.shared.rules.current().generation;
        if current != generation {
            generation = current;
            let names = wanted(&ctx);
            let gone: Vec<String> = readers
                .keys()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            for name in gone {
                if let Some(r) = readers.remove(&name) {
                    tracing::info!(partition = p, target = %name, "target no longer in the rules; its consumer stops");
                    r.stop().await;
                }
            }
            restart_at.retain(|n, _| names.contains(n));
            for name in &names {
                if !readers.contains_key(name) && !restart_at.contains_key(name) {
                    readers.insert(name.clone(), Reader::start(&ctx, p, name));
                }
            }
            delete_stale(&ctx, p, &names).await;
        }
        // A consumer that ended (NATS unreachable, a consumer deleted under
        // it) starts again after its backoff.
        let ended: Vec<String> = readers
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            if let Some(mut r) = readers.remove(&name) {
                let wait = r.backoff.next_wait();
                restart_at.insert(name, (Instant::now() + wait, r.backoff));
            }
        }
        let due: Vec<String> = restart_at
            .iter()
            .filter(|(_, (at, _))| *at <= Instant::now())
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            if let Some((_, backoff)) = restart_at.remove(&name) {
                let mut r = Reader::start(&ctx, p, &name);
                r.backoff = backoff;
                readers.insert(name, r);
            }
        }
        pending_gauges(&ctx, p, readers.keys()).await;
        // The stream is purged by whoever holds partition 0.
        if p == 0 {
            match purge_stream(&ctx, &wanted(&ctx), purged).await {
                Ok(floor) => purged = floor,
                Err(e) => tracing::debug!("purge: {e:#}"),
            }
        }
    }
    for (name, r) in std::mem::take(&mut readers) {
        r.stop().await;
        // Whoever holds the partition next reports it.
        metrics::gauge!(stats::SERVER_NATS_PENDING, "partition" => p.to_string(), "target" => name)
            .set(0.0);
    }
}

/// Deletes this partition's consumers of targets the rules no longer name
/// (the stream keeps records by limits, so no record goes with them).
async fn delete_stale(ctx: &Ctx, p: u16, names: &[String]) {
    let prefix = NatsSettings::consumer_prefix(p);
    let mut listed = ctx.stream.consumer_names();
    let mut stale = Vec::new();
    while let Some(name) = listed.next().await {
        match name {
            Ok(n) => {
                if let Some(target) = n.strip_prefix(&prefix) {
                    if !names.iter().any(|w| w == target) {
                        stale.push(n);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(partition = p, "listing consumers: {e}");
                return;
            }
        }
    }
    for n in stale {
        match ctx.stream.delete_consumer(&n).await {
            Ok(_) => {
                tracing::info!(partition = p, consumer = %n, "consumer of a target no longer in the rules deleted")
            }
            Err(e) => {
                tracing::debug!(partition = p, consumer = %n, "deleting a stale consumer: {e}")
            }
        }
    }
}

/// Brings the pending gauge of each of this partition's consumers up to
/// date.
async fn pending_gauges<'a>(ctx: &Ctx, p: u16, targets: impl Iterator<Item = &'a String>) {
    for target in targets {
        let name = NatsSettings::consumer_name(p, target);
        if let Ok(info) = ctx.stream.consumer_info(&name).await {
            metrics::gauge!(stats::SERVER_NATS_PENDING, "partition" => p.to_string(), "target" => target.clone())
                .set((info.num_pending + info.num_ack_pending as u64) as f64);
        }
    }
}

/// Purges the stream below what every consumer of every partition and
/// target has acknowledged; returns the floor purged to. Nothing is
/// purged while a consumer the rules need does not exist yet.
///
/// The purge is stream-wide, never filtered by partition: nats-server
/// before 2.9.12 moved *every* consumer's position on a filtered purge
/// (nats-server#3838), which would skip records of other partitions.
async fn purge_stream(ctx: &Ctx, targets: &[String], purged: u64) -> anyhow::Result<u64> {
    // The last sequence first: a consumer with nothing pending and nothing
    // unacknowledged when asked afterwards is done with everything up to it.
    let last = ctx
        .stream
        .get_info()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .state
        .last_sequence;
    let mut floors: HashMap<String, u64> = HashMap::new();
    let mut listed = ctx.stream.consumers();
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| anyhow!("{e}"))?;
        let floor = if info.num_pending == 0 && info.num_ack_pending == 0 {
            last
        } else {
            info.ack_floor.stream_sequence
        };
        floors.insert(info.name, floor);
    }
    let mut floor = u64::MAX;
    for p in 0..ctx.partitions {
        for target in targets {
            match floors.get(&NatsSettings::consumer_name(p, target)) {
                Some(f) => floor = floor.min(*f),
                None => return Ok(purged),
            }
        }
    }
    if floor == u64::MAX || floor <= purged {
        return Ok(purged);
    }
    ctx.stream
        .purge()
        .sequence(floor + 1)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(floor)
}
