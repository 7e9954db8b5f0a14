//! `syncs-status --proxy HOST:PORT --server HOST:PORT`: is replication healthy?

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use syncs_daemons::status;

/// Says whether syncs replication is healthy, and how far behind it is.
///
/// Reads the daemons' metrics endpoints (`--metrics` of the proxy,
/// `metrics =` of the server) and says it in a few lines. Exit code: 0
/// healthy, 1 not, 2 unreachable.
#[derive(Debug, Parser)]
#[command(name = "syncs-status", version)]
struct Args {
    /// A proxy's metrics address.
    #[arg(long, value_name = "HOST:PORT")]
    proxy: Vec<SocketAddr>,
    /// How many servers (-d) each proxy has.
    #[arg(long, default_value_t = 1)]
    destinations: usize,
    /// A server's metrics address.
    #[arg(long, value_name = "HOST:PORT")]
    server: Vec<SocketAddr>,
    /// Largest acceptable lag (age of the oldest unacknowledged record), in seconds.
    #[arg(long, default_value_t = 60)]
    max_lag: u64,
    /// Longest acceptable time a server's target may be down, in seconds.
    #[arg(long, default_value_t = 60)]
    max_down: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.proxy.is_empty() && args.server.is_empty() {
        eprintln!("give at least one --proxy or --server metrics address");
        return ExitCode::from(2);
    }
    let mut healthy = true;
    let mut unreachable = false;
    let daemons = args
        .proxy
        .iter()
        .map(|a| ("proxy", *a))
        .chain(args.server.iter().map(|a| ("server", *a)));
    for (kind, addr) in daemons {
        match status::fetch(addr) {
            Ok(m) => {
                let v = if kind == "proxy" {
                    status::proxy(&m, args.destinations, Duration::from_secs(args.max_lag))
                } else {
                    status::server(&m, Duration::from_secs(args.max_down))
                };
                println!(
                    "{kind} {addr}: {}",
                    if v.healthy { "OK" } else { "UNHEALTHY" }
                );
                for l in v.lines {
                    println!("{l}");
                }
                healthy &= v.healthy;
            }
            Err(e) => {
                println!("{kind} {addr}: UNREACHABLE ({e:#})");
                unreachable = true;
            }
        }
    }
    if unreachable {
        ExitCode::from(2)
    } else if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
