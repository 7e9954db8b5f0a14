//! Targets: where matched operations are sent.

use std::time::Duration;

/// Index of a target in [`crate::RuleSet::targets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

/// What a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A Redis server; `url` is a `redis://` URL.
    Redis,
    /// A Redis Cluster; `url` is a comma-separated list of seed nodes, each
    /// a `redis://` or `rediss://` URL without a db (a cluster has db 0
    /// only). Every operation sent to it lies in one hash slot (the router
    /// sees to it, see `engine/src/route/cluster.rs`).
    RedisCluster,
    /// A Redis master found through Sentinel; `url` is a comma-separated
    /// list of sentinels, and the `master` option names the monitored
    /// master. The URLs' user and password are the master's, and the
    /// sentinels' too unless the `sentinel_password` (and `sentinel_user`)
    /// options give their own.
    RedisSentinel,
    /// A MongoDB deployment; `url` is a `mongodb://` URL.
    Mongo,
    /// A local file; `url` is a path. Applied operations are appended to it as
    /// JSON lines.
    File,
}

impl TargetKind {
    /// The word used in rules files: `redis`, `redis-cluster`,
    /// `redis-sentinel`, `mongo` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Redis => "redis",
            TargetKind::RedisCluster => "redis-cluster",
            TargetKind::RedisSentinel => "redis-sentinel",
            TargetKind::Mongo => "mongo",
            TargetKind::File => "file",
        }
    }

    /// True for the kinds that speak the Redis protocol: `redis`,
    /// `redis-cluster` and `redis-sentinel`. They take redis operations and
    /// the redis options (`pool`, `timeout`, `replicas`, ...).
    pub fn is_redis(self) -> bool {
        matches!(
            self,
            TargetKind::Redis | TargetKind::RedisCluster | TargetKind::RedisSentinel
        )
    }

    /// How many replicas a write waits for (`WAIT`) when the target does
    /// not say (`replicas`): 1 for `redis-cluster` and `redis-sentinel`
    /// (a failover must not lose what was acknowledged), 0 for the others.
    pub fn default_replicas(self) -> u32 {
        match self {
            TargetKind::RedisCluster | TargetKind::RedisSentinel => 1,
            _ => 0,
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named destination declared with `target NAME = KIND "URL" { ... }`.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// The URL (or, for `file` targets, the path) exactly as written; for
    /// `redis-cluster` and `redis-sentinel`, a comma-separated list (see
    /// [`Target::urls`]).
    pub url: String,
    pub options: TargetOptions,
}

impl Target {
    /// The URLs of the target: for `redis-cluster` and `redis-sentinel`, the
    /// entries of the comma-separated list, trimmed, in the order written
    /// (the checker made sure there is at least one and each is a
    /// `redis://` or `rediss://` URL); for the other kinds, the URL alone.
    pub fn urls(&self) -> Vec<&str> {
        match self.kind {
            TargetKind::RedisCluster | TargetKind::RedisSentinel => split_urls(&self.url),
            _ => vec![self.url.as_str()],
        }
    }

    /// The number of replicas each write waits for (`WAIT`): the
    /// `replicas` option, else [`TargetKind::default_replicas`].
    pub fn replicas(&self) -> u32 {
        self.options
            .replicas
            .unwrap_or_else(|| self.kind.default_replicas())
    }

    /// How long a `WAIT` for replicas may take: the `replica_timeout`
    /// option, else [`TargetOptions::DEFAULT_REPLICA_TIMEOUT`].
    pub fn replica_timeout(&self) -> Duration {
        self.options
            .replica_timeout
            .unwrap_or(TargetOptions::DEFAULT_REPLICA_TIMEOUT)
    }

    /// `split_transactions` of a `redis-cluster` target (default false):
    /// a transaction whose keys span slots is applied as one transaction
    /// per slot instead of being dead-lettered.
    pub fn split_transactions(&self) -> bool {
        self.kind == TargetKind::RedisCluster && self.options.split_transactions == Some(true)
    }

    /// `merge_sets` of a `redis` or `redis-sentinel` target (default true):
    /// plain `SET key value` commands that follow each other in a run go
    /// to the target as one `MSET` (the same keys, values and order).
    pub fn merge_sets(&self) -> bool {
        matches!(self.kind, TargetKind::Redis | TargetKind::RedisSentinel)
            && self.options.merge_sets != Some(false)
    }

    /// The master name a `redis-sentinel` target asks its sentinels about
    /// (the `master` option, required for that kind).
    pub fn sentinel_master(&self) -> Option<&str> {
        self.options.master.as_deref()
    }
}

/// The `{ ... }` options of a target. `None` means "not given": the engine
/// picks its own default, or an accessor of [`Target`] gives it.
///
/// | option               | kinds                 | value                     |
/// |----------------------|-----------------------|---------------------------|
/// | `pool`               | redis kinds, mongo    | connections, 1..=1024 (per node for `redis-cluster`) |
/// | `timeout`            | redis kinds, mongo    | duration (`500ms`, `2s`, `1m`) per operation |
/// | `connect_timeout`    | redis kinds, mongo    | duration                  |
/// | `replicas`           | redis kinds           | 0..=16 replicas to `WAIT` for ([`Target::replicas`]) |
/// | `replica_timeout`    | redis kinds           | duration, below `timeout` ([`Target::replica_timeout`]) |
/// | `split_transactions` | redis-cluster         | `true` / `false` ([`Target::split_transactions`]) |
/// | `merge_sets`         | redis, redis-sentinel | `true` / `false` ([`Target::merge_sets`]) |
/// | `master`             | redis-sentinel        | the monitored master's name (required) |
/// | `sentinel_user`, `sentinel_password` | redis-sentinel | the sentinels' credentials |
/// | `fsync`              | file                  | `true` / `false`: fsync after each batch |
///
/// "redis kinds" are `redis`, `redis-cluster` and `redis-sentinel`
/// ([`TargetKind::is_redis`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOptions {
    pub pool: Option<u32>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub fsync: Option<bool>,
    pub replicas: Option<u32>,
    pub replica_timeout: Option<Duration>,
    pub split_transactions: Option<bool>,
    pub merge_sets: Option<bool>,
    pub master: Option<String>,
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
}

/// The entries of a comma-separated URL list, trimmed, empty ones left out.
pub(crate) fn split_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl TargetOptions {
    /// `replica_timeout` when not given.
    pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_secs(1);
    /// The most `replicas` a target may wait for.
    pub const MAX_REPLICAS: u32 = 16;
    /// The reply timeout of a redis-kind target when `timeout` is not given
    /// (the Redis applier's default; `replica_timeout` must stay below it).
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(30);
}
