//! The NATS JetStream destination: instead of a TCP link to one server, the
//! proxy publishes every spool record to the JetStream stream, subject
//! `<prefix>.<partition>.<stream id hex>`, and advances this destination's
//! cursor in the spool as the stream's PubAcks come back, in order.
//!
//! Publishes are pipelined (up to [`WINDOW`] in flight). Each carries
//! `Nats-Msg-Id: <stream hex>:<seq>`, so after any failure the link simply
//! resends from the last acknowledged record: the broker drops what it
//! already stored (within the stream's duplicate window), and the servers
//! skip what they already applied. The spool stays in front: while the
//! broker is unreachable, records wait on disk.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use async_nats::jetstream::{self, context::PublishError};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use syncs_engine::stats;
use tokio_util::sync::CancellationToken;

use super::link::{Identity, LinkUp};
use super::spool::Spool;
use crate::backoff::Backoff;
use crate::nats::{self as common, envelope, NatsSettings};

/// Room for the subject and headers above a record in one NATS message.
const HEADER_ROOM: u64 = 1024;
/// Records published but not yet acknowledged by the stream, at most.
const WINDOW: usize = 4096;
/// The spool is read when the window has room for this many records (or
/// for everything readable): reading one record per acknowledgement once
/// the window is full made a backlog cost a spool read per record.
const READ_RECORDS: usize = 512;
const READ_BYTES: usize = 1 << 20;

/// The NATS destination of one proxy.
#[derive(Debug)]
pub struct NatsLink {
    /// This destination's index in the spool (after the TCP ones).
    pub index: usize,
    pub settings: NatsSettings,
    pub identity: Identity,
    pub spool: Arc<Spool>,
    /// The proxy's `--max-frame`, checked against the broker's `max_payload`.
    pub max_frame: u32,
}

impl NatsLink {
    fn all_acked(&self) -> bool {
        self.spool.acked(self.index) >= self.spool.last()
    }

    /// Runs until `stop` and every record is stored in the stream (or
    /// `drained` fires after `stop`).
    pub async fn run(self, stop: CancellationToken, drained: CancellationToken) {
        let name = format!("syncs-proxy {}", self.identity.name);
        let client = match common::connect(&self.settings, &name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "{e:#}; the NATS destination is disabled, records stay in the spool"
                );
                return;
            }
        };
        let js = jetstream::new(client.clone());
        let mut partitions: Option<u16> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut failures = 0u32;
        loop {
            if drained.is_cancelled() || (stop.is_cancelled() && self.all_acked()) {
                return;
            }
            let result = async {
                let p = match partitions {
                    Some(p) => p,
                    None => {
                        let (_, p) = common::ensure_stream(&js, &self.settings).await?;
                        let max_payload = client.server_info().max_payload;
                        if u64::from(self.max_frame) + HEADER_ROOM > max_payload as u64 {
                            tracing::warn!(
                                max_frame = self.max_frame, max_payload,
                                "--max-frame is above the NATS servers' max_payload: a record that large would wait in the spool until max_payload is raised"
                            );
                        }
                        tracing::info!(
                            stream = %self.settings.stream, partitions = p, max_payload,
                            subject = %common::subject(&self.settings.prefix, p, self.identity.stream),
                            "publishing to NATS JetStream"
                        );
                        partitions = Some(p);
                        p
                    }
                };
                self.session(&js, p, &stop, &drained, &mut failures).await
            }
            .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    metrics::counter!(stats::PROXY_CONNECTS, "outcome" => "error").increment(1);
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(
                            failures,
                            pending = self.spool.pending(),
                            "NATS destination: {e:#}; resending from the last stored record"
                        );
                    }
                }
            }
            tokio::select! {
                _ = drained.cancelled() => return,
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
                _ = backoff.sleep() => {}
            }
        }
    }

    /// Publishes from this destination's cursor on; returns on `stop` once
    /// everything is stored, or with the first error.
    async fn session(
        &self,
        js: &jetstream::Context,
        partitions: u16,
        stop: &CancellationToken,
        drained: &CancellationToken,
        failures: &mut u32,
    ) -> anyhow::Result<()> {
        let subject = common::subject(&self.settings.prefix, partitions, self.identity.stream);
        let mut cursor = self.spool.cursor(self.spool.acked(self.index) + 1);
        let mut inflight = FuturesOrdered::new();
        let mut up: Option<LinkUp> = None;
        loop {
            if stop.is_cancelled() && self.all_acked() {
                return Ok(());
            }
            let free = WINDOW - inflight.len();
            let readable = self.spool.last().saturating_sub(cursor.position()) + 1;
            let room = free > 0 && (free >= READ_RECORDS || readable <= free as u64);
            if room && cursor.ready() {
                // An error (a record missing: a bug) ends the session;
                // the next one resends from the last stored record.
                let read = cursor
                    .read(free, READ_BYTES)
                    .await
                    .context("reading the spool")?;
                if let Some((first, records)) = read {
                    for (i, payload) in records.into_iter().enumerate() {
                        let seq = first + i as u64;
                        let ack = js
                            .publish_with_headers(
                                subject.clone(),
                                envelope::encode(self.identity.stream, seq, &self.identity.name),
                                payload,
                            )
                            .await
                            .map_err(|e| anyhow!("publishing record {seq}: {e}"))?;
                        inflight.push_back(async move { (seq, ack.await) });
                    }
                }
                continue;
            }
            tokio::select! {
                _ = drained.cancelled() => return Ok(()),
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
                ready = cursor.wait(), if room => ready.context("waiting for the spool")?,
                done = inflight.next(), if !inflight.is_empty() => {
                    let Some(first) = done else { continue };
                    // Every acknowledgement that is in, in publish order;
                    // the spool's acknowledgement is cumulative: one call.
                    let mut stored = None;
                    let mut next = Some(first);
                    while let Some((seq, result)) = next {
                        if let Err(e) = result {
                            if let Some(seq) = stored {
                                self.spool.ack(self.index, seq);
                            }
                            return Err(describe(seq, e));
                        }
                        stored = Some(seq);
                        next = inflight.next().now_or_never().flatten();
                    }
                    if up.is_none() {
                        up = Some(LinkUp::new());
                        if *failures > 0 {
                            tracing::info!(failures = *failures, "NATS destination storing again");
                        }
                        *failures = 0;
                    }
                    if let Some(seq) = stored {
                        self.spool.ack(self.index, seq);
                    }
                }
            }
        }
    }
}

fn describe(seq: u64, e: PublishError) -> anyhow::Error {
    anyhow!("the stream did not confirm record {seq}: {e}")
}
