//! One segment file: what the spool remembers of it in memory (a sparse
//! index, not an entry per record), and reading records back from it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::format::{RecordHeader, MAX_RECORD, RECORD_HEADER, SEGMENT_HEADER};
use super::SpoolError;

/// One index entry every this many bytes of a segment: a read that does
/// not start where a previous one stopped scans at most this far.
pub(super) const INDEX_EVERY: u64 = 1 << 20;

/// A record whose place is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub seq: u64,
    /// Byte offset of the record in its segment file.
    pub offset: u64,
    pub time_ms: u64,
}

/// A segment file as the spool knows it.
#[derive(Debug)]
pub(super) struct Segment {
    /// Sequence of its first record (also in its name and header).
    pub base: u64,
    /// Sequence of its last record written; `base - 1` while empty.
    pub last: u64,
    /// Bytes written (header included): the valid length of the file.
    pub len: u64,
    /// Position of its first record in the spool's byte count (record
    /// bytes of all segments before it, from an arbitrary origin).
    pub start_pos: u64,
    pub first_time_ms: u64,
    pub last_time_ms: u64,
    /// Sparse, ordered by sequence; the first record is always in it.
    pub index: Vec<IndexEntry>,
    pub path: Arc<Path>,
    pub file: Arc<File>,
}

impl Segment {
    pub fn new(base: u64, start_pos: u64, path: PathBuf, file: Arc<File>) -> Self {
        Self {
            base,
            last: base - 1,
            len: SEGMENT_HEADER,
            start_pos,
            first_time_ms: 0,
            last_time_ms: 0,
            index: Vec::new(),
            path: path.into(),
            file,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.last < self.base
    }

    /// Notes a record just appended at `offset` (the end of the file).
    pub fn note_append(&mut self, seq: u64, offset: u64, size: u64, time_ms: u64) {
        if self.is_empty() {
            self.first_time_ms = time_ms;
        }
        let due = self
            .index
            .last()
            .is_none_or(|e| offset >= e.offset + INDEX_EVERY);
        if due {
            self.index.push(IndexEntry {
                seq,
                offset,
                time_ms,
            });
        }
        self.last = seq;
        self.len = offset + size;
        self.last_time_ms = time_ms;
    }

    /// The known record nearest at or before `seq` (which this segment
    /// holds): `(seq, offset, time)`.
    pub fn nearest(&self, seq: u64) -> IndexEntry {
        let i = self.index.partition_point(|e| e.seq <= seq);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => *e,
            None => IndexEntry {
                seq: self.base,
                offset: SEGMENT_HEADER,
                time_ms: self.first_time_ms,
            },
        }
    }

    /// The spool byte position of a segment offset.
    pub fn pos(&self, offset: u64) -> u64 {
        self.start_pos + offset.saturating_sub(SEGMENT_HEADER)
    }
}

/// Buffered positional reads over a file that does not change below
/// `limit` while we read it. Each chunk is read into a buffer of its own,
/// so the records in it can be handed out as slices of it (no copy, no
/// allocation per record).
pub(super) struct ChunkReader<'a> {
    file: &'a File,
    limit: u64,
    chunk: usize,
    buf: Bytes,
    /// File offset of `buf[0]`.
    at: u64,
}

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a File, limit: u64, chunk: usize) -> Self {
        Self {
            file,
            limit,
            chunk: chunk.max(RECORD_HEADER as usize),
            buf: Bytes::new(),
            at: 0,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `off .. off + len`; the caller checked `off + len <= limit`.
    pub fn get(&mut self, off: u64, len: usize) -> io::Result<&[u8]> {
        let from = self.load(off, len)?;
        Ok(&self.buf[from..from + len])
    }

    /// As [`Self::get`], shared with the chunk it was read in.
    pub fn get_shared(&mut self, off: u64, len: usize) -> io::Result<Bytes> {
        let from = self.load(off, len)?;
        Ok(self.buf.slice(from..from + len))
    }

    /// Makes `off .. off + len` present; returns where it starts in `buf`.
    fn load(&mut self, off: u64, len: usize) -> io::Result<usize> {
        let end = off + len as u64;
        if off < self.at || end > self.at + self.buf.len() as u64 {
            let want = (self.limit - off).min(len.max(self.chunk) as u64);
            // `want` is at most max(len, chunk): both fit in memory. The
            // buffer is reused when no record handed out still holds it
            // (a recovery scan reads a whole segment through one).
            let mut buf = match std::mem::take(&mut self.buf).try_into_mut() {
                Ok(mut reused) => {
                    reused.truncate(want as usize);
                    reused.resize(want as usize, 0);
                    reused
                }
                Err(_) => BytesMut::zeroed(want as usize),
            };
            self.file.read_exact_at(&mut buf, off)?;
            self.buf = buf.freeze();
            self.at = off;
        }
        Ok((off - self.at) as usize)
    }
}

/// What is at an offset where a record should be.
#[derive(Debug)]
pub(super) enum Check {
    Valid(RecordHeader),
    /// Not a valid record; the reason, for messages.
    Invalid(String),
}

/// Checks the record at `off`: header within the file, length within
/// bounds, checksum, and (when given) the expected sequence. Reads the
/// payload in chunks, so a wrong length allocates nothing.
pub(super) fn check_record(
    r: &mut ChunkReader<'_>,
    off: u64,
    expected: Option<u64>,
) -> io::Result<Check> {
    let left = r.limit().saturating_sub(off);
    if left < RECORD_HEADER {
        return Ok(Check::Invalid(format!(
            "incomplete record header ({left} of {RECORD_HEADER} bytes)"
        )));
    }
    let mut hb = [0u8; RECORD_HEADER as usize];
    hb.copy_from_slice(r.get(off, RECORD_HEADER as usize)?);
    let h = RecordHeader::decode(&hb);
    let len = u64::from(h.len);
    if len > MAX_RECORD {
        return Ok(Check::Invalid(format!(
            "record length {len} is over the maximum {MAX_RECORD}"
        )));
    }
    if len > left - RECORD_HEADER {
        return Ok(Check::Invalid(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            left - RECORD_HEADER
        )));
    }
    let mut crc = RecordHeader::crc_start(&hb);
    let mut done = 0u64;
    while done < len {
        let step = (len - done).min(r.chunk as u64) as usize;
        crc.update(r.get(off + RECORD_HEADER + done, step)?);
        done += step as u64;
    }
    if crc.finalize() != h.crc {
        return Ok(Check::Invalid("record checksum mismatch".into()));
    }
    if h.write_start().is_none() {
        return Ok(Check::Invalid(format!(
            "record {} says {} records precede it in its write",
            h.seq, h.lead
        )));
    }
    if let Some(want) = expected {
        if h.seq != want {
            return Ok(Check::Invalid(format!(
                "record has sequence {} where {want} was expected",
                h.seq
            )));
        }
    }
    Ok(Check::Valid(h))
}

