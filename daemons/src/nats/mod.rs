//! What the proxy and the server share when NATS JetStream carries the
//! records between them instead of the direct TCP link: the settings, the
//! subject of each source, its partition, the message headers (the one
//! codec of them is [`envelope`]), and the JetStream stream and KV buckets
//! both ends create if absent.
//!
//! Layout (docs/protocol.md, section 4):
//!
//! - stream `<stream>` (default `SYNCS`, limits retention), subjects
//!   `<prefix>.>`; a message carries one spool record (format 1) or up to
//!   256 consecutive ones (format 2, [`envelope`]), subject
//!   `<prefix>.<partition>.<stream id hex>`. Each target reads a partition
//!   through a durable consumer of its own (`p<partition>-<target>`), and the
//!   server holding the partition purges what every target has acknowledged:
//!   a record stays until the last target that reads it is done with it;
//! - KV bucket `<stream>_leases`: `p<partition>` = id of the server that
//!   consumes that partition now, `member.<server id>` = a live server;
//!   both expire after the lease TTL unless renewed;
//! - KV bucket `<stream>_applied`: `<stream id hex>.<target>` = last sequence
//!   of that source applied at that target by whichever server held its
//!   partition (`<stream id hex>` alone: the joint checkpoint of syncs
//!   before per-target consumers, read once as a starting point).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::{self, kv, stream};

pub mod envelope;

/// Where the records go and how the stream is shaped. The proxy's flags
/// and the server's `[transport]` section both fill one.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSettings {
    /// Server URLs of one NATS cluster (`nats://host:4222`).
    pub urls: Vec<String>,
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix: records go to `<prefix>.<partition>.<stream hex>`.
    pub prefix: String,
    /// Number of partitions; used when creating the stream, afterwards the
    /// stream's own value (in its description) wins.
    pub partitions: u16,
    /// Stream limits, applied when the stream is created.
    pub max_bytes: i64,
    pub max_age: Duration,
    pub replicas: usize,
    /// Broker-side dedupe window (`Nats-Msg-Id`).
    pub duplicate_window: Duration,
    /// Proxy: records per message, at most; 1 writes format 1 (one record
    /// per message, what servers before format 2 read), more writes
    /// format 2 ([`envelope`]).
    pub records_per_message: u32,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            stream: "SYNCS".to_owned(),
            prefix: "syncs".to_owned(),
            partitions: 16,
            max_bytes: 10 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            records_per_message: 256,
        }
    }
}

impl NatsSettings {
    /// Checks names the broker would refuse or misread.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.urls.is_empty() {
            bail!("no NATS URL");
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !token_ok(&self.stream) {
            bail!(
                "stream name `{}`: use letters, digits, `-` and `_`",
                self.stream
            );
        }
        if self.prefix.is_empty() || !self.prefix.split('.').all(token_ok) {
            bail!(
                "subject prefix `{}`: dot-separated tokens of letters, digits, `-` and `_`",
                self.prefix
            );
        }
        if self.partitions == 0 || self.partitions > 1024 {
            bail!("partitions must be 1..=1024, not {}", self.partitions);
        }
        if !(1..=65_536).contains(&self.records_per_message) {
            bail!(
                "records per message must be 1..=65536, not {}",
                self.records_per_message
            );
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("replicas must be 1..=5, not {}", self.replicas);
        }
        Ok(())
    }

    /// The comma-joined URL list async-nats takes.
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }

    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.stream)
    }

    pub fn applied_bucket(&self) -> String {
        format!("{}_applied", self.stream)
    }

    /// Filter subject of one partition's consumer.
    pub fn partition_filter(&self, partition: u16) -> String {
        format!("{}.{partition}.>", self.prefix)
    }

    /// The prefix of every durable consumer of one partition.
    pub fn consumer_prefix(partition: u16) -> String {
        format!("p{partition}-")
    }

    /// The durable consumer through which `target` reads one partition
    /// (target names are identifiers: `-` never occurs in them).
    pub fn consumer_name(partition: u16, target: &str) -> String {
        format!("{}{target}", Self::consumer_prefix(partition))
    }
}

/// The key of a source's checkpoint at one target in the applied bucket.
pub fn checkpoint_key(stream: u64, target: &str) -> String {
    format!("{}.{target}", legacy_checkpoint_key(stream))
}

/// The key of a source's joint checkpoint (all targets together), as syncs
/// wrote it before each target had its own consumer.
pub fn legacy_checkpoint_key(stream: u64) -> String {
    format!("{stream:016x}")
}

