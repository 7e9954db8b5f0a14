//! The server's NATS JetStream transport (`[transport] kind = nats`):
//! records come from the stream the proxies publish to, not from TCP.
//!
//! The stream's subjects are split into partitions (a source — one proxy
//! stream — always falls in the same one). A server reads a partition only
//! while it holds the partition's **lease** (`lease.rs`), a key in the KV
//! bucket `<stream>_leases`: created atomically, renewed with a
//! compare-and-set on its revision every third of the TTL, and dropped by
//! the bucket's max age when its holder dies. Every live server also keeps
//! a `member.<id>` key there; each one takes at most
//! `ceil(partitions / members)` partitions and gives back the extra, so N
//! servers share the work.
//!
//! Within a held partition (`partition.rs`) **each target reads on its
//! own**, through a durable consumer of its own (`consumer.rs`): a target
//! that is down or slow holds back only itself, and its backlog stays in
//! JetStream, not in the server's memory. Each target applies each source's
//! records in sequence order through the same path as the TCP session
//! (rules, appliers, dead letters, metrics), moves the source's checkpoint
//! for that target in the KV bucket `<stream>_applied` (compare-and-set),
//! then acknowledges. The holder of partition 0 purges what every target
//! has acknowledged, so a record stays in the stream until the last target
//! that reads it is done with it. Redis targets read their `syncs:applied`
//! marker under WATCH in this mode, so exactly once holds even while a
//! lease changes hands.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::backoff::Backoff;
use crate::nats::{self as common, ServerNats};

mod consumer;
mod lease;
mod partition;

/// What every partition task shares.
#[derive(Debug)]
struct Ctx {
    shared: Arc<Shared>,
    conf: ServerNats,
    stream: jetstream::stream::Stream,
    /// The stream's partition count.
    partitions: u16,
    applied: kv::Store,
}

/// Runs the NATS transport until `stop`; then finishes the batches in hand,
/// gives the leases back and returns. The caller has turned the engine's
/// shared-streams mode on before building the targets.
pub async fn run(
    shared: Arc<Shared>,
    conf: ServerNats,
    stop: CancellationToken,
) -> anyhow::Result<()> {
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
        partitions,
        applied,
    });
    let mut coord = lease::Coordinator::new(ctx, leases, id, partitions);
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
    let applied = common::applied_bucket(js, s).await?;
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
