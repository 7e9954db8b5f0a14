//! Partition leases: which server reads which partitions (see the module
//! above for the scheme).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use syncs_engine::stats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{partition, Ctx};
use crate::nats as common;

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
pub(super) struct Coordinator {
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
    pub(super) fn new(ctx: Arc<Ctx>, leases: kv::Store, id: String, partitions: u16) -> Self {
        Coordinator {
            ctx,
            leases,
            id,
            partitions,
            held: BTreeMap::new(),
        }
    }

    pub(super) async fn run(&mut self, stop: &CancellationToken) {
        let tick = self.ctx.conf.lease_ttl / 3;
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!("lease round: {e:#}");
            }
            metrics::gauge!(stats::SERVER_NATS_PARTITIONS_HELD).set(self.held.len() as f64);
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
        metrics::gauge!(stats::SERVER_NATS_PARTITIONS_HELD).set(0.0);
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
                    metrics::counter!(stats::SERVER_NATS_LEASES, "outcome" => "lost").increment(1);
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
            let start = common::partition_of(common::fnv1a(self.id.as_bytes()), self.partitions);
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
                    metrics::counter!(stats::SERVER_NATS_LEASES, "outcome" => "taken").increment(1);
                    tracing::info!(partition = p, members, fair, "partition lease taken");
                    let token = CancellationToken::new();
                    let task =
                        tokio::spawn(partition::run(Arc::clone(&self.ctx), p, token.clone()));
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
        metrics::counter!(stats::SERVER_NATS_LEASES, "outcome" => "released").increment(1);
        if let Err(e) = self
            .leases
            .delete_expect_revision(lease_key(p), Some(h.revision))
            .await
        {
            tracing::debug!(partition = p, "lease not deleted ({e}); it will expire");
        }
    }
}