/// FNV-1a, 64 bits: the hash that places a source in a partition.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// Splits `a,b` lists and repeated flags into URLs, adding `nats://` where
/// no scheme is given.
pub fn parse_urls<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("nats://{s}")
            }
        })
        .collect()
}

/// The partition of a source: FNV-1a of its stream id (16 hex digits)
/// modulo the number of partitions. Stable across versions: proxies and
/// servers of different builds must agree.
pub fn partition_of(stream: u64, partitions: u16) -> u16 {
    let h = fnv1a(format!("{stream:016x}").as_bytes());
    (h % u64::from(partitions.max(1))) as u16
}

/// The subject a source's records are published to.
pub fn subject(prefix: &str, partitions: u16, stream: u64) -> String {
    format!(
        "{prefix}.{}.{stream:016x}",
        partition_of(stream, partitions)
    )
}

/// The stream's description, which records its partition count so that
/// every proxy and server uses the same one.
fn description(partitions: u16) -> String {
    format!("syncs records; partitions={partitions}")
}

/// Reads the partition count from a stream description written by
/// [`description`].
pub fn partitions_in(description: Option<&str>) -> Option<u16> {
    description?
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("partitions="))
        .find_map(|n| n.parse().ok())
        .filter(|&n| n > 0)
}

/// Connects to the cluster; async-nats reconnects by itself afterwards.
pub async fn connect(settings: &NatsSettings, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .max_reconnects(None)
        .connect(settings.url_list())
        .await
        .with_context(|| format!("connecting to NATS at {}", settings.url_list()))
}

/// The stream's creation error, with what to do when the NATS server
/// cannot reserve `max_bytes` (JetStream reserves a stream's whole limit
/// up front, against `max_file_store`, by default 75% of the free disk).
fn stream_error(
    e: jetstream::context::CreateStreamError,
    settings: &NatsSettings,
) -> anyhow::Error {
    let full = matches!(
        e.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(ref j)
            if j.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED
    );
    if full {
        anyhow!(
            "{e}: the NATS server cannot reserve this stream's max_bytes ({} bytes); lower it \
             (`max_bytes` in the server's [transport], `--nats-max-bytes` for the proxy) or \
             raise `max_file_store` in the NATS server's jetstream block (by default 75% of \
             its free disk)",
            settings.max_bytes
        )
    } else {
        anyhow!("{e}")
    }
}

/// Gets the stream, creating it with `settings` if absent; returns the
/// partition count the stream was created with.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> anyhow::Result<(stream::Stream, u16)> {
    let config = stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.prefix)],
        description: Some(description(settings.partitions)),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        max_bytes: settings.max_bytes,
        max_age: settings.max_age,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    };
    let mut s = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| stream_error(e, settings))
        .with_context(|| format!("getting or creating the stream {}", settings.stream))?;
    let info = s
        .info()
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading the stream {}", settings.stream))?;
    if info.config.retention == stream::RetentionPolicy::WorkQueue {
        bail!(
            "stream {name} has work-queue retention (made by an older syncs); each target now \
             reads it through a consumer of its own, which needs limits retention, and NATS \
             cannot change a stream's retention. Let the servers drain it (`nats stream info \
             {name}`: 0 messages), delete it (`nats stream rm {name}`) and start again, or set \
             another stream name (docs/migrating.md)",
            name = settings.stream
        );
    }
    let partitions = match partitions_in(info.config.description.as_deref()) {
        Some(p) => p,
        None => bail!(
            "stream {} exists but was not created by syncs (no `partitions=` in its description)",
            settings.stream
        ),
    };
    if partitions != settings.partitions {
        tracing::warn!(
            stream = %settings.stream, configured = settings.partitions, actual = partitions,
            "the stream was created with another partition count; using the stream's"
        );
    }
    Ok((s, partitions))
}

/// Gets a KV bucket, creating it if absent. The bucket's stream is created
/// here as `create_key_value` would, because that call first asks for
/// account details that nats-server 2.9 answers in an older shape.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("syncs KV bucket {bucket}")),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("creating the KV bucket {bucket}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("opening the KV bucket {bucket}"))
}

/// The bucket of checkpoints (and of the format-2 fence), created if
/// absent: no expiry, the stream's replicas.
pub async fn applied_bucket(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        &settings.applied_bucket(),
        Duration::ZERO,
        settings.replicas,
    )
    .await
}

/// The server's `[transport]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Transport {
    /// Proxies connect to `listen` (the default).
    #[default]
    Tcp,
    /// Records come from a JetStream stream.
    Nats(Box<ServerNats>),
}

