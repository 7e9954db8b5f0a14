//! The link from the proxy to one server: connect (with backoff), HELLO,
//! then stream batches from this destination's cursor while reading ACKs.
//! After any failure the link reconnects and resends from the last
//! acknowledged record, so nothing is skipped and order is kept.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use syncs_engine::stats;
use syncs_engine::wire::peer::{refuse, Message, PeerCodec, Secret, VERSION};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::spool::Spool;
use crate::backoff::Backoff;
use crate::security::proxy::ProxySecurity;
use crate::security::BoxIo;
use crate::spacing::Spacing;
use crate::telemetry::GaugeHeld;

/// Records per BATCH, and bytes per BATCH (a single larger record still
/// goes alone).
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// Records sent but not yet acknowledged, at most.
const WINDOW: u64 = 64 * BATCH_RECORDS as u64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// The server refused this proxy's protocol version (an older server).
#[derive(Debug, thiserror::Error)]
#[error("the server refused protocol version {VERSION}: {0}")]
struct OldServer(String);

/// Who this proxy is to the servers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub stream: u64,
}

/// One destination.
#[derive(Debug)]
pub struct Link {
    pub index: usize,
    pub addr: String,
    pub identity: Identity,
    pub spool: Arc<Spool>,
    pub max_message: u64,
    /// TLS and token towards this server.
    pub security: Arc<ProxySecurity>,
    /// The least time between the starts of two batches that are not full
    /// (`--batch-spacing`; zero: each is sent as soon as it is readable).
    pub batch_spacing: Duration,
}

