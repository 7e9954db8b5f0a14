//! The live rule set and its hot reload.
//!
//! A reload parses, validates and compiles the whole rules path, opens the
//! targets it names, and only then swaps the pair in with one atomic store.
//! A batch takes one snapshot ([`LiveRules::current`]) and uses it for all
//! its records, so each operation and each transaction sees exactly one rule
//! set. A rejected reload keeps the running set, logs every error with
//! `file:line:col`, and counts `syncs_server_rules_reloads_total{outcome="rejected"}`.
//!
//! Triggers: file changes under the rules path (notify, debounced) and SIGHUP.
//!
//! An original-format `rmt.ini` ([`RulesSource::Original`]) reloads the
//! same way: its routes are translated again and swapped in; `[listen]`
//! and `[wl]` are read at start only, and a reload that finds them changed
//! says so.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use syncs_dsl::RuleSet;
use syncs_engine::apply::TargetSet;
use syncs_engine::stats;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::RulesSource;

/// One compiled rule set with its open targets.
#[derive(Debug)]
pub struct Snapshot {
    pub rules: RuleSet,
    pub targets: TargetSet,
    pub generation: u64,
}

/// The outcome of one reload.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Applied { generation: u64 },
    Rejected { errors: Vec<String> },
}

/// The rule set in force, swappable while batches run.
#[derive(Debug)]
pub struct LiveRules {
    source: RulesSource,
    current: ArcSwap<Snapshot>,
    /// An original file's server settings as started (see
    /// [`crate::config::LoadedRules::server_settings`]).
    started_settings: Option<String>,
}

impl LiveRules {
    /// Loads `source`; fails (with every error) if it is not a valid rule
    /// set.
    pub fn load(source: &RulesSource) -> Result<Self, Vec<String>> {
        let (snapshot, started_settings) = build(source, None, 1)?;
        Ok(Self {
            source: source.clone(),
            current: ArcSwap::from_pointee(snapshot),
            started_settings,
        })
    }

    /// The rule set to use for the next batch.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The rules file or directory (or original `rmt.ini`) watched.
    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// Re-reads the rules path; swaps only a fully valid set.
    pub fn reload(&self) -> Reload {
        let old = self.current();
        match build(&self.source, Some(&old.targets), old.generation + 1) {
            Ok((new, settings)) => {
                let generation = new.generation;
                self.current.store(Arc::new(new));
                metrics::counter!(stats::SERVER_RULES_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(generation, path = %self.source, "rules reloaded");
                if settings != self.started_settings {
                    tracing::warn!(
                        path = %self.source,
                        "[listen] or [wl] changed: the routes are reloaded, the port and the \
                         allowlist take effect at the next start of sync_server"
                    );
                }
                Reload::Applied { generation }
            }
            Err(errors) => {
                metrics::counter!(stats::SERVER_RULES_RELOADS, "outcome" => "rejected")
                    .increment(1);
                for e in &errors {
                    tracing::error!("rules reload rejected, previous rules stay live:\n{e}");
                }
                Reload::Rejected { errors }
            }
        }
    }
}

/// Loads, compiles and opens the targets; logs the warnings. Returns an
/// original file's server settings beside the snapshot.
fn build(
    source: &RulesSource,
    previous: Option<&TargetSet>,
    generation: u64,
) -> Result<(Snapshot, Option<String>), Vec<String>> {
    let loaded = source
        .load()
        .map_err(|diags| diags.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let targets = TargetSet::build(&loaded.rules, previous).map_err(|e| vec![e])?;
    for w in loaded.warnings.iter().chain(loaded.rules.warnings()) {
        tracing::warn!("{w}");
    }
    Ok((
        Snapshot {
            rules: loaded.rules,
            targets,
            generation,
        },
        loaded.server_settings,
    ))
}

/// Reloads on changes under the rules path (debounced by `debounce`) and on
/// SIGHUP, until `stop`. Returns once watching is set up.
pub fn watch(
    live: Arc<LiveRules>,
    debounce: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let fs_tx = tx.clone();
    let rules_path = live.path().to_owned();
    let is_dir = rules_path.is_dir();
    // Only events on the rules themselves count: a log or dead-letter file
    // beside them must not trigger reloads.
    let relevant = move |p: &Path| {
        if is_dir {
            p.extension()
                .is_some_and(|x| x == syncs_dsl::RULES_EXTENSION)
        } else {
            p.file_name() == rules_path.file_name()
        }
    };
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !ev.kind.is_access() && ev.paths.iter().any(|p| relevant(p)) {
                let _ = fs_tx.send(());
            }
        }
    })?;
    // Watch the directory holding a single rules file, so editors that
    // replace the file (write to a temp file, rename) are seen too.
    let watched = if live.path().is_dir() {
        live.path().to_owned()
    } else {
        live.path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let sig_tx = tx;
    let sig_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sig_stop.cancelled() => break,
                got = hup.recv() => {
                    if got.is_none() { break; }
                    tracing::info!("SIGHUP: reloading rules");
                    let _ = sig_tx.send(());
                }
            }
        }
    });
    tokio::spawn(async move {
        let _watcher = watcher; // lives as long as this task
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                got = rx.recv() => {
                    if got.is_none() { break; }
                    // Debounce: wait for the burst of events to settle.
                    while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                    let live = Arc::clone(&live);
                    let _ = tokio::task::spawn_blocking(move || live.reload()).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncs_dsl::{Decision, RedisQuery};

    /// The target db an original file's routes give (port 6379, `db`).
    fn routed_db(live: &LiveRules, db: u32) -> Option<u32> {
        let snap = live.current();
        let q = RedisQuery {
            port: 6379,
            db,
            command: b"SET",
            key: Some(b"k"),
        };
        match snap.rules.decide_redis(&q) {
            Decision::Route { actions, .. } => actions.first().map(|a| a.redis_db(db)),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_original_file_reloads_its_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rmt.ini");
        let file = |port: u16, map: &str| {
            format!(
                "[listen]\nport = {port}\n[wl]\nip = 127.0.0.1\n\
                 [redis0]\nhost = redis://127.0.0.1:6379/1\nmap = {map}\n"
            )
        };
        std::fs::write(&path, file(3392, "6379/3")).expect("write");
        let live = LiveRules::load(&RulesSource::Original(path.clone())).expect("loads");
        assert_eq!(routed_db(&live, 1), Some(3));
        assert_eq!(routed_db(&live, 2), None, "dead-lettered");

        std::fs::write(&path, file(3392, "6379/7")).expect("write");
        assert_eq!(live.reload(), Reload::Applied { generation: 2 });
        assert_eq!(routed_db(&live, 1), Some(7));

        // A broken edit keeps the routes in force.
        std::fs::write(&path, file(3392, "7")).expect("write");
        match live.reload() {
            Reload::Rejected { errors } => {
                assert!(errors.join("\n").contains("[redis0] map = 7"), "{errors:?}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(routed_db(&live, 1), Some(7));

        // [listen] changes apply at the next start; the routes reload.
        std::fs::write(&path, file(4000, "6379/8")).expect("write");
        assert_eq!(live.reload(), Reload::Applied { generation: 3 });
        assert_eq!(routed_db(&live, 1), Some(8));
    }
}