/// A server consuming from JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerNats {
    pub settings: NatsSettings,
    /// This server's id in the lease bucket (default: host name + pid).
    pub server_id: Option<String>,
    /// A partition lease lapses this long after its holder's last renewal.
    pub lease_ttl: Duration,
    /// Redelivery delay of a message taken but not acknowledged.
    pub ack_wait: Duration,
    /// Messages taken per pull.
    pub batch: usize,
    /// Unacknowledged messages per partition consumer, at most.
    pub max_ack_pending: i64,
    /// How long a source's missing record is waited for before the gap is
    /// logged and skipped.
    pub gap_timeout: Duration,
}

impl Default for ServerNats {
    fn default() -> Self {
        Self {
            settings: NatsSettings::default(),
            server_id: None,
            lease_ttl: Duration::from_secs(6),
            ack_wait: Duration::from_secs(10),
            batch: 512,
            max_ack_pending: 20_000,
            gap_timeout: Duration::from_secs(60),
        }
    }
}

/// Keys of the server's `[transport]` section.
pub const TRANSPORT_KEYS: [&str; 14] = [
    "kind",
    "nats_url",
    "stream",
    "subject_prefix",
    "partitions",
    "max_bytes",
    "max_age",
    "replicas",
    "server_id",
    "lease_ttl",
    "ack_wait",
    "batch",
    "max_ack_pending",
    "gap_timeout",
];

