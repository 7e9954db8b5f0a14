//! `proxy -u <socket> -d <host[:port]>`: the local end of syncs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use syncs_daemons::proxy::{self, ProxyOptions};
use syncs_daemons::{shutdown, telemetry};

/// Accepts frames from the syncs client libraries on a unix socket and
/// forwards them to one or more sync_servers.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Unix socket the client libraries write to.
    #[arg(short = 'u', long = "socket", value_name = "PATH")]
    socket: PathBuf,
    /// A server, host[:port] (port 7379 by default). Repeat to send every
    /// record to several servers.
    #[arg(
        short = 'd',
        long = "dest",
        value_name = "HOST[:PORT]",
        required = true
    )]
    dest: Vec<String>,
    /// Name of this proxy in the servers' logs and metrics (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Largest frame accepted from a client.
    #[arg(long, default_value = "64MiB", value_parser = parse_frame)]
    max_frame: u32,
    /// Memory held for records not yet acknowledged; clients wait beyond it.
    #[arg(long, default_value = "256MiB", value_parser = telemetry::parse_size)]
    max_pending: u64,
    /// Permissions of the socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Seconds to wait at shutdown for the servers to acknowledge.
    #[arg(long, default_value_t = 10)]
    drain_timeout: u64,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
    /// Log level (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_frame(s: &str) -> Result<u32, String> {
    let n = telemetry::parse_size(s)?;
    u32::try_from(n).map_err(|_| "must be below 4GiB".to_owned())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|_| format!("`{s}` is not an octal mode like 660"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proxy".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init_logging(&args.log_level);
    if let Some(addr) = args.metrics {
        telemetry::serve_metrics(addr)?;
    }
    let opts = ProxyOptions {
        socket: args.socket,
        destinations: args.dest,
        name: args.name.unwrap_or_else(host_name),
        max_frame: args.max_frame,
        max_pending_bytes: usize::try_from(args.max_pending)
            .map_err(|_| anyhow!("--max-pending is too large"))?,
        socket_mode: args.socket_mode,
        drain_timeout: Duration::from_secs(args.drain_timeout),
    };
    let stop = shutdown::on_signals().context("installing signal handlers")?;
    proxy::run(opts, stop).await
}
