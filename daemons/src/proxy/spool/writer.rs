//! The writer thread: the only code that writes, fsyncs, rolls and
//! deletes spool files, so blocking file IO never runs on the async
//! runtime.
//!
//! Group commit: it takes every append queued since its last round,
//! writes them with one `pwrite` per segment, makes them readable (the
//! links send them while the disk works) and hands the round to the
//! syncer thread (`syncer.rs`), which fsyncs per the policy and only then
//! completes their futures. The writer goes on with the next round
//! meanwhile. Rolls, flushes and shutdown fsync here, in line.
//!
//! Sequence reservation: before a record becomes readable, the `reserved`
//! file must say its sequence is used. The writer moves that mark
//! [`RESERVE_AHEAD`] records ahead at a time (one small durable write per
//! million records), and back to the newest record at a clean shutdown.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use syncs_engine::stats;
use tokio::sync::oneshot;

use super::format::{
    encode_record, now_ms, Acked, Reserved, SegmentHeader, ACKED_FILE, SEGMENT_HEADER, TMP_SUFFIX,
};
use super::reaper::Reaper;
use super::recover::{create_segment, sync_dir, write_reserved};
use super::segment::Segment;
use super::syncer::{Round, Syncer};
use super::{Cached, Fsync, Shared, SpoolError};

/// Appends taken in one round, at most.
const MAX_BATCH_RECORDS: usize = 4096;
const MAX_BATCH_BYTES: u64 = 16 << 20;
/// Housekeeping (acknowledged position, gauges) at most this often.
const TICK: Duration = Duration::from_secs(1);
/// Under `Fsync::Never` and `Fsync::Every`, bytes written past the last
/// fsync after which the syncer is asked for one in the background. A
/// segment is fsynced in the writer when it closes, whatever the policy
/// (the next one must not exist before it is whole on disk); without
/// these, that fsync found the whole 64 MiB segment dirty and took 30–60
/// ms, in which nothing new became readable.
const EARLY_SYNC_BYTES: u64 = 8 << 20;
/// How far the `reserved` mark moves ahead of the newest record each time
/// it must move.
pub(super) const RESERVE_AHEAD: u64 = 1 << 20;

/// The durable `reserved` mark as the writer knows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation {
    /// No sequence above this may be made readable.
    pub upto: u64,
    /// This boot of the machine, written with the mark.
    pub boot: u128,
}

/// A request to the writer.
#[derive(Debug)]
pub(super) enum Cmd {
    /// Records in sequence order, with one answer for all of them: `Ok`
    /// once they are written (and fsynced under `Fsync::Always`).
    Append(Vec<Append>, oneshot::Sender<Result<(), String>>),
    /// Delete these files (acknowledged by every destination).
    Delete(Vec<Segment>),
    /// Close the newest segment if everything in it is acknowledged, so
    /// it can be deleted (a push is waiting for room).
    Roll,
    /// Fsync now, then answer (after this round's deletions).
    Flush(oneshot::Sender<Result<(), SpoolError>>),
    Shutdown,
}

