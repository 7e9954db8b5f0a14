//! Targets: where matched operations are sent.

use std::time::Duration;

/// Index of a target in [`crate::RuleSet::targets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

/// What a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A Redis server; `url` is a `redis://` URL.
    Redis,
    /// A MongoDB deployment; `url` is a `mongodb://` URL.
    Mongo,
    /// A local file; `url` is a path. Applied operations are appended to it as
    /// JSON lines.
    File,
}

impl TargetKind {
    /// The word used in rules files: `redis`, `mongo` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Redis => "redis",
            TargetKind::Mongo => "mongo",
            TargetKind::File => "file",
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
    /// The URL (or, for `file` targets, the path) exactly as written.
    pub url: String,
    pub options: TargetOptions,
}

/// The `{ ... }` options of a target. `None` means "not given": the engine
/// picks its own default.
///
/// | option            | kinds         | value                     |
/// |-------------------|---------------|---------------------------|
/// | `pool`            | redis, mongo  | connections, 1..=1024     |
/// | `timeout`         | redis, mongo  | duration (`500ms`, `2s`, `1m`) per operation |
/// | `connect_timeout` | redis, mongo  | duration                  |
/// | `fsync`           | file          | `true` / `false`: fsync after each batch |
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOptions {
    pub pool: Option<u32>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub fsync: Option<bool>,
}
