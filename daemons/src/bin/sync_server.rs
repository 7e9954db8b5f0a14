//! `sync_server [--metrics HOST:PORT] <config.ini>`: the remote end of syncs.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use syncs_daemons::{config::ServerConfig, server, shutdown, telemetry};

/// The syncs server: applies replicated Redis and MongoDB writes.
///
/// Receives operations from syncs proxies and applies them to the targets
/// named by the rules.
#[derive(Debug, Parser)]
#[command(name = "sync_server", version)]
struct Args {
    /// The INI configuration file (see configs/rmt.ini), or an rmt.ini in
    /// the original system's format (docs/migrating.md).
    config: PathBuf,
    /// Serve Prometheus metrics here (`/metrics`); overrides `[server]
    /// metrics` (an original-format file has no place for it).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ServerConfig::load(&args.config)?;
    if args.metrics.is_some() {
        config.metrics = args.metrics;
    }
    telemetry::init_logging(&config.log_level);
    if let Some(addr) = config.metrics {
        telemetry::serve_metrics(addr)?;
    }
    let stop = shutdown::on_signals().context("installing signal handlers")?;
    server::run(config, stop).await
}
