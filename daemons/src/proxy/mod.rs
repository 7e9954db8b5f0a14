//! The proxy: the local end. Client libraries write frames to its unix
//! socket; it validates each frame, appends it to the durable [`spool`]
//! (which numbers it), and forwards it to every destination server (see
//! [`link`]), resending whatever a server has not acknowledged — also
//! after a crash or restart of the proxy.

pub mod client;
pub mod link;
pub mod nats;
pub mod pipe;
pub mod spool;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use link::{Identity, Link};
use spool::{Spool, SpoolConfig};

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub socket: PathBuf,
    /// `host:port` of each server; every one gets every record.
    pub destinations: Vec<String>,
    pub name: String,
    pub max_frame: u32,
    /// Bytes of large frames being read from all clients together
    /// (`--frame-budget`): past it, clients wait before they may send more.
    pub frame_budget: usize,
    pub spool: SpoolConfig,
    pub socket_mode: u32,
    /// How long SIGTERM waits for the servers to acknowledge what is spooled.
    pub drain_timeout: Duration,
    /// TLS and token towards the servers, socket group, client limit.
    pub security: crate::security::proxy::SecurityOptions,
    /// Also publish every record to NATS JetStream (`--nats`).
    pub nats: Option<crate::nats::NatsSettings>,
    /// The least time between the starts of two batches that are not full,
    /// per server (`--batch-spacing`; zero: none).
    pub batch_spacing: Duration,
}

/// Adds the default port to a destination without one.
pub fn with_default_port(dest: &str) -> String {
    let has_port = match dest.rsplit_once(':') {
        Some((host, port)) => {
            !host.ends_with(':')
                && port.parse::<u16>().is_ok()
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        dest.to_owned()
    } else {
        format!("{dest}:{}", syncs_engine::wire::peer::DEFAULT_PORT)
    }
}

/// Binds the socket, replacing a stale socket file left by a crash but
/// never one that a live proxy still answers on.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running proxy", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
        tracing::info!(path = %path.display(), "removed a stale socket file");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
    Ok(listener)
}

/// Runs the proxy until `stop`; then stops accepting, and waits up to the
/// drain timeout for every spooled record to be acknowledged.
pub async fn run(opts: ProxyOptions, stop: CancellationToken) -> anyhow::Result<()> {
    if opts.destinations.is_empty() && opts.nats.is_none() {
        bail!("at least one destination (-d or --nats) is needed");
    }
    crate::spacing::check("--batch-spacing", opts.batch_spacing).map_err(anyhow::Error::msg)?;
    let listener = bind(&opts.socket, opts.socket_mode)?;
    if let Some(gid) = opts.security.socket_group {
        crate::security::proxy::chown_socket(&opts.socket, gid)?;
    }
    serve(listener, opts, stop).await
}

/// Runs on an already bound listener.
pub async fn serve(
    listener: UnixListener,
    opts: ProxyOptions,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let spool_dir = opts.spool.dir.clone();
    let destinations = opts.destinations.len() + usize::from(opts.nats.is_some());
    let opened = tokio::task::spawn_blocking({
        let config = opts.spool.clone();
        move || Spool::open(config, destinations)
    })
    .await
    .context("opening the spool")?
    .with_context(|| format!("opening the spool in {}", spool_dir.display()))?;
    let spool = Arc::new(opened);
    if spool.pending() > 0 {
        tracing::info!(
            pending = spool.pending(), spool = %spool_dir.display(),
            "recovered records not yet acknowledged; they are sent first"
        );
    }
    let identity = Identity {
        name: opts.name.clone(),
        stream: spool.stream_id(),
    };
    let drained = CancellationToken::new();
    // The links end once every record is acknowledged after this: once
    // the clients are done, with what they wrote before the stop taken.
    let no_more_records = CancellationToken::new();
    // The links run on a thread of their own, under the default policy
    // even when the rest of the proxy runs as SCHED_BATCH: a woken link
    // (the server's ACK, records made durable) goes at once. On the
    // workers, as a batch thread, a link waited behind every busy client:
    // with 16 clients writing, the proxy forwarded at a third of the rate
    // it took records in, and the target waited (docs/benchmarks.md).
    let link_runtime = crate::runtime::Dedicated::start("syncs-link", || {
        if let Err(e) = crate::sched::unbatch_current_thread() {
            tracing::warn!("the link thread stays SCHED_BATCH: {e}");
        }
    })?;
    let links = TaskTracker::new();
    for (index, dest) in opts.destinations.iter().enumerate() {
        let link = Link {
            index,
            addr: with_default_port(dest),
            identity: identity.clone(),
            spool: Arc::clone(&spool),
            max_message: u64::from(opts.max_frame) * 2 + (1 << 20),
            security: Arc::clone(&opts.security.security),
            batch_spacing: opts.batch_spacing,
        };
        links.spawn_on(
            link.run(no_more_records.clone(), drained.clone()),
            link_runtime.handle(),
        );
    }
    if let Some(settings) = &opts.nats {
        let link = nats::NatsLink {
            index: opts.destinations.len(),
            settings: settings.clone(),
            identity: identity.clone(),
            spool: Arc::clone(&spool),
            max_frame: opts.max_frame,
        };
        links.spawn_on(
            link.run(no_more_records.clone(), drained.clone()),
            link_runtime.handle(),
        );
    }
    links.close();
    tracing::info!(
        socket = %opts.socket.display(), destinations = ?opts.destinations,
        name = %identity.name, stream = format!("{:016x}", identity.stream),
        "proxy ready"
    );
    crate::shutdown::notify_ready();
    let clients = TaskTracker::new();
    let limits = client::Limits::new(opts.max_frame, opts.frame_budget);
    let admission = crate::security::limits::Admission::new(
        opts.security.max_clients,
        syncs_engine::stats::PROXY_CLIENTS_REFUSED,
        "max_clients",
    );
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, addr)) => {
                    backoff.reset();
                    // Over --max-clients: `sock` is dropped, i.e. closed.
                    let Some(slot) = admission.admit(&addr) else { continue };
                    let client = client::serve(
                        sock,
                        Arc::clone(&spool),
                        limits.clone(),
                        stop.clone(),
                    );
                    clients.spawn(async move {
                        client.await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::error!("accept failed: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    crate::shutdown::notify_stopping();
    // Clients held at a full spool's cap would wait for ever now.
    spool.stop_waiting();
    drop(listener);
    let _ = std::fs::remove_file(&opts.socket);
    clients.close();
    clients.wait().await;
    no_more_records.cancel();
    if let Err(e) = spool.flush().await {
        tracing::error!("flushing the spool at shutdown: {e}");
    }
    tracing::info!(
        pending = spool.pending(),
        "no longer accepting; waiting for acknowledgements"
    );
    if tokio::time::timeout(opts.drain_timeout, links.wait())
        .await
        .is_err()
    {
        drained.cancel();
        links.wait().await;
        tracing::warn!(
            pending = spool.pending(),
            spool = %spool_dir.display(),
            "drain timed out; the records not yet acknowledged stay in the spool and are sent at the next start"
        );
    }
    drop(link_runtime);
    tracing::info!("proxy stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_default_port;

    #[test]
    fn default_port_is_added_only_when_missing() {
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:7379");
        assert_eq!(with_default_port("host:7000"), "host:7000");
        assert_eq!(with_default_port("[::1]:7000"), "[::1]:7000");
        assert_eq!(with_default_port("[::1]"), "[::1]:7379");
    }
}
