//! `proxy -u <socket> -d <host[:port]>`: the local end of syncs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use syncs_daemons::proxy::spool::{Fsync, SpoolConfig, WhenFull};
use syncs_daemons::proxy::{self, ProxyOptions};
use syncs_daemons::{shutdown, telemetry};

/// The syncs proxy: forwards local writes to the syncs servers.
///
/// Accepts frames from the syncs client libraries on a unix socket, keeps
/// them in its spool and forwards them to one or more sync_servers.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
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
        required_unless_present = "nats"
    )]
    dest: Vec<String>,
    /// Publish every record to NATS JetStream instead of (or beside) the
    /// direct links: server URLs of one NATS cluster, repeat or comma-separate.
    #[arg(long, value_name = "URL")]
    nats: Vec<String>,
    /// JetStream stream the records go to (created if absent).
    #[arg(long, default_value = "SYNCS", value_name = "NAME")]
    nats_stream: String,
    /// Subject prefix: records go to <prefix>.<partition>.<stream id hex>.
    #[arg(long, default_value = "syncs", value_name = "PREFIX")]
    nats_prefix: String,
    /// Partitions, when this proxy creates the stream (else the stream's own).
    #[arg(long, default_value_t = 16)]
    nats_partitions: u16,
    /// Stream size limit, when this proxy creates the stream.
    #[arg(long, default_value = "10GiB", value_parser = telemetry::parse_size)]
    nats_max_bytes: u64,
    /// Stream age limit, when this proxy creates the stream (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = syncs_dsl::parse_duration)]
    nats_max_age: Duration,
    /// Stream replicas, when this proxy creates the stream.
    #[arg(long, default_value_t = 1)]
    nats_replicas: usize,
    /// Records per NATS message, at most (format 2). 1 writes one record
    /// per message (format 1), for sync_servers older than format 2:
    /// upgrade the servers first (docs/operations.md).
    #[arg(long, default_value_t = 256, value_name = "N")]
    nats_records_per_message: u32,
    /// Name of this proxy in the servers' logs and metrics (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Largest frame accepted from a client.
    #[arg(long, default_value = "64MiB", value_parser = parse_frame)]
    max_frame: u32,
    /// Bytes of large frames (above 64 KiB) being read from all clients
    /// together; past it clients wait (are not read from) until frames in
    /// progress complete. At least --max-frame.
    #[arg(long, default_value = "256MiB", value_parser = telemetry::parse_size)]
    frame_budget: u64,
    /// Directory of the durable spool of records not yet acknowledged
    /// (default: $STATE_DIRECTORY/<socket name>, or /var/lib/syncs/<socket name>).
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// When spooled records are fsynced: `always` (before a frame counts as
    /// accepted; concurrent frames share one fsync), a period such as
    /// `100ms`, or `never` (only on segment close and shutdown).
    #[arg(long, default_value = "always", value_parser = clap::value_parser!(Fsync))]
    fsync: Fsync,
    /// With `--fsync always`: the least time between the starts of two
    /// fsyncs (`1ms`); the frames written meanwhile share the next one.
    /// A SYNC (or a client at its bound of frames not yet durable) is not
    /// held: its fsync starts at once, and it is still answered only once
    /// its frames are fsynced. 0 (the default): each fsync starts as soon
    /// as the previous one returned.
    #[arg(long, default_value = "0", value_parser = syncs_dsl::parse_duration)]
    fsync_spacing: Duration,
    /// The least time between the starts of two batches to a server that
    /// are not full (`1ms`): the records written meanwhile go together, so
    /// a steady stream costs fewer batches (CPU in proxy, server and
    /// target), each record up to this much later. 0 (the default): every
    /// batch goes as soon as its records are readable.
    #[arg(long, default_value = "0", value_parser = syncs_dsl::parse_duration)]
    batch_spacing: Duration,
    /// Disk cap of the spool.
    #[arg(long, default_value = "10GiB", value_parser = telemetry::parse_size)]
    spool_max: u64,
    /// At the disk cap: `block` clients until servers catch up, or `refuse`
    /// their frames (each one counted and logged).
    #[arg(long, default_value = "block", value_parser = clap::value_parser!(WhenFull))]
    when_full: WhenFull,
    /// Size of one spool segment file.
    #[arg(long, default_value = "64MiB", value_parser = telemetry::parse_size)]
    segment_size: u64,
    /// Memory for the newest records, to send them without reading the
    /// disk (older ones are read back from the spool files).
    #[arg(long, default_value = "8MiB", value_parser = telemetry::parse_size)]
    spool_memory: u64,
    /// Permissions of the socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// How long to wait at shutdown for the servers to acknowledge (`10s`;
    /// a number alone is seconds).
    #[arg(long, default_value = "10s", value_parser = syncs_dsl::parse_duration)]
    drain_timeout: Duration,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
    /// Log level (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Async worker threads (the spool's writer and syncer threads and the
    /// links' thread come on top). One keeps a small machine's cores for the application and is
    /// the fastest there; raise it for many busy clients or TLS on a
    /// machine with cores to spare.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// CPU scheduling policy. `batch` (SCHED_BATCH, the default): a woken
    /// proxy does not preempt the application that woke it, so it reads
    /// many frames per wake-up (the nice value is kept; the links' thread
    /// keeps the default policy). `inherit`: leave the policy the proxy was
    /// started with.
    #[arg(long, value_enum, default_value = "batch", value_name = "POLICY")]
    sched: syncs_daemons::sched::SchedPolicy,
    #[command(flatten)]
    security: syncs_daemons::security::proxy::ProxyFlags,
}