#[derive(Debug)]
pub(super) struct Append {
    pub seq: u64,
    pub data: Bytes,
    pub time_ms: u64,
    /// Bytes on disk.
    pub size: u64,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(super) struct Newest {
    pub file: Arc<File>,
    pub path: Arc<Path>,
    pub base: u64,
    pub len: u64,
}

impl Newest {
    pub fn of(seg: &Segment) -> Self {
        Self {
            file: Arc::clone(&seg.file),
            path: Arc::clone(&seg.path),
            base: seg.base,
            len: seg.len,
        }
    }
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Cmd>,
    file: Arc<File>,
    path: Arc<Path>,
    base: u64,
    /// Bytes of the newest segment.
    len: u64,
    /// Newest record written, and the spool position after it.
    written: u64,
    pos: u64,
    /// The sequence the next append must have.
    expect: u64,
    reservation: Reservation,
    /// Every record up to here is fsynced (raised by the syncer too).
    durable: Arc<AtomicU64>,
    /// Rounds to fsync; `None` when the syncer thread could not start
    /// (then the writer fsyncs in line).
    syncer: Option<mpsc::Sender<Round>>,
    syncer_thread: Option<thread::JoinHandle<()>>,
    /// Closes deleted segments' files.
    reaper: Reaper,
    /// Written since the last fsync.
    dirty: bool,
    /// Bytes written since the last fsync or the last one asked of the
    /// syncer ([`EARLY_SYNC_BYTES`]).
    unsynced: u64,
    last_sync: Instant,
    buf: Vec<u8>,
    /// Records in `buf`: (seq, offset, size, time, data).
    piece: Vec<(u64, u64, u64, u64, Bytes)>,
    saved_floor: u64,
    last_tick: Instant,
    failed: Option<String>,
    /// Acknowledged segments a roll made deletable, deleted after the
    /// round's commit.
    gone: Vec<Segment>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer appending to `newest`, the last of the shared segments.
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Cmd>,
        newest: Newest,
        saved_floor: u64,
        reservation: Reservation,
    ) -> Self {
        let (written, pos, expect) = {
            let st = shared.lock();
            (st.written, st.written_pos, st.next_seq)
        };
        Self {
            shared,
            rx,
            file: newest.file,
            path: newest.path,
            base: newest.base,
            len: newest.len,
            written,
            pos,
            expect,
            reservation,
            durable: Arc::new(AtomicU64::new(written)),
            syncer: None,
            syncer_thread: None,
            reaper: Reaper::start(),
            dirty: false,
            unsynced: 0,
            last_sync: Instant::now(),
            buf: Vec::new(),
            piece: Vec::new(),
            saved_floor,
            last_tick: Instant::now(),
            failed: None,
            gone: Vec::new(),
        }
    }

