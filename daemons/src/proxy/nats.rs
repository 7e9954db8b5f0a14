//! The NATS JetStream destination: instead of a TCP link to one server, the
//! proxy publishes its spool records to the JetStream stream, subject
//! `<prefix>.<partition>.<stream id hex>`, and advances this destination's
//! cursor in the spool as the stream's PubAcks come back, in order.
//!
//! A message carries up to `records_per_message` consecutive records
//! (envelope format 2; with 1, one record per message, format 1: what
//! servers before format 2 read). Before its first format-2 message the
//! proxy makes sure the fence key exists ([`envelope::FENCE`]), so that a
//! server too old to read format 2 stops instead of losing records.
//!
//! Publishes are pipelined (up to a window of records in flight). Each
//! carries a `Nats-Msg-Id` naming its records, so after any failure the
//! link simply resends from the last acknowledged record: the broker drops
//! what it already stored (within the stream's duplicate window), and the
//! servers skip what they already applied. The spool stays in front: while
//! the broker is unreachable, records wait on disk.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::{self, context::PublishError, kv};
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use syncs_engine::stats;
use tokio_util::sync::CancellationToken;

use super::link::{link_up, Identity};
use super::spool::Spool;
use crate::backoff::Backoff;
use crate::nats::{self as common, envelope, NatsSettings};
use crate::telemetry::GaugeHeld;

/// Room for the subject and headers above a record in one NATS message.
const HEADER_ROOM: u64 = 1024;
/// Records published but not yet acknowledged by the stream, at most, in
/// format 1 (a message each: below the servers' `max_ack_pending`) and in
/// format 2.
const WINDOW_FORMAT_1: usize = 4096;
const WINDOW_FORMAT_2: usize = 16_384;
/// The spool is read when the window has room for this many records (or
/// for everything readable): reading one record per acknowledgement once
/// the window is full made a backlog cost a spool read per record.
const READ_RECORDS: usize = 512;
/// Records and bytes read from the spool at a time, at most.
const READ_MAX: usize = 4096;
const READ_BYTES: usize = 1 << 20;
/// Bytes of records in one format-2 message, at most (a larger record
/// goes alone).
const MESSAGE_BYTES: usize = 128 << 10;

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

    /// Runs until `stop` (no more records will come: the proxy stops and
    /// its clients are done) and every record is stored in the stream (or
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
        let per_message = self.settings.records_per_message as usize;
        let window = if per_message > 1 {
            self.fence(js).await?;
            WINDOW_FORMAT_2
        } else {
            WINDOW_FORMAT_1
        };
        let stream = self.identity.stream;
        let subject = common::subject(&self.settings.prefix, partitions, stream);
        // The record published before the next message: none lies between
        // the acknowledged position and the first record read after it.
        let mut prev = self.spool.acked(self.index);
        let mut cursor = self.spool.cursor(prev + 1);
        let mut inflight = FuturesOrdered::new();
        let mut in_flight = 0usize;
        let mut up: Option<GaugeHeld> = None;
        loop {
            if stop.is_cancelled() && self.all_acked() {
                return Ok(());
            }
            let free = window.saturating_sub(in_flight);
            let readable = self.spool.last().saturating_sub(cursor.position()) + 1;
            let room = free > 0 && (free >= READ_RECORDS || readable <= free as u64);
            if room && cursor.ready() {
                // An error (a record missing: a bug) ends the session;
                // the next one resends from the last stored record.
                let read = cursor
                    .read(free.min(READ_MAX), READ_BYTES)
                    .await
                    .context("reading the spool")?;
                let Some((first, records)) = read else {
                    continue;
                };
                let mut at = 0;
                for n in message_sizes(&records, per_message, MESSAGE_BYTES) {
                    let seq = first + at as u64;
                    let last = seq + n as u64 - 1;
                    let (headers, body) = if per_message > 1 {
                        envelope::encode_run(
                            stream,
                            seq,
                            prev,
                            &records[at..at + n],
                            &self.identity.name,
                        )
                    } else {
                        let headers = envelope::encode(stream, seq, &self.identity.name);
                        (headers, records[at].clone())
                    };
                    let ack = js
                        .publish_with_headers(subject.clone(), headers, body)
                        .await
                        .map_err(|e| anyhow!("publishing records {seq}..={last}: {e}"))?;
                    inflight.push_back(async move { (last, n, ack.await) });
                    in_flight += n;
                    prev = last;
                    at += n;
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
                    while let Some((last, n, result)) = next {
                        in_flight -= n;
                        if let Err(e) = result {
                            if let Some(seq) = stored {
                                self.spool.ack(self.index, seq);
                            }
                            return Err(describe(last, e));
                        }
                        stored = Some(last);
                        next = inflight.next().now_or_never().flatten();
                    }
                    if up.is_none() {
                        up = Some(link_up());
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

    /// Makes sure the fence key exists before format 2 is published: a
    /// server too old to read format 2 then stops at the first such
    /// message instead of losing it (docs/protocol.md).
    async fn fence(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        if self.identity.stream == envelope::FENCE {
            bail!(
                "this spool's stream id is the one NATS format 2 reserves; start with \
                 --nats-records-per-message 1"
            );
        }
        let store = common::applied_bucket(js, &self.settings).await?;
        let key = common::legacy_checkpoint_key(envelope::FENCE);
        match store
            .create(&key, Bytes::from_static(envelope::FENCE_TEXT.as_bytes()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(anyhow!("{e}")).with_context(|| {
                format!(
                    "writing the format-2 fence key {key} in {}",
                    self.settings.applied_bucket()
                )
            }),
        }
    }
}

/// How many records go into each message, in order: at most `max_records`
/// and `max_bytes` of records each (a larger record goes alone).
fn message_sizes(
    records: &[Bytes],
    max_records: usize,
    max_bytes: usize,
) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = records.get(at..).filter(|r| !r.is_empty())?;
        let mut n = 0;
        let mut bytes = 0;
        for r in rest {
            if n > 0 && (n >= max_records || bytes + r.len() > max_bytes) {
                break;
            }
            n += 1;
            bytes += r.len();
        }
        at += n;
        Some(n)
    })
}

fn describe(seq: u64, e: PublishError) -> anyhow::Error {
    anyhow!("the stream did not confirm the records up to {seq}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(lens: &[usize], max_records: usize, max_bytes: usize) -> Vec<usize> {
        let records: Vec<Bytes> = lens.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect();
        message_sizes(&records, max_records, max_bytes).collect()
    }

    #[test]
    fn records_are_cut_by_count_and_bytes() {
        assert_eq!(sizes(&[], 4, 100), Vec::<usize>::new());
        assert_eq!(sizes(&[1; 10], 4, 100), [4, 4, 2]);
        assert_eq!(sizes(&[1; 3], 1, 100), [1, 1, 1], "format 1");
        assert_eq!(sizes(&[40, 40, 40, 40], 10, 100), [2, 2]);
        assert_eq!(
            sizes(&[10, 500, 10], 10, 100),
            [1, 1, 1],
            "a large record alone"
        );
    }
}
