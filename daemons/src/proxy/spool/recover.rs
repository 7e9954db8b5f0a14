//! Opening a spool directory: find the segments, check every record,
//! truncate a torn tail of the newest segment, refuse any other damage.
//!
//! The rule for damage in the newest segment: a damaged record is a torn
//! tail when nothing after it belongs to a *later write* than its own
//! (every record carries how many records precede it in its write). The
//! writer fsyncs each write before it starts the next under
//! `Fsync::Always`, so only the last write can be incomplete after a
//! crash, and nothing in it was reported durable. Damage followed by a
//! record of a later write was durable once: that is corruption, and an
//! error naming the file and offset.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    parse_segment_name, segment_path, Acked, Reserved, SegmentHeader, ACKED_FILE, ACKED_LEN,
    RECORD_HEADER, RESERVED_FILE, SEGMENT_HEADER, TMP_SUFFIX,
};
use super::segment::{check_record, Check, ChunkReader, IndexEntry, Segment};
use super::SpoolError;

/// Sequences never come near this; a larger base is damage, and
/// refusing it keeps sequence arithmetic far from overflow.
const MAX_BASE: u64 = 1 << 62;

/// Read-ahead of the recovery scan.
const SCAN_CHUNK: usize = 1 << 20;

/// What a previous run left.
#[derive(Debug)]
pub(super) struct Recovered {
    pub stream: u64,
    /// Oldest first; never empty (the newest is kept even when empty).
    pub segments: VecDeque<Segment>,
    /// Newest record on disk (0: none ever).
    pub last: u64,
    /// The sequence the next record gets: `last + 1`, or past the
    /// reservation after a machine crash (see [`Spool::open`]).
    ///
    /// [`Spool::open`]: super::Spool::open
    pub next: u64,
    /// No sequence above this was handed to a reader (the `reserved`
    /// file; `last` when it is missing).
    pub reserved: u64,
    /// Every destination acknowledged up to here (from the `acked` file).
    pub floor: u64,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> SpoolError {
    SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Fsyncs a directory, so that names created, renamed or removed in it
/// survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "syncing the directory"))
}

pub(super) fn open_segment_file(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path, "opening"))
}

/// Creates a segment holding only its header: written to a temporary
/// name, fsynced, renamed, and the directory fsynced, so a segment file
/// never exists with a partial header.
pub(super) fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
) -> Result<(PathBuf, File), SpoolError> {
    let path = segment_path(dir, header.base);
    let file = create_durably(dir, &path, &header.encode(), "renaming the new segment")?;
    Ok((path, file))
}

/// Makes `path` hold exactly `bytes`, durably: written to `<path>.tmp`,
/// fsynced, renamed over `path`, and the directory fsynced, so that after
/// a crash the file is either the old one or the whole new one. Returns
/// the file, open for reading and writing; `rename_op` names the rename in
/// an error.
fn create_durably(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    rename_op: &'static str,
) -> Result<File, SpoolError> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp, "creating"))?;
    file.write_all_at(bytes, 0)
        .map_err(io_err(&tmp, "writing"))?;
    file.sync_all().map_err(io_err(&tmp, "syncing"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, rename_op))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Opens `dir` as left by a previous run; `new_stream` names a fresh
