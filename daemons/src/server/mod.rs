//! The server: accepts proxies, applies their records in order, acknowledges.
//!
//! One task per proxy connection ([`session`]). Streams (one per proxy
//! process, named by the id in its HELLO) are independent: each applies its
//! records in sequence order; different streams run concurrently.

mod batch;
mod lane;
pub mod nats;
pub mod rules;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use syncs_engine::apply::dead_letter::DeadLetters;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::ServerConfig;
use rules::LiveRules;

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    pub rules: Arc<LiveRules>,
    pub dead_letters: DeadLetters,
    pub max_frame: u32,
    /// Bytes one stream holds in memory for one lagging target.
    pub target_backlog: usize,
    /// Per stream: the last applied sequence, and the token of the session
    /// that owns the stream now.
    pub streams: Mutex<HashMap<u64, Arc<session::StreamSlot>>>,
    pub stop: CancellationToken,
    /// TLS acceptor and token (`[tls]`, `[auth]`).
    pub security: crate::security::server::ServerSecurity,
}

impl Shared {
    pub fn new(
        rules: Arc<LiveRules>,
        config: &ServerConfig,
        security: crate::security::server::ServerSecurity,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Shared {
            rules,
            dead_letters: DeadLetters::new(&config.dead_letter),
            max_frame: config.max_frame,
            target_backlog: config.target_backlog,
            streams: Mutex::new(HashMap::new()),
            stop,
            security,
        })
    }
}

/// Runs the server until `stop` is cancelled, then lets every session finish
/// the batch in hand.
pub async fn run(config: ServerConfig, stop: CancellationToken) -> anyhow::Result<()> {
    if let (Some(original), crate::config::RulesSource::Original(path)) =
        (&config.original, &config.rules)
    {
        tracing::info!(
            "{} is in the original system's format: running it as the original did; \
             `syncs-check --migrate {} --out <dir>` writes syncs' own rmt.ini and rules \
             from it (docs/migrating.md)",
            path.display(),
            path.display()
        );
        for line in original.describe() {
            tracing::info!("  {line}");
        }
    }
    if matches!(config.transport, crate::nats::Transport::Nats(_)) {
        // Before the targets are built: their default `pool` depends on it.
        syncs_engine::apply::redis::set_shared_streams(true);
    }
    let live = LiveRules::load(&config.rules).map_err(|errors| {
        anyhow::anyhow!(
            "rules {} are not valid:\n{}",
            config.rules,
            errors.join("\n")
        )
    })?;
    let live = Arc::new(live);
    // Certificates and token are read before listening: a bad file stops
    // the start, naming the file.
    let security = crate::security::server::ServerSecurity::load(&config.security)
        .context("loading the [tls] / [auth] settings")?;
    rules::watch(Arc::clone(&live), Duration::from_millis(300), stop.clone())
        .context("watching the rules")?;
    if let crate::nats::Transport::Nats(conf) = &config.transport {
        let shared = Shared::new(live, &config, security, stop.clone());
        return nats::run(shared, (**conf).clone(), stop).await;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    warn_if_exposed(&config, &security);
    tracing::info!(
        listen = %config.listen, rules = %config.rules,
        security = security.describe(),
        allow = %security.allowlist().map_or("any address".to_owned(), ToString::to_string),
        "sync_server ready"
    );
    crate::shutdown::notify_ready();
    serve(listener, live, &config, security, stop).await
}

/// Says loudly when proxies may connect unencrypted from other machines
/// (`plaintext = yes`, or an original-format file, off loopback).
fn warn_if_exposed(config: &ServerConfig, security: &crate::security::server::ServerSecurity) {
    if security.is_tls() || config.listen.ip().is_loopback() {
        return;
    }
    let original = config.original.is_some();
    match security.allowlist() {
        Some(allow) => tracing::warn!(
            "listening on {} WITHOUT TLS{}: {} cross the network unencrypted, and only the \
             allowlist ({allow}) keeps other machines out. Configure [tls] \
             (docs/operations.md, Security; docs/migrating.md)",
            config.listen,
            if original {
                ", as the original system did"
            } else {
                ""
            },
            if security.has_token() {
                "records and the token"
            } else {
                "records, unauthenticated,"
            },
        ),
        None => tracing::warn!(
            "listening on {} WITHOUT TLS and without `allow`: any machine that reaches this \
             port can write to the targets. Configure [tls] or `allow` (docs/operations.md, Security)",
            config.listen
        ),
    }
}

/// Accept loop on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: TcpListener,
    live: Arc<LiveRules>,
    config: &ServerConfig,
    security: crate::security::server::ServerSecurity,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Shared::new(live, config, security, stop.clone());
    let admission = crate::security::limits::Admission::new(
        config.max_connections,
        syncs_engine::stats::SERVER_CONNECTIONS_REFUSED,
        "max_connections",
    );
    let tracker = TaskTracker::new();
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    backoff.reset();
                    // Not in `allow`, or over max_connections: `socket` is
                    // dropped, i.e. closed, before anything is read.
                    if !shared.security.admits(peer) { continue }
                    let Some(slot) = admission.admit(&peer) else { continue };
                    let _ = socket.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    tracker.spawn(async move {
                        // TLS handshake (refusals are logged and counted there).
                        let deadline = tokio::time::Instant::now()
                            + crate::security::server::PRE_SESSION_DEADLINE;
                        if let Ok(io) = shared.security.accept(socket, peer, deadline).await {
                            if let Err(e) = session::run(io, peer, shared, deadline).await {
                                tracing::warn!(%peer, "session ended: {e:#}");
                            }
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    let wait = backoff.next_wait();
                    tracing::error!("accept failed: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    crate::shutdown::notify_stopping();
    tracker.close();
    tracker.wait().await;
    tracing::info!("sync_server stopped");
    Ok(())
}
