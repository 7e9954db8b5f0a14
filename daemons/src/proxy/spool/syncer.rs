//! The syncer thread: fsyncs what the writer wrote, off the writer's path,
//! and answers the pushes each fsync made durable.
//!
//! Under `Fsync::Always` the writer hands over every round it wrote (the
//! file, the newest sequence in it, the pushers' answers) and goes on
//! writing and publishing the next. The syncer takes every round queued
//! since its last fsync, fsyncs once per file (group commit across
//! rounds), raises the durable mark, then answers. A slow disk delays the
//! pushers' confirmation (and the clients' SYNC), not replication.
//!
//! With a spacing (`--fsync-spacing`), an fsync starts no sooner than
//! the spacing after the previous one started: the rounds written in
//! between wait and share it. Under a steady stream that bounds the
//! fsyncs per second (and the CPU and device flushes they cost); a round
//! after a quiet spell is fsynced at once. So is one that somebody waits
//! for ([`Hurry`]): a client's SYNC, a connection at its bound of records
//! not yet durable. The spacing saves the fsyncs nobody waits for and
//! delays no answer.
//!
//! The durable mark is what the writer stamps into each record's `lead`
//! (see `docs/spool.md`): recovery tells a torn tail from corruption by
//! it, so it is raised only after the fsync returned, and before anyone
//! hears that a record is durable.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use syncs_engine::stats;
use tokio::sync::oneshot;

use super::{Shared, SpoolError};
use crate::spacing::Spacing;

/// One round the writer wrote, waiting for its fsync.
#[derive(Debug)]
pub(super) struct Round {
    pub file: Arc<File>,
    pub path: Arc<Path>,
    /// The newest record of the round.
    pub upto: u64,
    pub dones: Vec<oneshot::Sender<Result<(), String>>>,
}

/// Records somebody waits for: their fsync is not held by the spacing.
#[derive(Debug, Default)]
pub(super) struct Hurry {
    /// Every record up to here is waited for.
    upto: AtomicU64,
    /// The syncer thread, woken from a spacing's wait.
    syncer: Mutex<Option<Thread>>,
}

impl Hurry {
    /// Somebody waits for every record up to `upto` to be durable.
    pub fn ask(&self, upto: u64) {
        if self.upto.fetch_max(upto, Ordering::AcqRel) >= upto {
            return;
        }
        if let Some(t) = self.syncer().as_ref() {
            t.unpark();
        }
    }

    /// The calling thread is the syncer: an `ask` wakes it from `hold`.
    fn attach_syncer(&self) {
        *self.syncer() = Some(std::thread::current());
    }

    fn syncer(&self) -> std::sync::MutexGuard<'_, Option<Thread>> {
        self.syncer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `at`, or until somebody waits for a record past
    /// `durable`.
    fn hold(&self, at: Instant, durable: &AtomicU64) {
        loop {
            if self.upto.load(Ordering::Acquire) > durable.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            if now >= at {
                return;
            }
            // An `ask` between the check and here leaves the token that
            // makes this return at once.
            std::thread::park_timeout(at - now);
        }
    }
}

pub(super) struct Syncer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Round>,
    /// Every record up to here is fsynced (shared with the writer).
    pub durable: Arc<AtomicU64>,
    /// The least time between the starts of two fsyncs.
    pub spacing: Duration,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    /// Runs until the writer drops its sender, answering every round.
    pub fn run(self) {
        let mut spacing = Spacing::new(self.spacing);
        self.shared.hurry.attach_syncer();
        while let Ok(first) = self.rx.recv() {
            if let Some(at) = spacing.held_until() {
                self.shared.hurry.hold(at, &self.durable);
            }
            spacing.start();
            let mut rounds = vec![first];
            rounds.extend(self.rx.try_iter());
            #[cfg(test)]
            let shared = Arc::clone(&self.shared);
            #[cfg(test)]
            let _gate = shared.fsync_gate.blocking_lock();
            let failed = self.shared.lock().failed.clone();
            let outcome = match failed {
                Some(why) => Err(why),
                None => self.sync(&rounds),
            };
            for round in rounds {
                for done in round.dones {
                    // The pusher may have gone away; the records stay pushed.
                    let _ = done.send(outcome.clone());
                }
            }
        }
    }

    /// Fsyncs each file of `rounds` once, then raises the durable mark.
    fn sync(&self, rounds: &[Round]) -> Result<(), String> {
        let mut upto = 0;
        for (i, round) in rounds.iter().enumerate() {
            upto = upto.max(round.upto);
            let same_as_next = rounds
                .get(i + 1)
                .is_some_and(|next| Arc::ptr_eq(&next.file, &round.file));
            if same_as_next {
                continue;
            }
            if let Err(source) = round.file.sync_data() {
                let why = SpoolError::Io {
                    path: round.path.to_path_buf(),
                    op: "fsyncing",
                    source,
                }
                .to_string();
                self.shared.fail(&why);
                return Err(why);
            }
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(stats::PROXY_SPOOL_FSYNCS).increment(1);
        }
        self.durable.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }
}