fn parse_frame(s: &str) -> Result<u32, String> {
    let n = telemetry::parse_size(s)?;
    u32::try_from(n).map_err(|_| "must be below 4GiB".to_owned())
}

/// The default spool directory for a socket.
fn default_spool_dir(socket: &std::path::Path) -> PathBuf {
    let base =
        syncs_daemons::config::state_directory().unwrap_or_else(|| PathBuf::from("/var/lib/syncs"));
    let name = socket
        .file_name()
        .map(|n| format!("{}.spool", n.to_string_lossy()))
        .unwrap_or_else(|| "proxy.spool".to_owned());
    base.join(name)
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread starts: threads inherit the policy.
    let sched = syncs_daemons::sched::apply(args.sched);
    syncs_daemons::runtime::build(args.threads)?.block_on(run(args, sched))
}

async fn run(
    args: Args,
    sched: Result<(), syncs_daemons::sched::SchedError>,
) -> anyhow::Result<()> {
    telemetry::init_logging(&args.log_level);
    if let Err(e) = sched {
        tracing::warn!(
            "cannot set the scheduling policy `{:?}` ({e}); running with the one the proxy was started with",
            args.sched
        );
    }
    // TLS, token and the plaintext rule: checked before anything connects.
    let security = {
        use syncs_daemons::security::proxy::{ProxySettings, SecurityOptions};
        let settings = ProxySettings::resolve(&args.security)?;
        SecurityOptions::load(&settings, &args.dest)?
    };
    if let Some(addr) = args.metrics {
        telemetry::serve_metrics(addr)?;
    }
    let spool = SpoolConfig {
        dir: args
            .spool_dir
            .clone()
            .unwrap_or_else(|| default_spool_dir(&args.socket)),
        segment_bytes: args.segment_size,
        fsync: args.fsync,
        fsync_spacing: args.fsync_spacing,
        max_bytes: args.spool_max,
        when_full: args.when_full,
        memory_bytes: usize::try_from(args.spool_memory)
            .map_err(|_| anyhow!("--spool-memory is too large"))?,
    };
    let nats = if args.nats.is_empty() {
        None
    } else {
        let settings = syncs_daemons::nats::NatsSettings {
            urls: syncs_daemons::nats::parse_urls(&args.nats),
            stream: args.nats_stream,
            prefix: args.nats_prefix,
            partitions: args.nats_partitions,
            max_bytes: i64::try_from(args.nats_max_bytes)
                .map_err(|_| anyhow!("--nats-max-bytes is too large"))?,
            max_age: args.nats_max_age,
            replicas: args.nats_replicas,
            records_per_message: args.nats_records_per_message,
            ..Default::default()
        };
        settings.validate().context("--nats settings")?;
        Some(settings)
    };
    let opts = ProxyOptions {
        socket: args.socket,
        destinations: args.dest,
        name: args.name.unwrap_or_else(host_name),
        max_frame: args.max_frame,
        frame_budget: usize::try_from(args.frame_budget)
            .map_err(|_| anyhow!("--frame-budget is too large"))?,
        spool,
        socket_mode: args.socket_mode,
        drain_timeout: args.drain_timeout,
        nats,
        security,
        batch_spacing: args.batch_spacing,
    };
    let stop = shutdown::on_signals().context("installing signal handlers")?;
    proxy::run(opts, stop).await
}