/// Where a disk read starts and stops, taken from the spool's state.
#[derive(Debug)]
pub(super) struct ReadPlan {
    pub path: Arc<Path>,
    pub file: Arc<File>,
    pub segment_base: u64,
    /// A known record at or before the first one wanted.
    pub start: IndexEntry,
    /// Read no record after this one.
    pub last: u64,
    /// Valid bytes of the file.
    pub len: u64,
}

/// The result of a disk read.
#[derive(Debug)]
pub(super) struct ReadOut {
    pub records: Vec<Bytes>,
    /// Sequence and offset of the record after the last one returned.
    pub next: IndexEntry,
}

/// The bytes to read at a time for `read_records`: those of the records
/// from the plan's start to the last one wanted, at the average size of
/// the records from the start on (a record's worth more), within the bytes
/// asked for. Each chunk is zeroed and copied whole, and the records handed
/// out keep it: a read of one record must not cost a megabyte, nor one of
/// a thousand small records twice their size. A record past the estimate
/// costs one more read.
pub(super) fn chunk_for(
    plan: &ReadPlan,
    first: u64,
    max_records: usize,
    max_bytes: usize,
) -> usize {
    let records = plan.last.saturating_sub(plan.start.seq).saturating_add(1);
    let average = plan.len.saturating_sub(plan.start.offset) / records;
    let skipped = first.saturating_sub(plan.start.seq);
    let wanted = skipped.saturating_add(max_records as u64).min(records);
    let asked = average
        .saturating_mul(skipped)
        .saturating_add(max_bytes as u64)
        .saturating_add(RECORD_HEADER.saturating_mul(max_records as u64));
    average
        .saturating_mul(wanted.saturating_add(1))
        .min(asked)
        .clamp(4 << 10, 8 << 20) as usize
}

/// Reads records `first ..` of one segment, at most `max_records` and
/// `max_bytes` (at least one record when `first <= plan.last`).
pub(super) fn read_records(
    plan: &ReadPlan,
    first: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<ReadOut, SpoolError> {
    let chunk = chunk_for(plan, first, max_records, max_bytes);
    let mut r = ChunkReader::new(&plan.file, plan.len, chunk);
    let mut seq = plan.start.seq;
    let mut off = plan.start.offset;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let io_err = |source| SpoolError::Io {
        path: plan.path.to_path_buf(),
        op: "reading",
        source,
    };
    let mut time_ms = plan.start.time_ms;
    while seq <= plan.last {
        let h = match check_record(&mut r, off, Some(seq)).map_err(io_err)? {
            Check::Valid(h) => h,
            Check::Invalid(reason) => {
                return Err(SpoolError::Corrupt {
                    path: plan.path.to_path_buf(),
                    offset: off,
                    reason,
                });
            }
        };
        if seq >= first {
            let len = h.len as usize;
            if !out.is_empty() && (out.len() >= max_records || bytes + len > max_bytes) {
                break;
            }
            out.push(r.get_shared(off + RECORD_HEADER, len).map_err(io_err)?);
            bytes += len;
        }
        time_ms = h.time_ms;
        off += h.size();
        seq += 1;
    }
    Ok(ReadOut {
        records: out,
        next: IndexEntry {
            seq,
            offset: off,
            time_ms,
        },
    })
}
