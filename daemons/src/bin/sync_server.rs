//! `sync_server <config.ini>`: the remote end of syncs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use syncs_daemons::{config::ServerConfig, server, shutdown, telemetry};

/// Receives operations from syncs proxies and applies them to the targets
/// named by the rules.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The INI configuration file (see configs/rmt.ini).
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ServerConfig::load(&args.config)?;
    telemetry::init_logging(&config.log_level);
    if let Some(addr) = config.metrics {
        telemetry::serve_metrics(addr)?;
    }
    let stop = shutdown::on_signals().context("installing signal handlers")?;
    server::run(config, stop).await
}