impl Link {
    /// Runs until `stop` (no more records will come: the proxy stops and
    /// its clients are done) and every record is acknowledged (or
    /// `drained` fires after `stop`).
    pub async fn run(self, stop: CancellationToken, drained: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0u32;
        // The newest version first; a server that refuses it (an older
        // build, during a rolling upgrade) gets the previous one.
        let mut version = VERSION;
        loop {
            if drained.is_cancelled() || (stop.is_cancelled() && self.all_acked()) {
                return;
            }
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr));
            let result = tokio::select! {
                _ = drained.cancelled() => return,
                r = connect => r,
            };
            match result {
                Ok(Ok(sock)) => {
                    let _ = sock.set_nodelay(true);
                    // TLS, HELLO, AUTH, WELCOME: a failure here (a bad
                    // certificate, a refused token) backs off like a
                    // connection that failed.
                    let handshake = tokio::select! {
                        _ = drained.cancelled() => return,
                        h = self.handshake(sock, version) => h,
                    };
                    match handshake {
                        Err(e) if version > 2 && e.downcast_ref::<OldServer>().is_some() => {
                            tracing::warn!(dest = %self.addr, "{e}; using protocol version 2: a target that is down there holds back the others");
                            version = 2;
                            continue;
                        }
                        Err(e) => self.failed(&mut failures, &format!("{e:#}")),
                        Ok((framed, last_applied)) => {
                            metrics::counter!(stats::PROXY_CONNECTS, "outcome" => "ok")
                                .increment(1);
                            if failures > 0 {
                                tracing::info!(dest = %self.addr, failures, "connected to server");
                            }
                            failures = 0;
                            backoff.reset();
                            match self.session(framed, last_applied, &stop, &drained).await {
                                Ok(()) => return,
                                Err(e) => tracing::warn!(dest = %self.addr, "link lost: {e:#}"),
                            }
                        }
                    }
                }
                Ok(Err(e)) => self.failed(&mut failures, &e.to_string()),
                Err(_) => self.failed(&mut failures, "connect timed out"),
            }
            tokio::select! {
                _ = drained.cancelled() => return,
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
                _ = backoff.sleep() => {}
            }
        }
    }

    fn failed(&self, failures: &mut u32, why: &str) {
        metrics::counter!(stats::PROXY_CONNECTS, "outcome" => "error").increment(1);
        *failures += 1;
        if *failures == 1 || failures.is_power_of_two() {
            tracing::warn!(
                dest = %self.addr, failures = *failures, pending = self.spool.pending(),
                "cannot reach server: {why}; records wait in the spool"
            );
        }
    }

    fn all_acked(&self) -> bool {
        self.spool.acked(self.index) >= self.spool.last()
    }

    /// TLS when configured, then HELLO and AUTH (one write), then WELCOME:
    /// returns the framed connection and the server's last applied record.
    async fn handshake(
        &self,
        sock: TcpStream,
        version: u16,
    ) -> anyhow::Result<(Framed<BoxIo, PeerCodec>, u64)> {
        let io = self.security.secure(sock, &self.addr).await?;
        let mut framed = Framed::new(io, PeerCodec::new(self.max_message));
        framed
            .feed(Message::Hello {
                version,
                stream: self.identity.stream,
                name: self.identity.name.clone(),
            })
            .await?;
        framed
            .send(Message::Auth {
                token: Secret(self.security.token()),
            })
            .await?;
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, framed.next())
            .await
            .context("no WELCOME in time")?;
        let last_applied = match welcome {
            Some(Ok(Message::Welcome {
                version: welcome,
                last_applied,
            })) if welcome == version => last_applied,
            Some(Ok(Message::Refuse {
                code: refuse::BAD_VERSION,
                reason,
            })) => return Err(OldServer(reason).into()),
            Some(Ok(Message::Refuse { code, reason })) => {
                bail!("server refused (code {code}): {reason}")
            }
            Some(Ok(other)) => bail!("expected WELCOME, got {other:?}"),
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context("reading the server's WELCOME"))
            }
            None => bail!("server closed the connection during the handshake"),
        };
        Ok((framed, last_applied))
    }

    async fn session(
        &self,
        framed: Framed<BoxIo, PeerCodec>,
        last_applied: u64,
        stop: &CancellationToken,
        drained: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.spool.ack(self.index, last_applied);
        let _up = link_up();
        let acked_before = self.spool.acked(self.index);
        metrics::counter!(stats::PROXY_RECORDS_ACKED).increment(0);
        let mut cursor = self.spool.cursor(acked_before + 1);
        // The server's TAKEN: records up to it no longer count against the
        // window (version 3; else the window counts from the ACK).
        let mut taken = 0u64;
        let (mut sink, mut stream) = framed.split();
        let mut spacing = Spacing::new(self.batch_spacing);
        let batches = metrics::counter!(stats::PROXY_BATCHES_SENT);
        loop {
            if stop.is_cancelled() && self.all_acked() {
                return Ok(());
            }
            let acked = self.spool.acked(self.index);
            let room = (cursor.position() - 1).saturating_sub(acked.max(taken)) < WINDOW;
            // A batch that is not full waits out the spacing since the
            // previous one started, gathering what is written meanwhile.
            let ready = cursor.ready();
            let held = spacing.held_until().filter(|_| {
                let readable = (self.spool.last() + 1).saturating_sub(cursor.position());
                ready && readable < BATCH_RECORDS as u64
            });
            if room && ready && held.is_none() {
                // An error (a record missing: a bug) ends the session;
                // the link reconnects and resends from the ACK.
                let read = cursor
                    .read(BATCH_RECORDS, BATCH_BYTES)
                    .await
                    .context("reading the spool")?;
                if let Some((first, records)) = read {
                    spacing.start();
                    sink.send(Message::Batch {
                        first_seq: first,
                        records,
                    })
                    .await?;
                    batches.increment(1);
                }
                continue;
            }
            tokio::select! {
                _ = drained.cancelled() => return Ok(()),
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
                ready = cursor.wait(), if room && held.is_none() => ready.context("waiting for the spool")?,
                _ = sleep_until(held), if room && held.is_some() => {}
                msg = stream.next() => match msg {
                    Some(Ok(Message::Ack { seq })) => self.spool.ack(self.index, seq),
                    Some(Ok(Message::Taken { seq })) => taken = taken.max(seq),
                    Some(Ok(Message::Rewind { seq })) => {
                        // A lagging target's backlog had no room: send
                        // again from there (never below what is acked).
                        let from = seq.max(self.spool.acked(self.index) + 1);
                        tracing::debug!(dest = %self.addr, from, "server asked to send again");
                        metrics::counter!(stats::PROXY_REWINDS).increment(1);
                        cursor.seek(from);
                    }
                    Some(Ok(Message::Refuse { code, reason })) => bail!("server refused (code {code}): {reason}"),
                    Some(Ok(other)) => bail!("unexpected {other:?} from the server"),
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("server closed the connection"),
                },
            }
        }
    }
}

/// Counts a live destination (a TCP session, or a NATS stream that
/// stores) in `syncs_proxy_links_up` while it is held.
pub(super) fn link_up() -> GaugeHeld {
    GaugeHeld::new(stats::PROXY_LINKS_UP)
}

/// Sleeps until `at` (never, when `None`: a `select!` branch disabled
/// then).
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
