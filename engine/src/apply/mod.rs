//! Appliers: write routed operations into their targets.
//!
//! A [`TargetSet`] holds one live handle per target of the rule set, built
//! from the rules and reused across reloads when a target is unchanged (same
//! kind, URL and options), so a reload keeps connections warm.
//!
//! [`Target::apply`] takes a run of operations in order and reports, per
//! operation, whether the target accepted it. A target that cannot be
//! reached returns [`TargetError`]; the caller retries the same run later
//! and holds its acknowledgement meanwhile. A refusal by the target (a Redis
//! error reply, a Mongo validation error) is per operation and final: it is
//! the caller's to dead-letter.

mod append;
pub mod dead_letter;
pub mod file;
pub mod json;
pub mod mongo;
pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncs_dsl::{RuleSet, Target as TargetDef, TargetKind};

use crate::op::Op;

/// The result of one operation at a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Ok,
    /// The target refused it for good; the text is the target's reason.
    Refused(String),
}

/// A target that could not take the run at all (down, timed out); retry.
#[derive(Debug, thiserror::Error)]
#[error("target `{target}` unavailable: {reason}")]
pub struct TargetError {
    pub target: String,
    pub reason: String,
    /// The run was sent and failed in a way that says nothing about the
    /// target's health (the connection dropped mid-reply, a reply that made
    /// no sense, no reply in time): the run itself may be the cause. The
    /// caller checks with [`Target::probe`] before it believes that.
    pub suspect: bool,
}

impl TargetError {
    /// The target is down or not ready; nothing points at the run.
    pub fn unavailable(target: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            target: target.to_owned(),
            reason: reason.to_string(),
            suspect: false,
        }
    }

    /// The run's outcome is unknown and the run may be its cause.
    pub fn suspect(target: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            suspect: true,
            ..Self::unavailable(target, reason)
        }
    }
}

/// One live target.
#[derive(Debug)]
pub enum Target {
    Redis(Box<redis::RedisTarget>),
    RedisCluster(Box<redis::RedisClusterTarget>),
    Mongo(mongo::MongoTarget),
    File(file::FileTarget),
}

impl Target {
    fn open(def: &TargetDef) -> Result<Self, String> {
        Ok(match def.kind {
            TargetKind::Redis | TargetKind::RedisSentinel => {
                Target::Redis(Box::new(redis::RedisTarget::new(def)?))
            }
            TargetKind::Mongo => Target::Mongo(mongo::MongoTarget::new(def)?),
            TargetKind::File => Target::File(file::FileTarget::new(def)),
            TargetKind::RedisCluster => {
                Target::RedisCluster(Box::new(redis::RedisClusterTarget::from_def(def)?))
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Redis(t) => t.name(),
            Target::RedisCluster(t) => t.name(),
            Target::Mongo(t) => t.name(),
            Target::File(t) => t.name(),
        }
    }

    /// Whether the target answers at all (a PING, a `ping` command, the
    /// file opens), apart from any run.
    pub async fn probe(&self) -> Result<(), TargetError> {
        match self {
            Target::Redis(t) => t.probe().await,
            Target::RedisCluster(t) => t.probe().await,
            Target::Mongo(t) => t.probe().await,
            Target::File(t) => t.probe().await,
        }
    }

    /// Applies `items` (sequence, operation) of one stream in order; one
    /// [`Applied`] per item, in the same order. Sequences do not decrease;
    /// several items may share one (the parts of a split command).
    ///
    /// Redis targets apply each stream's records exactly once: the last
    /// applied sequence is stored in the target in the same MULTI/EXEC as
    /// the data, and items at or below it are skipped. Mongo and file
    /// targets apply at least once (see docs/reliability.md).
    pub async fn apply(
        &self,
        stream: u64,
        items: &[(u64, &Op)],
    ) -> Result<Vec<Applied>, TargetError> {
        self.apply_then(stream, Run::new(RunId::NONE, items), None)
            .await
    }

    /// [`Target::apply`], told which run the caller applies after this one:
    /// a Redis target sends `next` ahead while `run` executes
    /// (redis/ahead.rs), and commits it when the next call's run has its
    /// id. Nothing of `next` commits before that call.
    pub async fn apply_then(
        &self,
        stream: u64,
        run: Run<'_>,
        next: Option<Run<'_>>,
    ) -> Result<Vec<Applied>, TargetError> {
        let items = run.items;
        match self {
            Target::Redis(t) => t.apply_then(stream, run, next).await,
            Target::RedisCluster(t) => t.apply(stream, items).await,
            Target::Mongo(t) => {
                let ops: Vec<&Op> = items.iter().map(|(_, op)| *op).collect();
                t.apply(&ops).await
            }
            Target::File(t) => {
                let ops: Vec<&Op> = items.iter().map(|(_, op)| *op).collect();
                t.apply(&ops).await
            }
        }
    }
}

/// Names one run of records for [`Target::apply_then`]: unique within the
/// process, so a run sent ahead is committed for that run and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(u64);

impl RunId {
    /// A run that is never sent ahead.
    pub const NONE: RunId = RunId(0);

    /// An id no other run of this process has.
    pub fn fresh() -> RunId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RunId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A run of one stream's records: its id and its items (sequence,
/// operation), as [`Target::apply`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub id: RunId,
    pub items: &'a [(u64, &'a Op)],
}

impl<'a> Run<'a> {
    pub fn new(id: RunId, items: &'a [(u64, &'a Op)]) -> Self {
        Self { id, items }
    }
}

/// The live targets of one rule set, indexed by `TargetId`.
#[derive(Debug, Default)]
pub struct TargetSet {
    targets: Vec<Arc<Target>>,
    keys: Vec<String>,
}

impl TargetSet {
    /// Opens a handle per target of `rules`, reusing `previous`' handle for
    /// an unchanged target. Connecting is lazy: this never waits on a target.
    pub fn build(rules: &RuleSet, previous: Option<&TargetSet>) -> Result<Self, String> {
        let old: HashMap<&str, &Arc<Target>> = previous
            .map(|p| p.keys.iter().map(String::as_str).zip(&p.targets).collect())
            .unwrap_or_default();
        let mut set = TargetSet::default();
        for def in rules.targets() {
            let key = format!("{}|{:?}|{}|{:?}", def.name, def.kind, def.url, def.options);
            let target = match old.get(key.as_str()) {
                Some(t) => Arc::clone(t),
                None => {
                    Arc::new(Target::open(def).map_err(|e| format!("target `{}`: {e}", def.name))?)
                }
            };
            set.targets.push(target);
            set.keys.push(key);
        }
        Ok(set)
    }

    pub fn get(&self, id: syncs_dsl::TargetId) -> Option<&Arc<Target>> {
        self.targets.get(usize::from(id.0))
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}
