//! Shutdown signalling: one token for every task, tripped by SIGINT/SIGTERM.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the work in hand"),
            _ = int.recv() => tracing::info!("SIGINT: finishing the work in hand"),
        }
        t.cancel();
    });
    Ok(token)
}

/// Tells systemd (Type=notify) the daemon is ready; a no-op outside systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY: {e}");
    }
}

/// Tells systemd the daemon is stopping; a no-op outside systemd.
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!("sd_notify STOPPING: {e}");
    }
}