/// Parses the `[transport]` section (absent: TCP).
pub fn parse_transport(section: Option<&ini::Properties>) -> anyhow::Result<Transport> {
    let Some(sec) = section else {
        return Ok(Transport::Tcp);
    };
    let get = |k: &str| sec.get(k).map(str::trim).filter(|v| !v.is_empty());
    match get("kind").unwrap_or("tcp") {
        "tcp" => {
            if let Some((k, _)) = sec.iter().find(|(k, _)| *k != "kind") {
                bail!("`{k}` in [transport] needs kind = nats");
            }
            return Ok(Transport::Tcp);
        }
        "nats" => {}
        other => bail!("[transport] kind must be tcp or nats, not `{other}`"),
    }
    let mut n = ServerNats::default();
    let dur = |k: &str, d: Duration| -> anyhow::Result<Duration> {
        match get(k) {
            Some(v) => syncs_dsl::parse_duration(v).map_err(|e| anyhow!("`{k}`: {e}")),
            None => Ok(d),
        }
    };
    let num = |k: &str, d: u64| -> anyhow::Result<u64> {
        match get(k) {
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("`{k}` must be a whole number, not `{v}`")),
            None => Ok(d),
        }
    };
    if let Some(urls) = get("nats_url") {
        n.settings.urls = parse_urls(&[urls]);
    }
    if let Some(v) = get("stream") {
        n.settings.stream = v.to_owned();
    }
    if let Some(v) = get("subject_prefix") {
        n.settings.prefix = v.to_owned();
    }
    n.settings.partitions = u16::try_from(num("partitions", 16)?)
        .map_err(|_| anyhow!("`partitions` must be 1..=1024"))?;
    if let Some(v) = get("max_bytes") {
        let b = crate::telemetry::parse_size(v).map_err(|e| anyhow!("`max_bytes`: {e}"))?;
        n.settings.max_bytes = i64::try_from(b).map_err(|_| anyhow!("`max_bytes` is too large"))?;
    }
    n.settings.max_age = dur("max_age", n.settings.max_age)?;
    n.settings.replicas = usize::try_from(num("replicas", 1)?).unwrap_or(usize::MAX);
    n.server_id = get("server_id").map(str::to_owned);
    n.lease_ttl = dur("lease_ttl", n.lease_ttl)?;
    n.ack_wait = dur("ack_wait", n.ack_wait)?;
    n.gap_timeout = dur("gap_timeout", n.gap_timeout)?;
    n.batch = usize::try_from(num("batch", 512)?).unwrap_or(usize::MAX);
    n.max_ack_pending = i64::try_from(num("max_ack_pending", 20_000)?).unwrap_or(i64::MAX);
    n.settings.validate()?;
    if n.lease_ttl < Duration::from_secs(1) {
        bail!("`lease_ttl` must be at least 1s");
    }
    if n.ack_wait < Duration::from_secs(1) {
        bail!("`ack_wait` must be at least 1s");
    }
    if !(1..=10_000).contains(&n.batch) {
        bail!("`batch` must be 1..=10000");
    }
    if n.max_ack_pending < n.batch as i64 {
        bail!("`max_ack_pending` must be at least `batch`");
    }
    if let Some(id) = &n.server_id {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            bail!("`server_id` `{id}`: use letters, digits, `-` and `_`");
        }
    }
    Ok(Transport::Nats(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(text: &str) -> anyhow::Result<Transport> {
        let ini = ini::Ini::load_from_str(text)?;
        parse_transport(ini.section(Some("transport")))
    }

    #[test]
    fn transport_defaults_to_tcp() {
        assert_eq!(
            transport("[server]\nrules = r\n").expect("ok"),
            Transport::Tcp
        );
        assert_eq!(
            transport("[transport]\nkind = tcp\n").expect("ok"),
            Transport::Tcp
        );
        assert!(transport("[transport]\nkind = tcp\nstream = X\n").is_err());
        assert!(transport("[transport]\nkind = kafka\n").is_err());
    }

    #[test]
    fn nats_transport_parses_every_key() {
        let t = transport(
            "[transport]\nkind = nats\nnats_url = 127.0.0.1:4222, nats://10.0.0.2:4222\nstream = REC\nsubject_prefix = a.b\npartitions = 8\nmax_bytes = 1GiB\nmax_age = 2d\nreplicas = 3\nserver_id = s-1\nlease_ttl = 4s\nack_wait = 30s\nbatch = 100\nmax_ack_pending = 5000\ngap_timeout = 500ms\n",
        )
        .expect("valid");
        let Transport::Nats(n) = t else {
            panic!("expected nats")
        };
        assert_eq!(
            n.settings.urls,
            vec!["nats://127.0.0.1:4222", "nats://10.0.0.2:4222"]
        );
        assert_eq!(n.settings.stream, "REC");
        assert_eq!(n.settings.prefix, "a.b");
        assert_eq!(n.settings.partitions, 8);
        assert_eq!(n.settings.max_bytes, 1 << 30);
        assert_eq!(n.settings.max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(n.settings.replicas, 3);
        assert_eq!(n.server_id.as_deref(), Some("s-1"));
        assert_eq!(n.lease_ttl, Duration::from_secs(4));
        assert_eq!(n.ack_wait, Duration::from_secs(30));
        assert_eq!(n.batch, 100);
        assert_eq!(n.max_ack_pending, 5000);
        assert_eq!(n.gap_timeout, Duration::from_millis(500));
    }

    #[test]
    fn nats_transport_refuses_bad_values() {
        for bad in [
            "partitions = 0",
            "partitions = 70000",
            "lease_ttl = ten",
            "lease_ttl = 500ms",
            "batch = 0",
            "server_id = a.b",
            "subject_prefix = a..b",
            "max_age = 5x",
        ] {
            let text = format!("[transport]\nkind = nats\n{bad}\n");
            assert!(transport(&text).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        // Fixed values: proxies and servers of different builds must agree.
        assert_eq!(partition_of(0, 16), partition_of(0, 16));
        for s in [0u64, 1, 42, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert!(partition_of(s, 16) < 16);
            assert_eq!(partition_of(s, 1), 0);
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"0123456789abcdef" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(partition_of(0x0123_4567_89ab_cdef, 7), (h % 7) as u16);
    }

    #[test]
    fn partitions_spread_sources() {
        let mut seen = [0u32; 16];
        for s in 0..1600u64 {
            seen[usize::from(partition_of(s.wrapping_mul(0x9e37_79b9_7f4a_7c15), 16))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn subjects_name_partition_and_stream() {
        let s = subject("syncs", 16, 0xab);
        let p = partition_of(0xab, 16);
        assert_eq!(s, format!("syncs.{p}.00000000000000ab"));
        let st = NatsSettings::default();
        assert!(s.starts_with(&st.partition_filter(p).trim_end_matches('>').to_owned()));
    }

    #[test]
    fn description_round_trips() {
        assert_eq!(partitions_in(Some(&description(12))), Some(12));
        assert_eq!(partitions_in(Some("something else")), None);
        assert_eq!(partitions_in(None), None);
        assert_eq!(partitions_in(Some("x; partitions=0")), None);
    }

    #[test]
    fn urls_split_and_get_a_scheme() {
        assert_eq!(
            parse_urls(&["127.0.0.1:4222,nats://h:1", " tls://x:2 "]),
            vec!["nats://127.0.0.1:4222", "nats://h:1", "tls://x:2"]
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let mut s = NatsSettings::default();
        assert!(s.validate().is_ok());
        s.prefix = "a.>".into();
        assert!(s.validate().is_err());
        s.prefix = "a.b".into();
        s.stream = "a.b".into();
        assert!(s.validate().is_err());
        s.stream = "S".into();
        s.partitions = 0;
        assert!(s.validate().is_err());
    }
}