    pub fn run(mut self) {
        self.start_syncer();
        // Reserve now, so that the first record does not wait for it.
        if let Err(e) = self.reserve(self.expect) {
            tracing::warn!("cannot reserve sequences yet: {e}; trying again at the first record");
        }
        loop {
            let first = match self.rx.recv_timeout(self.wait()) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Cmd::Shutdown),
            };
            let mut batch = Vec::new();
            let mut dones = Vec::new();
            let mut bytes = 0u64;
            let mut gone = Vec::new();
            let mut roll = false;
            let mut flushes = Vec::new();
            let mut shutdown = false;
            let mut next = first;
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(records, done) => {
                        bytes += records.iter().map(|a| a.size).sum::<u64>();
                        batch.extend(records);
                        dones.push(done);
                    }
                    Cmd::Delete(segments) => gone.extend(segments),
                    Cmd::Roll => roll = true,
                    Cmd::Flush(tx) => flushes.push(tx),
                    Cmd::Shutdown => {
                        shutdown = true;
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH_RECORDS || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.commit(batch, dones);
            if roll {
                self.roll_if_acked();
            }
            gone.append(&mut self.gone);
            self.delete(gone);
            self.housekeeping(shutdown || !flushes.is_empty());
            for tx in flushes {
                let outcome = match &self.failed {
                    None => Ok(()),
                    Some(why) => Err(SpoolError::Failed(why.clone())),
                };
                let _ = tx.send(outcome);
            }
            if shutdown {
                // Every round handed over is answered before the files close.
                self.syncer = None;
                if let Some(t) = self.syncer_thread.take() {
                    if t.join().is_err() {
                        tracing::error!("the spool syncer thread panicked");
                    }
                }
                self.release_reservation();
                break;
            }
        }
    }

    fn start_syncer(&mut self) {
        let (tx, rx) = mpsc::channel();
        let syncer = Syncer {
            shared: Arc::clone(&self.shared),
            rx,
            durable: Arc::clone(&self.durable),
            spacing: self.shared.limits.fsync_spacing,
        };
        match thread::Builder::new()
            .name("spool-syncer".into())
            .spawn(move || syncer.run())
        {
            Ok(t) => {
                self.syncer = Some(tx);
                self.syncer_thread = Some(t);
            }
            Err(e) => {
                tracing::warn!("cannot start the spool syncer thread ({e}): fsyncing in the writer")
            }
        }
    }

    /// Hands a written round to the syncer; gives the answers back when
    /// there is no syncer.
    fn hand_over(
        &mut self,
        dones: Vec<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), Vec<oneshot::Sender<Result<(), String>>>> {
        let Some(tx) = &self.syncer else {
            return Err(dones);
        };
        let round = Round {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            upto: self.written,
            dones,
        };
        match tx.send(round) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(round)) => {
                self.syncer = None;
                Err(round.dones)
            }
        }
    }

    /// Makes sure the `reserved` mark covers `seq` before a reader can
    /// see it.
    fn reserve(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.reservation.upto {
            return Ok(());
        }
        let upto = seq.saturating_add(RESERVE_AHEAD);
        write_reserved(
            &self.shared.dir,
            &Reserved {
                stream: self.shared.stream,
                upto,
                boot: self.reservation.boot,
            },
        )?;
        self.reservation.upto = upto;
        Ok(())
    }

    /// At a clean shutdown (everything written is fsynced): the mark goes
    /// back to the newest record, so that a restart after a reboot does
    /// not skip sequences for nothing.
    fn release_reservation(&mut self) {
        // The newest sequence handed out (past a jump not yet written to).
        let newest = self.expect - 1;
        if self.failed.is_some() || self.dirty || self.reservation.upto <= newest {
            return;
        }
        let r = Reserved {
            stream: self.shared.stream,
            upto: newest,
            boot: self.reservation.boot,
        };
        match write_reserved(&self.shared.dir, &r) {
            Ok(()) => self.reservation.upto = r.upto,
            Err(e) => tracing::warn!("{e}; the next start after a reboot skips unused sequences"),
        }
    }

    /// Makes what is written readable, once its sequences are reserved.
    fn publish_written(&mut self) -> Result<(), SpoolError> {
        self.reserve(self.written)?;
        let mut st = self.shared.lock();
        self.shared.publish(&mut st, self.written);
        Ok(())
    }

    /// How long to wait for work before the next fsync or tick is due.
    fn wait(&self) -> Duration {
        let tick = TICK.saturating_sub(self.last_tick.elapsed());
        match self.shared.limits.fsync {
            Fsync::Every(every) if self.dirty => {
                every.saturating_sub(self.last_sync.elapsed()).min(tick)
            }
            _ => tick,
        }
    }

    /// Writes a round of appends, fsyncs per the policy, completes them.
    fn commit(&mut self, mut batch: Vec<Append>, dones: Vec<oneshot::Sender<Result<(), String>>>) {
        if batch.is_empty() {
            for done in dones {
                let _ = done.send(Ok(()));
            }
            return;
        }
        #[cfg(test)]
        let shared = Arc::clone(&self.shared);
        #[cfg(test)]
        let _gate = shared.gate.blocking_lock();
        // Readable as soon as written: the links send while the disk
        // works; the pushers hear back after the fsync.
        let mut result = self.write(&mut batch).and_then(|()| self.publish_written());
        let mut dones = dones;
        if result.is_ok() && self.shared.limits.fsync == Fsync::Always {
            match self.hand_over(dones) {
                Ok(()) => dones = Vec::new(),
                Err(back) => {
                    dones = back;
                    result = self.sync();
                }
            }
        } else if result.is_ok()
            && self.unsynced >= EARLY_SYNC_BYTES
            && self.hand_over(Vec::new()).is_ok()
        {
            self.unsynced = 0;
        }
        if let Err(e) = &result {
            self.fail(e);
        }
        let unwritten: u64 = batch
            .iter()
            .filter(|a| a.seq > self.written)
            .map(|a| a.size)
            .sum();
        if unwritten > 0 {
            let mut st = self.shared.lock();
            st.reserved = st.reserved.saturating_sub(unwritten);
        }
        for done in dones {
            let outcome = match &self.failed {
                None => Ok(()),
                Some(why) => Err(why.clone()),
            };
            // The pusher may have gone away; the records stay pushed.
            let _ = done.send(outcome);
        }
        if self.failed.is_some() {
            self.shared.room.notify_waiters();
        }
    }

    /// Writes `batch` into the newest segment; each record's bytes move
    /// on to the memory of newest records (`data` is left empty).
    fn write(&mut self, batch: &mut [Append]) -> Result<(), SpoolError> {
        if self.failed.is_none() {
            // The syncer may have failed.
            self.failed = self.shared.lock().failed.clone();
        }
        if let Some(why) = &self.failed {
            return Err(SpoolError::Failed(why.clone()));
        }
        let segment_bytes = self.shared.limits.segment_bytes;
        for a in batch {
            if a.seq != self.expect {
                return Err(SpoolError::Failed(format!(
                    "internal error: record {} reached the writer, expected {}",
                    a.seq, self.expect
                )));
            }
            let end = self.len + self.buf.len() as u64;
            if end > SEGMENT_HEADER && end + a.size > segment_bytes {
                self.flush()?;
                self.roll()?;
            }
            let offset = self.len + self.buf.len() as u64;
            // Records before this one not yet fsynced when it is written:
            // recovery's torn-tail rule (docs/spool.md). The durable mark
            // only rises, and only past what this thread wrote.
            let durable = self.durable.load(Ordering::Acquire);
            let lead =
                u32::try_from(a.seq.saturating_sub(durable).saturating_sub(1)).unwrap_or(u32::MAX);
            let data = std::mem::take(&mut a.data);
            encode_record(&mut self.buf, a.seq, a.time_ms, lead, &data);
            self.piece.push((a.seq, offset, a.size, a.time_ms, data));
            self.expect += 1;
        }
        self.flush()
    }

    /// Writes `buf` at the end of the newest segment and records what it
    /// holds in the shared state (not yet readable).
    fn flush(&mut self) -> Result<(), SpoolError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.write_all_at(&self.buf, self.len) {
            // Best effort: cut what may have been written, so this run's
            // next writes (none: the spool now fails) and the next run
            // see a clean tail. Recovery truncates it otherwise.
            let _ = self.file.set_len(self.len);
            self.buf.clear();
            self.piece.clear();
            return Err(SpoolError::Io {
                path: self.path.to_path_buf(),
                op: "writing",
                source,
            });
        }
        self.dirty = true;
        self.unsynced += self.buf.len() as u64;
        let memory = self.shared.limits.memory_bytes;
        let mut st = self.shared.lock();
        for (seq, offset, size, time_ms, data) in self.piece.drain(..) {
            if let Some(seg) = st.segments.back_mut().filter(|s| s.base == self.base) {
                seg.note_append(seq, offset, size, time_ms);
            }
            st.cache(
                Cached {
                    seq,
                    data,
                    time_ms,
                    pos: self.pos,
                },
                memory,
            );
            self.pos += size;
            self.written = seq;
            st.written = seq;
            st.written_pos = self.pos;
            st.disk_bytes += size;
            st.reserved = st.reserved.saturating_sub(size);
        }
        drop(st);
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Fsyncs the newest segment (and makes what was written readable, if
    /// it was not yet).
    fn sync(&mut self) -> Result<(), SpoolError> {
        self.file.sync_data().map_err(|source| SpoolError::Io {
            path: self.path.to_path_buf(),
            op: "fsyncing",
            source,
        })?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(stats::PROXY_SPOOL_FSYNCS).increment(1);
        self.dirty = false;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        self.durable.fetch_max(self.written, Ordering::AcqRel);
        self.publish_written()
    }

    /// Closes the newest segment (fsynced whatever the policy) and starts
    /// the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let header = SegmentHeader {
            stream: self.shared.stream,
            // The next record's sequence (written + 1 but right after a
            // jump, when the newest segment is still empty).
            base: self.expect,
            created_ms: now_ms(),
            after_jump: false,
        };
        let (path, file) = create_segment(&self.shared.dir, &header)?;
        let file = Arc::new(file);
        let mut seg = Segment::new(header.base, self.pos, path, Arc::clone(&file));
        seg.first_time_ms = header.created_ms;
        seg.last_time_ms = header.created_ms;
        self.path = Arc::clone(&seg.path);
        self.file = file;
        self.base = header.base;
        self.len = SEGMENT_HEADER;
        let mut st = self.shared.lock();
        st.segments.push_back(seg);
        st.disk_bytes += SEGMENT_HEADER;
        // The segment just closed may be acknowledged already.
        self.gone.extend(st.take_deletable());
        Ok(())
    }

    /// A push waits for room: if the newest segment holds only
    /// acknowledged records, close it so it can be deleted.
    fn roll_if_acked(&mut self) {
        let wanted = {
            let mut st = self.shared.lock();
            st.roll_requested = false;
            st.floor >= self.written && self.len > SEGMENT_HEADER
        };
        if wanted && self.failed.is_none() {
            match self.roll() {
                // Waiters are woken once the closed segment is deleted.
                Ok(()) if !self.gone.is_empty() => return,
                Ok(()) => {}
                Err(e) => self.fail(&e),
            }
        }
        self.shared.room.notify_waiters();
    }

    /// Deletes acknowledged segments, oldest first, each removal made
    /// durable before the next: a crash never leaves a gap in the chain.
    fn delete(&mut self, gone: Vec<Segment>) {
        if gone.is_empty() {
            return;
        }
        for seg in &gone {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %seg.path.display(), "cannot delete an acknowledged spool segment: {e}")
                }
            }
            if let Err(e) = sync_dir(&self.shared.dir) {
                tracing::warn!("{e}");
            }
            let mut st = self.shared.lock();
            st.disk_bytes = st.disk_bytes.saturating_sub(seg.len);
        }
        self.reaper.reap(gone);
        self.shared.lock().publish_gauges();
        self.shared.room.notify_waiters();
    }

    /// Periodic work: the `Every` fsync, the acknowledged position, the
    /// gauges. `now` (shutdown, flush): all of it now, and an fsync
    /// whatever the policy.
    fn housekeeping(&mut self, now: bool) {
        if self.failed.is_none() && self.dirty {
            let due = match self.shared.limits.fsync {
                Fsync::Every(every) => self.last_sync.elapsed() >= every,
                _ => false,
            };
            // The periodic fsync goes to the syncer; a flush or shutdown
            // fsyncs in line.
            let handed = due && !now && self.hand_over(Vec::new()).is_ok();
            if handed {
                self.dirty = false;
                self.last_sync = Instant::now();
            } else if due || now {
                if let Err(e) = self.sync() {
                    self.fail(&e);
                }
            }
        }
        if now || self.last_tick.elapsed() >= TICK {
            self.last_tick = Instant::now();
            let floor = {
                let st = self.shared.lock();
                st.publish_gauges();
                st.floor
            };
            if floor != self.saved_floor {
                self.save_floor(floor);
            }
        }
    }

    /// Saves the acknowledged position, without fsync: an old or missing
    /// file only means records are offered again after a restart, which
    /// the server skips.
    fn save_floor(&mut self, floor: u64) {
        let path = self.shared.dir.join(ACKED_FILE);
        let mut tmp = path.clone().into_os_string();
        tmp.push(TMP_SUFFIX);
        let bytes = Acked {
            stream: self.shared.stream,
            floor,
        }
        .encode();
        match std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => self.saved_floor = floor,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot save the acknowledged position: {e}")
            }
        }
    }

    fn fail(&mut self, e: &SpoolError) {
        if self.failed.is_some() {
            return;
        }
        let why = e.to_string();
        self.shared.fail(&why);
        self.failed = Some(why);
    }
}
