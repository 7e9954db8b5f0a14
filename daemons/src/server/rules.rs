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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use syncs_dsl::RuleSet;
use syncs_engine::apply::TargetSet;
use syncs_engine::stats;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    path: PathBuf,
    current: ArcSwap<Snapshot>,
}

impl LiveRules {
    /// Loads `path`; fails (with every error) if it is not a valid rule set.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let snapshot = build(path, None, 1)?;
        for w in snapshot.rules.warnings() {
            tracing::warn!("{w}");
        }
        Ok(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(snapshot),
        })
    }

    /// The rule set to use for the next batch.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the rules path; swaps only a fully valid set.
    pub fn reload(&self) -> Reload {
        let old = self.current();
        match build(&self.path, Some(&old.targets), old.generation + 1) {
            Ok(new) => {
                for w in new.rules.warnings() {
                    tracing::warn!("{w}");
                }
                let generation = new.generation;
                self.current.store(Arc::new(new));
                metrics::counter!(stats::SERVER_RULES_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(generation, path = %self.path.display(), "rules reloaded");
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

fn build(
    path: &Path,
    previous: Option<&TargetSet>,
    generation: u64,
) -> Result<Snapshot, Vec<String>> {
    let rules = syncs_dsl::load_path(path)
        .map_err(|diags| diags.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let targets = TargetSet::build(&rules, previous).map_err(|e| vec![e])?;
    Ok(Snapshot {
        rules,
        targets,
        generation,
    })
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
