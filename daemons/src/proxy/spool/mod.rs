//! The durable spool: the proxy's records, numbered in order of
//! acceptance, kept in segment files until every destination has
//! acknowledged them. Unlike the in-memory queue it replaced, it survives
//! a crash of the proxy (format and guarantees: `docs/spool.md`).
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Spool`], opening it, its errors, and what
//!   callers and the writer thread share.
//! - `config.rs`: [`SpoolConfig`] and its checks.
//! - `state.rs`: the accounting under the lock (sequences, segments,
//!   records in memory, acknowledgements, what is pending, the gauges).
//! - `admit.rs`: pushes: sequences, the disk cap, handing records to the
//!   writer ([`Receipt`]).
//! - `read.rs`: reading records back, from memory or from disk.
//! - `cursor.rs`: [`Cursor`], a destination's place in the spool: it
//!   waits for records to become readable, then reads them.
//! - `format.rs`: the bytes on disk (documented in `docs/spool.md`).
//! - `segment.rs`: what is kept in memory per segment file (a sparse
//!   index) and reading records back from a file.
//! - `writer.rs`: the writer thread. It alone writes, rolls and deletes
//!   files; pushes queue their records to it and await the outcome.
//! - `reaper.rs`: the reaper thread: closes deleted segments' files
//!   (the slow part of a deletion) off the writer's path.
//! - `syncer.rs`: the syncer thread. It fsyncs the rounds the writer
//!   wrote and answers their pushes, so concurrent pushers share one
//!   fsync (group commit) and the writer never waits for the disk.
//! - `recover.rs`: opening a directory left by a previous run.
//!
//! **Architecture invariant:** a sequence number is never handed out
//! twice. A record becomes readable (and so may be sent to a server) once
//! written, before its fsync, so replication does not wait for the disk;
//! `push` (and the client's SYNC) still waits for the fsync per the
//! policy. A record only becomes readable once its sequence is below the
//! durable `reserved` mark; after a machine crash (a new boot id), the
//! next record takes the first sequence past that mark, so a sequence a
//! server saw before the crash is never reused for another record.
//! **Architecture invariant:** memory holds at most `memory_bytes` of
//! records (entries included) plus a small index per segment; the
//! backlog grows on disk.

mod admit;
mod config;
mod cursor;
mod format;
mod read;
mod reaper;
mod recover;
mod segment;
mod state;
mod syncer;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use format::{boot_id, LOCK_FILE};
use writer::Cmd;

use crate::log_throttle::LogThrottle;

pub use admit::Receipt;
use config::{validate, Limits};
pub use config::{Fsync, SpoolConfig, WhenFull};
pub use cursor::Cursor;
use state::{Cached, State, HINTS};

/// How long `open` waits for the directory's lock.
const LOCK_WAIT: Duration = Duration::from_millis(300);

/// Everything that can go wrong with the spool. Messages name the file,
/// and the offset where it matters.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}:{offset}: corrupt spool: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("spool full: {used} of {max} bytes on disk are waiting for acknowledgements")]
    Full { used: u64, max: u64 },
    #[error("record of {len} bytes refused: the spool takes records of at most {max} bytes (max_bytes and the record limit)")]
    TooLarge { len: u64, max: u64 },
    #[error("{}: the spool is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error("the spool has no record {seq}, though it is readable (a bug)")]
    Missing { seq: u64 },
    #[error("spool configuration: {0}")]
    Config(String),
    #[error("the spool stopped writing after an error: {0}")]
    Failed(String),
}

/// The proxy's durable queue of accepted records. See the module docs.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Cmd>,
    /// Pushers take turns: one waiting for room keeps its place ahead of
    /// later ones, so sequences follow the order pushes were made.
    admit: tokio::sync::Mutex<()>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// Holds the directory's lock for the spool's life.
    _lock: File,
}

/// What the callers and the writer thread share.
#[derive(Debug)]
struct Shared {
    pub dir: PathBuf,
    pub stream: u64,
    pub limits: Limits,
    state: Mutex<State>,
    /// The newest readable sequence; destinations wait on it.
    pub pushed: watch::Sender<u64>,
    /// Room was freed (or the writer failed): blocked pushers look again.
    pub room: Notify,
    pub fsyncs: AtomicU64,
    /// What pushers wait for now, past the fsync spacing.
    pub hurry: syncer::Hurry,
    /// Tests hold it to keep the writer from committing.
    #[cfg(test)]
    pub gate: tokio::sync::Mutex<()>,
    /// Tests hold it to stop the writer between a write and its fsync.
    #[cfg(test)]
    pub fsync_gate: tokio::sync::Mutex<()>,
    /// Paces the lines about pushes at the disk cap.
    full_logged: LogThrottle,
    /// Paces the lines about acknowledgements beyond the newest record.
    beyond_logged: LogThrottle,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a few assignments that cannot
        // panic half-way, so a poisoned lock still holds a sound state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the spool after a write or fsync error (the writer's or the
    /// syncer's): logged once, pushes fail from now on, blocked pushers
    /// look again.
    pub fn fail(&self, why: &str) {
        {
            let mut st = self.lock();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(why.to_owned());
        }
        tracing::error!("spool failed, no record is accepted from now on: {why}");
        self.room.notify_waiters();
    }

    /// Makes records up to `seq` readable and wakes the readers.
    pub fn publish(&self, st: &mut State, seq: u64) {
        if seq > st.visible {
            st.visible = seq;
            self.pushed.send_if_modified(|v| {
                let changed = *v != seq;
                *v = seq;
                changed
            });
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| SpoolError::Io {
            path: path.clone(),
            op: "opening the lock file",
            source,
        })?;
    // A lock is briefly held on after its owner closed it when another
    // thread forks (the child shares the descriptor until it execs):
    // retry for a moment before calling the directory taken.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(SpoolError::Io {
                    path,
                    op: "locking",
                    source,
                });
            }
        }
    }
}

impl Spool {
    /// Opens (or creates) the spool, recovering what a previous run left:
    /// the stream id, and every record not yet deleted, in order, with
    /// their original sequence numbers. Records every destination had
    /// acknowledged (per the `acked` file) are not offered again.
    pub fn open(config: SpoolConfig, destinations: usize) -> Result<Spool, SpoolError> {
        Self::open_on_boot(config, destinations, boot_id())
    }

    /// [`Spool::open`] as on the machine boot `boot` (tests make reboots).
    fn open_on_boot(
        config: SpoolConfig,
        destinations: usize,
        boot: u128,
    ) -> Result<Spool, SpoolError> {
        let limits = validate(&config)?;
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(|source| SpoolError::Io {
            path: dir.clone(),
            op: "creating",
            source,
        })?;
        let lock = lock_dir(&dir)?;
        let rec = recover::recover(&dir, new_stream_id, boot)?;
        let disk_bytes = rec.segments.iter().map(|s| s.len).sum();
        let written_pos = rec.segments.back().map_or(0, |s| s.pos(s.len));
        let pending = rec.last.saturating_sub(rec.floor);
        tracing::info!(
            dir = %dir.display(), stream = format!("{:016x}", rec.stream), segments = rec.segments.len(),
            last = rec.last, pending, disk_bytes, "spool opened"
        );
        let state = State {
            next_seq: rec.next,
            written: rec.last,
            written_pos,
            visible: rec.last,
            acked: vec![rec.floor; destinations],
            floor: rec.floor,
            segments: rec.segments,
            disk_bytes,
            reserved: 0,
            ram: VecDeque::new(),
            ram_bytes: 0,
            hints: VecDeque::with_capacity(HINTS),
            failed: None,
            roll_requested: false,
            stopping: false,
        };
        let newest = state
            .segments
            .back()
            .map(writer::Newest::of)
            .ok_or_else(|| SpoolError::Corrupt {
                path: dir.clone(),
                offset: 0,
                reason: "no segment after recovery".into(),
            })?;
        let (pushed, _) = watch::channel(rec.last);
        let shared = Arc::new(Shared {
            dir,
            stream: rec.stream,
            limits,
            state: Mutex::new(state),
            pushed,
            room: Notify::new(),
            fsyncs: AtomicU64::new(0),
            hurry: syncer::Hurry::default(),
            #[cfg(test)]
            gate: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            fsync_gate: tokio::sync::Mutex::new(()),
            full_logged: LogThrottle::default(),
            beyond_logged: LogThrottle::default(),
        });
        shared.lock().publish_gauges();
        let (cmds, rx) = mpsc::channel();
        let w = writer::Writer::new(
            Arc::clone(&shared),
            rx,
            newest,
            rec.floor,
            writer::Reservation {
                upto: rec.reserved,
                boot,
            },
        );
        let handle = thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || w.run())
            .map_err(|source| SpoolError::Io {
                path: shared.dir.clone(),
                op: "starting the writer thread",
                source,
            })?;
        // Segments acknowledged before a crash, not yet deleted.
        let gone = shared.lock().take_deletable();
        if !gone.is_empty() {
            let _ = cmds.send(Cmd::Delete(gone));
        }
        Ok(Spool {
            shared,
            cmds,
            admit: tokio::sync::Mutex::new(()),
            writer: Mutex::new(Some(handle)),
            _lock: lock,
        })
    }

    /// The proxy stops: pushes at the disk cap no longer wait for room
    /// (under `--when-full block`), they are refused, counted and logged as
    /// under `refuse`; those waiting now are refused too. Without it a stop
    /// with a full spool would wait for ever for clients held at the cap.
    pub fn stop_waiting(&self) {
        self.shared.lock().stopping = true;
        self.shared.room.notify_waiters();
    }

    /// Random at creation, kept in every segment header: stable across
    /// restarts.
    pub fn stream_id(&self) -> u64 {
        self.shared.stream
    }

    /// Fsyncs what is written and waits until acknowledged segments are
    /// deleted: every record pushed before is then readable, whatever
    /// the policy. For an orderly shutdown under `Fsync::Every`.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Flush(tx))
            .map_err(|_| SpoolError::Failed("the writer thread is gone".into()))?;
        rx.await
            .map_err(|_| SpoolError::Failed("the writer thread is gone".into()))?
    }

    /// Holds every fsync (the syncer waits) while the guard lives: for
    /// tests of what goes on meanwhile.
    #[cfg(test)]
    pub(crate) async fn hold_fsyncs(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.fsync_gate.lock().await
    }

    #[cfg(test)]
    fn fsyncs(&self) -> u64 {
        self.shared
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(test)]
    fn ram_len(&self) -> usize {
        self.shared.lock().ram.len()
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.shared.lock().segments.len()
    }
}

impl Drop for Spool {
    /// Lets the writer finish what is queued, fsync, and save the
    /// acknowledged position.
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Shutdown);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the spool writer thread panicked");
            }
        }
    }
}

/// A stream id for a new spool: random, never 0.
fn new_stream_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    // 0 means none; u64::MAX is the NATS envelope's fence (nats/envelope.rs).
    h.finish().clamp(1, u64::MAX - 1)
}