/// spool's stream when there is no segment; `boot` is this boot of the
/// machine ([`super::format::boot_id`]).
pub(super) fn recover(
    dir: &Path,
    new_stream: impl FnOnce() -> u64,
    boot: u128,
) -> Result<Recovered, SpoolError> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(dir, "listing"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "listing"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.strip_suffix(TMP_SUFFIX).is_some_and(|n| {
            n == ACKED_FILE || n == RESERVED_FILE || parse_segment_name(n).is_some()
        });
        if ours {
            // A segment or `acked` file whose rename never happened.
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(io_err(&path, "removing a leftover temporary file"))?;
            tracing::info!(path = %path.display(), "removed a temporary file left by a crash");
        } else if let Some(base) = parse_segment_name(name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();

    let mut segments = VecDeque::with_capacity(bases.len());
    let mut stream = None;
    let mut pos = 0u64;
    let count = bases.len();
    for (i, base) in bases.into_iter().enumerate() {
        let newest = i + 1 == count;
        let path = segment_path(dir, base);
        let file = open_segment_file(&path)?;
        let header = read_header(&file, &path)?;
        if base == 0 || base > MAX_BASE {
            return Err(corrupt(
                &path,
                24,
                format!("implausible base sequence {base}"),
            ));
        }
        if header.base != base {
            return Err(corrupt(
                &path,
                24,
                format!(
                    "header says base sequence {}, the name says {base}",
                    header.base
                ),
            ));
        }
        match stream {
            None => stream = Some(header.stream),
            Some(s) if s != header.stream => {
                return Err(corrupt(
                    &path,
                    16,
                    format!(
                        "segment of stream {:016x} among segments of stream {s:016x}",
                        header.stream
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(prev) = segments.back() {
            let prev: &Segment = prev;
            // A jump (made at a restart after a machine crash) leaves
            // unused sequences between two segments; anything else
            // missing is records lost.
            let jumped = header.after_jump && base > prev.last + 1;
            if base != prev.last + 1 && !jumped {
                return Err(corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at sequence {base} but the previous segment ends at {}: records are missing",
                        prev.last
                    ),
                ));
            }
        }
        let mut seg = Segment::new(base, pos, path.clone(), Arc::new(file));
        seg.first_time_ms = header.created_ms;
        seg.last_time_ms = header.created_ms;
        scan(&mut seg, newest)?;
        pos = seg.pos(seg.len);
        segments.push_back(seg);
    }

    let stream = match stream {
        Some(s) => s,
        None => {
            let stream = new_stream();
            let header = SegmentHeader {
                stream,
                base: 1,
                created_ms: super::format::now_ms(),
                after_jump: false,
            };
            let (path, file) = create_segment(dir, &header)?;
            tracing::info!(dir = %dir.display(), stream = format!("{stream:016x}"), "created a new spool");
            segments.push_back(Segment::new(1, 0, path, Arc::new(file)));
            stream
        }
    };
    // Everything found is made durable now, whatever the previous run's
    // fsync policy: readers may send all of it.
    if let Some(newest) = segments.back() {
        newest
            .file
            .sync_all()
            .map_err(io_err(&newest.path, "syncing"))?;
    }
    // The newest record; an empty segment made by a jump holds none.
    let last = segments
        .iter()
        .rev()
        .find(|s| !s.is_empty())
        .map_or_else(|| segments.back().map_or(0, |s| s.last), |s| s.last);
    let newest_base = segments.back().map_or(1, |s| s.base);
    let mut next = (last + 1).max(newest_base);
    let mut reserved = next - 1;
    if let Some(r) = read_reserved(dir, stream) {
        reserved = reserved.max(r.upto);
        // Records are handed to readers (sent to servers) once written,
        // before their fsync. A process that dies leaves what it wrote in
        // the page cache: nothing a server saw is missing. After a machine
        // crash, records a server saw may be gone from the disk: their
        // sequences must never be handed out again, so the next record
        // takes the first sequence past the reservation.
        let same_boot = boot != 0 && r.boot == boot;
        if !same_boot && r.upto >= next {
            let header = SegmentHeader {
                stream,
                base: r.upto + 1,
                created_ms: super::format::now_ms(),
                after_jump: true,
            };
            let (path, file) = create_segment(dir, &header)?;
            let pos = segments.back().map_or(0, |s| s.pos(s.len));
            let mut seg = Segment::new(header.base, pos, path, Arc::new(file));
            seg.first_time_ms = header.created_ms;
            seg.last_time_ms = header.created_ms;
            tracing::warn!(
                dir = %dir.display(), last_on_disk = last, skipped_from = next, skipped_to = r.upto,
                "the machine restarted since the spool was last closed: records written but not \
                 yet fsynced may have been sent and then lost with the page cache; sequences \
                 {next}..{} are skipped so that none is used twice (servers log a sequence gap)",
                r.upto
            );
            segments.push_back(seg);
            next = header.base;
        }
    }
    let oldest = segments.front().map_or(1, |s| s.base);
    let floor = read_acked(dir, stream, last).max(oldest - 1);
    Ok(Recovered {
        stream,
        segments,
        last,
        next,
        reserved,
        floor,
    })
}

/// The `reserved` file of `stream`, if there is a sound one. A missing or
/// damaged file means no reservation was ever made durable, so no record
/// beyond those on disk was sent (records are only sent once reserved).
fn read_reserved(dir: &Path, stream: u64) -> Option<Reserved> {
    let path = dir.join(RESERVED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the sequence reservation: {e}");
            return None;
        }
    };
    match Reserved::decode(&bytes) {
        Ok(r) if r.stream == stream => Some(r),
        Ok(r) => {
            tracing::warn!(path = %path.display(), stream = format!("{:016x}", r.stream), "ignoring the sequence reservation of another stream");
            None
        }
        Err(reason) => {
            tracing::warn!(path = %path.display(), "ignoring a damaged sequence reservation: {reason}");
            None
        }
    }
}

/// Writes the `reserved` file durably (temporary file, fsync, rename,
/// directory fsync): after this returns, a crash cannot bring back an
/// older reservation.
pub(super) fn write_reserved(dir: &Path, r: &Reserved) -> Result<(), SpoolError> {
    let path = dir.join(RESERVED_FILE);
    create_durably(dir, &path, &r.encode(), "renaming the reservation").map(drop)
}

fn read_header(file: &File, path: &Path) -> Result<SegmentHeader, SpoolError> {
    let len = file
        .metadata()
        .map_err(io_err(path, "reading the size of"))?
        .len();
    if len < SEGMENT_HEADER {
        return Err(corrupt(
            path,
            0,
            format!("{len} bytes: shorter than a segment header ({SEGMENT_HEADER})"),
        ));
    }
    let mut b = [0u8; SEGMENT_HEADER as usize];
    file.read_exact_at(&mut b, 0)
        .map_err(io_err(path, "reading"))?;
    SegmentHeader::decode(&b).map_err(|reason| corrupt(path, 0, reason))
}

/// Reads every record of `seg`, filling in its last sequence, length and
/// index. Damage is an error, except a torn tail of the newest segment,
/// which is truncated away.
fn scan(seg: &mut Segment, newest: bool) -> Result<(), SpoolError> {
    let path = Arc::clone(&seg.path);
    let file = Arc::clone(&seg.file);
    let file_len = file
        .metadata()
        .map_err(io_err(&path, "reading the size of"))?
        .len();
    let mut r = ChunkReader::new(&file, file_len, SCAN_CHUNK);
    let mut off = SEGMENT_HEADER;
    while off < file_len {
        let expected = seg.last + 1;
        match check_record(&mut r, off, Some(expected)).map_err(io_err(&path, "reading"))? {
            Check::Valid(h) => {
                seg.note_append(h.seq, off, h.size(), h.time_ms);
                off += h.size();
            }
            Check::Invalid(reason) => {
                if !newest {
                    return Err(corrupt(
                        &path,
                        off,
                        format!("{reason} (not the newest segment: refusing to skip records)"),
                    ));
                }
                if let Some(later) =
                    later_write(&mut r, off, expected).map_err(io_err(&path, "reading"))?
                {
                    return Err(corrupt(
                        &path,
                        off,
                        format!(
                            "{reason}; record {} of a later write follows at offset {}, so this is not a torn tail: \
                             refusing to skip records",
                            later.seq, later.offset
                        ),
                    ));
                }
                tracing::warn!(
                    path = %path.display(), offset = off, dropped_bytes = file_len - off,
                    last_kept = seg.last,
                    "torn tail in the newest spool segment ({reason}); truncating it: \
                     these bytes were never reported durable"
                );
                file.set_len(off).map_err(io_err(&path, "truncating"))?;
                file.sync_all().map_err(io_err(&path, "syncing"))?;
                break;
            }
        }
    }
    seg.len = off;
    Ok(())
}

/// Looks after damage at `from` (where record `expected` should be) for a
/// valid record of a later write than the damaged one's.
fn later_write(
    r: &mut ChunkReader<'_>,
    from: u64,
    expected: u64,
) -> io::Result<Option<IndexEntry>> {
    let end = r.limit();
    // Records after the damage carry sequences at most this far on.
    let max_seq = expected.saturating_add((end - from) / RECORD_HEADER + 1);
    let mut at = from + 1;
    while let Some((off, h)) = find_valid(r, at, expected, max_seq)? {
        let mut off = off;
        let mut h = h;
        loop {
            if h.write_start().is_some_and(|s| s > expected) {
                return Ok(Some(IndexEntry {
                    seq: h.seq,
                    offset: off,
                    time_ms: h.time_ms,
                }));
            }
            off += h.size();
            if off >= end {
                return Ok(None);
            }
            match check_record(r, off, Some(h.seq + 1))? {
                Check::Valid(next) => h = next,
                Check::Invalid(_) => break,
            }
        }
        at = off + 1;
    }
    Ok(None)
}

/// The first offset at or after `at` holding a valid record with a
/// sequence in `min ..= max`.
fn find_valid(
    r: &mut ChunkReader<'_>,
    mut at: u64,
    min: u64,
    max: u64,
) -> io::Result<Option<(u64, super::format::RecordHeader)>> {
    let end = r.limit();
    while at + RECORD_HEADER <= end {
        // Cheap test first: the sequence field must be in range.
        let b = r.get(at + 8, 8)?;
        let mut s = [0u8; 8];
        s.copy_from_slice(b);
        let seq = u64::from_le_bytes(s);
        if (min..=max).contains(&seq) {
            if let Check::Valid(h) = check_record(r, at, None)? {
                return Ok(Some((at, h)));
            }
        }
        at += 1;
    }
    Ok(None)
}

/// The acknowledged floor saved by a previous run; 0 when missing or
/// unusable (safe: records are then sent again and the server skips
/// what it already applied).
fn read_acked(dir: &Path, stream: u64, last: u64) -> u64 {
    let path = dir.join(ACKED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the acknowledged position ({e}); resending from the oldest record kept");
            return 0;
        }
    };
    if bytes.len() != ACKED_LEN {
        tracing::warn!(path = %path.display(), len = bytes.len(), "ignoring a damaged acknowledged-position file");
        return 0;
    }
    match Acked::decode(&bytes) {
        Ok(a) if a.stream == stream => {
            if a.floor > last {
                tracing::warn!(
                    path = %path.display(), floor = a.floor, last,
                    "acknowledged position is past the newest record on disk; using the newest record"
                );
            }
            a.floor.min(last)
        }
        Ok(a) => {
            tracing::warn!(path = %path.display(), stream = format!("{:016x}", a.stream), "ignoring the acknowledged position of another stream");
            0
        }
        Err(reason) => {
            tracing::warn!(path = %path.display(), "ignoring a damaged acknowledged-position file: {reason}");
            0
        }
    }
}
