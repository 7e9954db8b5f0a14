//! Spool tests: real files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::format::{record_size, RECORD_HEADER, SEGMENT_HEADER};
use super::*;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        fsync: Fsync::Always,
        fsync_spacing: Duration::ZERO,
        max_bytes: 1 << 30,
        when_full: WhenFull::Block,
        memory_bytes: 1 << 20,
    }
}

fn rec(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:04}"))
}

/// Reads everything from `from` on, in batches of `batch` records.
fn read_all(s: &Spool, from: u64, batch: usize) -> (u64, Vec<Bytes>) {
    let (first, mut out) = s.read(from, batch, 1 << 20).expect("read");
    let mut next = first + out.len() as u64;
    loop {
        let (at, recs) = s.read(next, batch, 1 << 20).expect("read");
        if recs.is_empty() {
            return (first, out);
        }
        assert_eq!(at, next, "reads continue where they stopped");
        next += recs.len() as u64;
        out.extend(recs);
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

async fn push_n(s: &Spool, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(s.push(rec(i)).await.expect("push"), i);
    }
}

#[test]
fn a_spool_is_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Spool>();
    send_sync::<SpoolError>();
}

#[tokio::test]
async fn push_read_ack_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Spool::open(config(dir.path()), 1).expect("open");
    assert_eq!(
        (s.last(), s.pending(), s.oldest_pending_age()),
        (0, 0, None)
    );
    let mut seen = s.subscribe();
    push_n(&s, 1..=5).await;
    assert!(seen.has_changed().expect("watch"));
    assert_eq!(*seen.borrow_and_update(), 5);
    assert_eq!(s.last(), 5);
    let (first, recs) = s.read(2, 2, 1 << 20).expect("read");
    assert_eq!((first, recs), (2, vec![rec(2), rec(3)]));
    // The byte limit stops a batch, but never before its first record.
    let (first, recs) = s.read(1, 10, 1).expect("read");
    assert_eq!((first, recs), (1, vec![rec(1)]));
    assert_eq!(s.pending(), 5);
    assert_eq!(s.pending_bytes(), 5 * record_size(rec(1).len()));
    assert!(s.oldest_pending_age().is_some());
    s.ack(0, 3);
    assert_eq!((s.acked(0), s.pending()), (3, 2));
    assert_eq!(s.pending_bytes(), 2 * record_size(rec(1).len()));
    // Reading before the oldest kept record starts at it.
    assert_eq!(read_all(&s, 1, 10), (4, vec![rec(4), rec(5)]));
    assert_eq!(s.read(6, 10, 1 << 20).expect("read"), (6, vec![]));
    // An acknowledgement beyond the newest record is held to it.
    s.ack(0, 99);
    assert_eq!(
        (
            s.acked(0),
            s.pending(),
            s.pending_bytes(),
            s.oldest_pending_age()
        ),
        (5, 0, 0, None)
    );
    // Unknown destinations are ignored.
    s.ack(7, 1);
    assert_eq!(s.acked(7), 0);
}

#[tokio::test]
async fn restart_recovers_unacked_records_with_their_sequences_and_the_stream_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 200;
    let stream = {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=12).await;
        s.ack(0, 4);
        s.flush().await.expect("flush");
        s.stream_id()
    };
    assert_ne!(stream, 0);
    let s = Spool::open(cfg.clone(), 1).expect("reopen");
    assert_eq!(s.stream_id(), stream);
    assert_eq!((s.last(), s.acked(0), s.pending()), (12, 4, 8));
    // Exact to within the index spacing once the oldest pending record
    // is no longer in memory.
    let size = record_size(rec(1).len());
    assert!(
        (8 * size..=9 * size).contains(&s.pending_bytes()),
        "{}",
        s.pending_bytes()
    );
    assert!(s.oldest_pending_age().is_some());
    let want: Vec<Bytes> = (5..=12).map(rec).collect();
    assert_eq!(read_all(&s, 1, 3), (5, want));
    assert_eq!(s.push(rec(13)).await.expect("push"), 13);
    drop(s);
    // Without the acknowledged position, records not yet deleted are
    // offered again (the server skips what it applied): never fewer.
    std::fs::remove_file(dir.path().join("acked")).expect("rm acked");
    let s = Spool::open(cfg, 1).expect("reopen");
    let (first, recs) = read_all(&s, 1, 100);
    assert!(first <= 5);
    assert_eq!(recs.last(), Some(&rec(13)));
    assert_eq!(recs.len() as u64, 13 - first + 1);
}

#[tokio::test]
async fn sequences_continue_after_everything_was_acked_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 150;
    let stream = {
        let s = Spool::open(cfg.clone(), 2).expect("open");
        push_n(&s, 1..=9).await;
        s.ack(0, 9);
        s.ack(1, 9);
        s.flush().await.expect("flush");
        // Only the newest segment is left: it carries the sequence on.
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(s.pending(), 0);
        s.stream_id()
    };
    for _ in 0..2 {
        let s = Spool::open(cfg.clone(), 2).expect("reopen");
        assert_eq!((s.stream_id(), s.last(), s.pending()), (stream, 9, 0));
        drop(s);
    }
    // Even with the acknowledged position lost.
    std::fs::remove_file(dir.path().join("acked")).expect("rm acked");
    let s = Spool::open(cfg, 2).expect("reopen");
    assert_eq!(s.last(), 9);
    assert_eq!(s.push(rec(10)).await.expect("push"), 10);
}

#[tokio::test]
async fn segments_roll_and_are_deleted_only_when_every_destination_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    // Two records per segment.
    cfg.segment_bytes = SEGMENT_HEADER + 2 * record_size(rec(1).len());
    let s = Spool::open(cfg, 2).expect("open");
    push_n(&s, 1..=10).await;
    s.flush().await.expect("flush");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(files[1].ends_with("00000000000000000003.seg"));
    s.ack(0, 10);
    s.flush().await.expect("flush");
    assert_eq!(
        segment_files(dir.path()),
        files,
        "destination 1 has acknowledged nothing"
    );
    s.ack(1, 5);
    s.flush().await.expect("flush");
    // Segments 1-2 and 3-4 are gone; 5-6 holds an unacknowledged record.
    assert_eq!(segment_files(dir.path()), files[2..].to_vec());
    s.ack(1, 10);
    s.flush().await.expect("flush");
    assert_eq!(
        segment_files(dir.path()),
        files[4..].to_vec(),
        "the newest segment stays"
    );
    assert_eq!(s.segment_count(), 1);
}

#[tokio::test]
async fn a_slow_destination_does_not_hold_back_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 120;
    cfg.memory_bytes = 30;
    let s = Spool::open(cfg, 2).expect("open");
    push_n(&s, 1..=20).await;
    // Destination 0 keeps up; destination 1 is dead.
    let mut next = 1;
    while next <= 20 {
        let (first, recs) = s.read(next, 3, 1 << 20).expect("read");
        assert_eq!(first, next);
        assert_eq!(
            recs,
            (next..next + recs.len() as u64)
                .map(rec)
                .collect::<Vec<_>>()
        );
        next += recs.len() as u64;
        s.ack(0, next - 1);
    }
    assert_eq!((s.acked(0), s.acked(1), s.pending()), (20, 0, 20));
    // Everything is kept for destination 1, which reads it from disk.
    assert_eq!(
        read_all(&s, s.acked(1) + 1, 4),
        (1, (1..=20).map(rec).collect())
    );
    s.ack(1, 12);
    assert_eq!((s.pending(), s.acked(0)), (8, 20));
    assert_eq!(read_all(&s, 13, 4), (13, (13..=20).map(rec).collect()));
}

#[tokio::test]
async fn reads_after_memory_eviction_return_the_exact_bytes_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 4096;
    cfg.memory_bytes = 200;
    // Records of varied lengths and binary content, some larger than the
    // memory budget.
    let records: Vec<Bytes> = (0..60u32)
        .map(|i| {
            Bytes::from(
                (0..(i * 37 % 300))
                    .map(|j| (j * 7 + i) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(s.push(r.clone()).await.expect("push"), i as u64 + 1);
        }
        assert!(s.shared.lock().ram_bytes <= 200);
        assert!(s.ram_len() < records.len());
        assert_eq!(read_all(&s, 1, 7), (1, records.clone()));
        // Reads that start anywhere, in any order.
        for from in [40, 3, 59, 1, 17] {
            let (first, got) = s.read(from, 5, 1 << 20).expect("read");
            assert_eq!(first, from);
            assert_eq!(
                got[..],
                records[from as usize - 1..(from as usize - 1 + got.len())]
            );
        }
    }
    let s = Spool::open(cfg, 1).expect("reopen");
    assert_eq!(s.ram_len(), 0);
    assert_eq!(read_all(&s, 1, 1000), (1, records.clone()));
    // The byte limit holds on disk reads too.
    let (_, got) = s.read(2, 100, 400).expect("read");
    assert!(got.iter().map(Bytes::len).sum::<usize>() <= 400);
}

/// Offsets of the records in a segment file written by sequential pushes
/// of `rec(i)`.
fn offsets(first: u64, count: u64) -> Vec<u64> {
    let size = record_size(rec(first).len());
    (0..count).map(|i| SEGMENT_HEADER + i * size).collect()
}

#[tokio::test]
async fn a_torn_tail_at_any_byte_keeps_every_complete_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=5).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let last = offsets(1, 5)[4];
    assert_eq!(whole.len() as u64, last + record_size(rec(5).len()));
    for cut in last..whole.len() as u64 {
        std::fs::write(&path, &whole[..cut as usize]).expect("write");
        let s = Spool::open(cfg.clone(), 1).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(s.last(), 4, "cut at {cut}");
        assert_eq!(read_all(&s, 1, 10), (1, (1..=4).map(rec).collect()));
        drop(s);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            last,
            "truncated to the last complete record"
        );
    }
    // Zeros after the last record (a file extended but never written).
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &padded).expect("write");
    let s = Spool::open(cfg, 1).expect("open");
    assert_eq!(s.last(), 5);
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=5).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let at = offsets(1, 5)[2];
    for i in at..at + record_size(rec(3).len()) {
        let mut bad = whole.clone();
        bad[i as usize] ^= 0x40;
        std::fs::write(&path, &bad).expect("write");
        let err = Spool::open(cfg.clone(), 1).expect_err("corruption in the middle");
        assert!(
            matches!(err, SpoolError::Corrupt { offset, .. } if offset == at),
            "byte {i}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{}:{at}:", path.display())), "{msg}");
        // Nothing was truncated.
        assert_eq!(std::fs::read(&path).expect("read"), bad);
    }
}

#[tokio::test]
async fn damage_in_an_older_segment_is_an_error_even_at_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = SEGMENT_HEADER + 2 * record_size(rec(1).len());
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=5).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let mut bad = whole.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(&path, &bad).expect("write");
    let err = Spool::open(cfg.clone(), 1).expect_err("corrupt");
    let at = offsets(1, 2)[1];
    assert!(
        err.to_string()
            .contains(&format!("{}:{at}:", path.display())),
        "{err}"
    );
    // A truncated older segment is refused as well.
    bad.truncate(n - 3);
    std::fs::write(&path, &bad).expect("write");
    assert!(matches!(
        Spool::open(cfg.clone(), 1),
        Err(SpoolError::Corrupt { .. })
    ));
    // So is a missing one in the middle of the chain.
    std::fs::write(&path, &whole).expect("write");
    let middle = segment_files(dir.path()).remove(1);
    std::fs::remove_file(&middle).expect("rm");
    let err = Spool::open(cfg, 1).expect_err("gap");
    assert!(err.to_string().contains("records are missing"), "{err}");
}

#[tokio::test]
async fn a_flipped_byte_in_the_tail_record_truncates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=5).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let at = offsets(1, 5)[4];
    for i in at..whole.len() as u64 {
        let mut bad = whole.clone();
        bad[i as usize] ^= 0x40;
        std::fs::write(&path, &bad).expect("write");
        let s = Spool::open(cfg.clone(), 1).unwrap_or_else(|e| panic!("byte {i}: {e}"));
        assert_eq!(s.last(), 4, "byte {i}");
        assert_eq!(read_all(&s, 1, 10), (1, (1..=4).map(rec).collect()));
        // The next record takes the sequence that was never reported.
        assert_eq!(s.push(rec(5)).await.expect("push"), 5);
    }
}

/// A segment of stream 1 from `writes`: each a list of records written
/// together (one `pwrite`, one fsync).
fn hand_made_segment(dir: &Path, writes: &[&[u64]]) -> (PathBuf, Vec<u64>) {
    use super::format::{encode_record, segment_path, SegmentHeader};
    let mut bytes = SegmentHeader {
        stream: 1,
        base: 1,
        created_ms: 0,
        after_jump: false,
    }
    .encode()
    .to_vec();
    let mut offsets = Vec::new();
    for write in writes {
        for (lead, &seq) in write.iter().enumerate() {
            offsets.push(bytes.len() as u64);
            encode_record(&mut bytes, seq, 0, lead as u32, &rec(seq));
        }
    }
    let path = segment_path(dir, 1);
    std::fs::write(&path, bytes).expect("write");
    (path, offsets)
}

#[tokio::test]
async fn damage_inside_the_last_write_is_a_torn_tail_but_not_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let writes: &[&[u64]] = &[&[1, 2], &[3, 4, 5]];
    // Record 4 damaged, record 5 of the same write intact: the last write
    // was torn (under Fsync::Always, none of it was reported durable).
    let (path, at) = hand_made_segment(dir.path(), writes);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at[3] as usize + 30] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let s = Spool::open(cfg.clone(), 1).expect("open");
    assert_eq!(read_all(&s, 1, 10), (1, (1..=3).map(rec).collect()));
    drop(s);
    // A hole where the last write starts.
    let (path, at) = hand_made_segment(dir.path(), writes);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at[2] as usize..at[3] as usize].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    let s = Spool::open(cfg.clone(), 1).expect("open");
    assert_eq!(s.last(), 2);
    drop(s);
    // Record 2 damaged, followed by a later write: corruption.
    let (path, at) = hand_made_segment(dir.path(), writes);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at[1] as usize + 30] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let err = Spool::open(cfg, 1).expect_err("corrupt");
    assert!(
        err.to_string()
            .contains(&format!("{}:{}:", path.display(), at[1])),
        "{err}"
    );
    assert!(err.to_string().contains("later write"), "{err}");
}

#[tokio::test]
async fn a_corrupt_length_allocates_nothing_and_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    {
        let s = Spool::open(cfg.clone(), 1).expect("open");
        push_n(&s, 1..=3).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let whole = std::fs::read(&path).expect("read");
    let at = offsets(1, 3)[1] as usize;
    let mut bad = whole.clone();
    bad[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bad).expect("write");
    let err = Spool::open(cfg.clone(), 1).expect_err("corrupt");
    assert!(err.to_string().contains("over the maximum"), "{err}");
    // Not a valid segment at all.
    std::fs::write(&path, b"garbage").expect("write");
    let err = Spool::open(cfg.clone(), 1).expect_err("corrupt");
    assert!(
        err.to_string().contains(&format!("{}:0:", path.display())),
        "{err}"
    );
    let mut header = whole[..SEGMENT_HEADER as usize].to_vec();
    header[0] = b'X';
    std::fs::write(&path, &header).expect("write");
    assert!(Spool::open(cfg, 1)
        .expect_err("magic")
        .to_string()
        .contains("magic"));
}

/// A spool (`--when-full block`) with room for exactly 4 records, one per
/// segment, holding records 1..=4, and a push of record 5 waiting at the
/// cap.
async fn full_with_a_push_waiting(
    dir: &Path,
) -> (
    std::sync::Arc<Spool>,
    tokio::task::JoinHandle<Result<u64, SpoolError>>,
) {
    let mut cfg = config(dir);
    let size = record_size(rec(1).len());
    cfg.max_bytes = 5 * (SEGMENT_HEADER + size) - 1;
    cfg.segment_bytes = SEGMENT_HEADER + size;
    let s = std::sync::Arc::new(Spool::open(cfg, 1).expect("open"));
    push_n(&s, 1..=4).await;
    let s2 = std::sync::Arc::clone(&s);
    let mut blocked = tokio::spawn(async move { s2.push(rec(5)).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut blocked)
            .await
            .is_err(),
        "push waits"
    );
    (s, blocked)
}

#[tokio::test]
async fn at_the_cap_block_waits_and_resumes_after_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, blocked) = full_with_a_push_waiting(dir.path()).await;
    s.ack(0, 2);
    assert_eq!(blocked.await.expect("joined").expect("push"), 5);
    s.ack(0, 5);
    // Acknowledged segments are deleted as the newest one rolls on.
    push_n(&s, 6..=9).await;
    assert_eq!(read_all(&s, 1, 100), (6, (6..=9).map(rec).collect()));
}

#[tokio::test]
async fn at_the_cap_a_stop_refuses_the_pushes_block_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, blocked) = full_with_a_push_waiting(dir.path()).await;
    s.stop_waiting();
    let err = blocked
        .await
        .expect("joined")
        .expect_err("refused at the stop");
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    // And so is any push after it, at once; what was in stays.
    let err = s.push(rec(6)).await.expect_err("refused");
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert_eq!(read_all(&s, 1, 100), (1, (1..=4).map(rec).collect()));
}

#[tokio::test]
async fn at_the_cap_an_acknowledged_newest_segment_is_closed_early() {
    for when_full in [WhenFull::Block, WhenFull::Refuse] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        cfg.max_bytes = 1000;
        cfg.when_full = when_full;
        let s = Spool::open(cfg, 1).expect("open");
        let big = Bytes::from(vec![7u8; 500]);
        assert_eq!(s.push(big.clone()).await.expect("push"), 1);
        s.ack(0, 1);
        // The first record's segment is the newest: only closing it can
        // make room for the second.
        assert_eq!(s.push(big.clone()).await.expect("push"), 2);
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(read_all(&s, 1, 10), (2, vec![big]));
    }
}

#[tokio::test]
async fn at_the_cap_refuse_returns_full_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let size = record_size(rec(1).len());
    cfg.max_bytes = 5 * (SEGMENT_HEADER + size) - 1;
    cfg.segment_bytes = SEGMENT_HEADER + size;
    cfg.when_full = WhenFull::Refuse;
    let s = Spool::open(cfg, 1).expect("open");
    push_n(&s, 1..=4).await;
    let err = s.push(rec(5)).await.expect_err("full");
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.to_string().contains("spool full"), "{err}");
    s.ack(0, 1);
    s.flush().await.expect("flush");
    assert_eq!(s.push(rec(5)).await.expect("push"), 5);
    assert_eq!(read_all(&s, 1, 100), (2, (2..=5).map(rec).collect()));
}

#[tokio::test]
async fn a_record_larger_than_the_cap_is_refused_clearly() {
    for when_full in [WhenFull::Block, WhenFull::Refuse] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        cfg.max_bytes = 1000;
        cfg.when_full = when_full;
        let s = Spool::open(cfg, 1).expect("open");
        let err = s
            .push(Bytes::from(vec![0u8; 1000]))
            .await
            .expect_err("too large");
        assert!(
            matches!(err, SpoolError::TooLarge { len: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("1000 bytes"), "{err}");
        let fits = (1000 - 2 * SEGMENT_HEADER - RECORD_HEADER) as usize;
        assert_eq!(s.push(Bytes::from(vec![1u8; fits])).await.expect("fits"), 1);
    }
}

#[tokio::test]
async fn concurrent_pushes_share_fsyncs_and_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(Spool::open(config(dir.path()), 1).expect("open"));
    let n = 500u64;
    // Keep the writer from committing until every push is queued, as
    // under load when an fsync is in progress.
    let gate = s.shared.gate.lock().await;
    let mut tasks = Vec::new();
    for i in 1..=n {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.push(rec(i)).await }));
    }
    while s.shared.lock().next_seq <= n {
        tokio::task::yield_now().await;
    }
    drop(gate);
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("joined").expect("push"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let fsyncs = s.fsyncs();
    assert!(fsyncs <= 3, "{fsyncs} fsyncs for {n} pushes");
    // Futures polled together get sequences in their order.
    let pushes: Vec<_> = (1..=50).map(|i| s.push(rec(1000 + i))).collect();
    let got = futures::future::join_all(pushes).await;
    let got: Vec<u64> = got.into_iter().map(|r| r.expect("push")).collect();
    assert_eq!(got, (n + 1..=n + 50).collect::<Vec<_>>());
    let (_, recs) = read_all(&s, n + 1, 100);
    assert_eq!(recs, (1001..=1050).map(rec).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_spacing_holds_fsyncs_apart_and_every_push_still_waits_for_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let spacing = Duration::from_millis(100);
    cfg.fsync_spacing = spacing;
    let s = std::sync::Arc::new(Spool::open(cfg.clone(), 1).expect("open"));
    let started = std::time::Instant::now();
    // After a quiet spell the first fsync starts at once.
    assert_eq!(s.push(rec(1)).await.expect("push"), 1);
    assert_eq!(s.fsyncs(), 1);
    // Pushes within the spacing wait for the next fsync, which they share.
    let tasks: Vec<_> = (2..=21)
        .map(|i| {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move { s.push(rec(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("joined").expect("push");
    }
    // Each push returned once its record was fsynced, and that fsync
    // started no sooner than the spacing after the first.
    assert!(started.elapsed() >= spacing, "{:?}", started.elapsed());
    let fsyncs = s.fsyncs();
    assert!((2..=3).contains(&fsyncs), "{fsyncs} fsyncs");
    drop(s);
    let reopened = Spool::open(cfg, 1).expect("reopen");
    assert_eq!(
        read_all(&reopened, 1, 100),
        (1, (1..=21).map(rec).collect())
    );
}

#[tokio::test]
async fn a_record_somebody_waits_for_is_fsynced_without_waiting_out_the_spacing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let spacing = crate::spacing::MAX;
    cfg.fsync_spacing = spacing;
    let s = Spool::open(cfg, 1).expect("open");
    assert_eq!(s.push(rec(1)).await.expect("push"), 1);
    let started = std::time::Instant::now();
    // Within the spacing: a SYNC waits for record 2, so it goes at once.
    let receipt = s.admit_batch(vec![rec(2)]).await;
    s.hurry(receipt.upto().expect("handed to the writer"));
    let outcome = receipt.wait().await;
    assert!(matches!(outcome[..], [Ok(2)]), "{outcome:?}");
    assert!(started.elapsed() < spacing, "{:?}", started.elapsed());
    assert_eq!(s.fsyncs(), 2);
    // Records nobody waits for are held again, a spacing after that fsync.
    assert_eq!(s.push(rec(3)).await.expect("push"), 3);
    assert!(started.elapsed() >= spacing, "{:?}", started.elapsed());
    assert_eq!(s.fsyncs(), 3);
}

#[test]
fn a_spacing_needs_fsync_always_and_at_most_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::Never;
    cfg.fsync_spacing = Duration::from_millis(1);
    let err = Spool::open(cfg.clone(), 1).expect_err("spacing without always");
    assert!(err.to_string().contains("Fsync::Always"), "{err}");
    cfg.fsync = Fsync::Always;
    cfg.fsync_spacing = Duration::from_secs(2);
    let err = Spool::open(cfg, 1).expect_err("spacing over a second");
    assert!(err.to_string().contains("over the most allowed"), "{err}");
}

#[tokio::test]
async fn every_makes_records_readable_at_once_and_fsyncs_them_within_the_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::Every(Duration::from_millis(5));
    let s = Spool::open(cfg, 1).expect("open");
    push_n(&s, 1..=3).await;
    assert_eq!(s.last(), 3);
    assert_eq!(read_all(&s, 1, 10), (1, (1..=3).map(rec).collect()));
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.fsyncs() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("an fsync within the period");
}

#[tokio::test]
async fn never_and_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::Never;
    let s = Spool::open(cfg.clone(), 1).expect("open");
    push_n(&s, 1..=3).await;
    assert_eq!((s.last(), s.fsyncs()), (3, 0));
    s.flush().await.expect("flush");
    assert_eq!(s.fsyncs(), 1);
    drop(s);
    assert_eq!(Spool::open(cfg, 1).expect("reopen").last(), 3);
}

#[tokio::test]
async fn never_still_fsyncs_in_the_background_every_8_mib_so_a_roll_finds_little_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::Never;
    cfg.segment_bytes = 64 << 20;
    let s = Spool::open(cfg, 1).expect("open");
    let record = Bytes::from(vec![b'x'; 64 << 10]);
    // 9 MiB, one segment: no roll, no flush.
    let results = s.push_batch(vec![record; 144]).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(s.segment_count(), 1);
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.fsyncs() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("an fsync once 8 MiB are written");
}

#[tokio::test]
async fn one_spool_per_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Spool::open(config(dir.path()), 1).expect("open");
    let err = Spool::open(config(dir.path()), 1).expect_err("locked");
    assert!(matches!(err, SpoolError::Locked(_)), "{err}");
    drop(s);
    Spool::open(config(dir.path()), 1).expect("open after the first closed");
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        /// Destination, and how far (percent of the way from its cursor
        /// to the newest record).
        Ack(usize, u8),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u16..120).prop_map(Op::Push),
            3 => (0usize..2, 0u8..=100).prop_map(|(d, p)| Op::Ack(d, p)),
            1 => Just(Op::Reopen),
        ]
    }

    fn payload(seq: u64, len: u16) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect::<Vec<u8>>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Every pushed, not-yet-acknowledged record is readable in
        /// order with its original sequence, by every destination.
        #[test]
        fn pushed_unacked_records_stay_readable_in_order(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cfg = config(dir.path());
            cfg.fsync = Fsync::Never;
            cfg.segment_bytes = 300;
            cfg.memory_bytes = 150;
            let mut spool = Some(Spool::open(cfg.clone(), 2).expect("open"));
            let mut model: Vec<Bytes> = Vec::new();
            let mut acked = [0u64; 2];
            let stream = spool.as_ref().map(Spool::stream_id);
            for op in ops {
                let s = spool.as_ref().expect("open");
                match op {
                    Op::Push(len) => {
                        let seq = model.len() as u64 + 1;
                        let data = payload(seq, len);
                        prop_assert_eq!(rt.block_on(s.push(data.clone())).expect("push"), seq);
                        model.push(data);
                    }
                    Op::Ack(d, pct) => {
                        let last = model.len() as u64;
                        let to = acked[d] + (last - acked[d]) * u64::from(pct) / 100;
                        s.ack(d, to);
                        acked[d] = acked[d].max(to);
                    }
                    Op::Reopen => {
                        // Close first: the directory is locked while open.
                        drop(spool.take());
                        spool = Some(Spool::open(cfg.clone(), 2).expect("reopen"));
                        let s = spool.as_ref().expect("open");
                        prop_assert_eq!(Some(s.stream_id()), stream);
                        // Cursors restart at what every destination acked.
                        let floor = acked[0].min(acked[1]);
                        for (d, &a) in acked.iter().enumerate() {
                            prop_assert!(s.acked(d) <= a);
                            s.ack(d, a);
                        }
                        prop_assert!(s.acked(0).min(s.acked(1)) >= floor);
                    }
                }
                let s = spool.as_ref().expect("open");
                prop_assert_eq!(s.last(), model.len() as u64);
                let floor = acked[0].min(acked[1]);
                prop_assert_eq!(s.pending() as u64, model.len() as u64 - floor);
                for &a in &acked {
                    let (first, recs) = read_all(s, a + 1, 5);
                    prop_assert_eq!(first, a + 1);
                    prop_assert_eq!(&recs[..], &model[a as usize..]);
                }
            }
        }
    }
}

fn crash_payload(k: u64) -> Bytes {
    Bytes::from(format!("crash-{k}-").repeat(1 + (k % 7) as usize))
}

/// Run by `a_killed_proxy_loses_nothing_it_reported_durable` in a child
/// process: pushes forever, eight at a time, printing each sequence once
/// `push` returned it.
#[test]
#[ignore = "run as a child process by a_killed_proxy_loses_nothing_it_reported_durable"]
fn crash_child() {
    use std::io::Write;
    let Some(dir) = std::env::var_os("SYNCS_SPOOL_CRASH_DIR") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut cfg = config(Path::new(&dir));
    cfg.segment_bytes = 4096;
    let s = Spool::open(cfg, 1).expect("open");
    let mut out = std::io::stdout().lock();
    let mut k = s.last();
    rt.block_on(async {
        loop {
            let pushes: Vec<_> = (k + 1..=k + 8).map(|i| s.push(crash_payload(i))).collect();
            for seq in futures::future::join_all(pushes).await {
                k += 1;
                let seq = seq.expect("push");
                assert_eq!(seq, k);
                writeln!(out, "SEQ {seq}").expect("stdout");
            }
            out.flush().expect("stdout");
        }
    });
}

#[test]
fn a_killed_proxy_loses_nothing_it_reported_durable() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reported = 0;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "proxy::spool::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SYNCS_SPOOL_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let target = reported + 150 + round * 37;
        while reported < target {
            let line = lines.next().expect("child ended early").expect("line");
            if let Some(seq) = line.strip_prefix("SEQ ") {
                reported = seq.parse().expect("number");
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let s = Spool::open(config(dir.path()), 1).expect("recover");
        assert!(
            s.last() >= reported,
            "reported {reported}, recovered {}",
            s.last()
        );
        let (first, recs) = read_all(&s, 1, 1000);
        assert_eq!(first, 1);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r, &crash_payload(i as u64 + 1));
        }
        reported = s.last();
    }
}

#[tokio::test]
async fn records_are_readable_before_their_fsync_and_pushes_wait_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(Spool::open(config(dir.path()), 1).expect("open"));
    // The writer stops between the write and the fsync.
    let fsync = s.shared.fsync_gate.lock().await;
    let pusher = {
        let s = std::sync::Arc::clone(&s);
        tokio::spawn(async move { s.push(rec(1)).await })
    };
    let mut seen = s.subscribe();
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| *v >= 1))
        .await
        .expect("readable before the fsync")
        .expect("watch");
    assert_eq!(read_all(&s, 1, 10), (1, vec![rec(1)]));
    assert_eq!(s.fsyncs(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!pusher.is_finished(), "push returned before its fsync");
    drop(fsync);
    assert_eq!(pusher.await.expect("joined").expect("push"), 1);
    assert_eq!(s.fsyncs(), 1);
}

/// The `reserved` file's mark.
fn reserved_mark(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join(super::format::RESERVED_FILE)).expect("reserved file");
    super::format::Reserved::decode(&bytes)
        .expect("sound reserved file")
        .upto
}

/// A copy of the spool directory as a machine crash would leave it: the
/// files as they are now (no clean shutdown), minus the last `lost`
/// records of the newest segment (written, never fsynced: gone with the
/// page cache).
fn crash_copy(from: &Path, to: &Path, lost: u64, records: u64) {
    for entry in std::fs::read_dir(from).expect("list") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if name != "lock" {
            std::fs::copy(&path, to.join(name)).expect("copy");
        }
    }
    if lost == 0 {
        return;
    }
    let newest = segment_files(to).pop().expect("a segment");
    let keep = offsets(1, records)[(records - lost) as usize];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open");
    file.set_len(keep).expect("truncate");
}

#[tokio::test]
async fn after_a_machine_crash_no_sequence_is_used_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let s = Spool::open_on_boot(cfg, 1, 1).expect("open");
    push_n(&s, 1..=5).await;
    let mark = reserved_mark(dir.path());
    assert!(
        mark >= 5,
        "records 1..=5 were readable, so reserved: {mark}"
    );
    // Records 4 and 5 were sent (a server applied them), then the machine
    // lost them with its page cache.
    crash_copy(dir.path(), crashed.path(), 2, 5);
    drop(s);

    let cfg = config(crashed.path());
    let s = Spool::open_on_boot(cfg.clone(), 1, 2).expect("recover after the reboot");
    assert_eq!((s.last(), s.pending()), (3, 3));
    // The server acknowledges what it applied before the crash: 5.
    s.ack(0, 5);
    assert_eq!((s.acked(0), s.pending()), (3, 0));
    // New records never reuse 4 and 5 (nor anything below the mark).
    let first_new = s.push(rec(100)).await.expect("push");
    assert_eq!(first_new, mark + 1);
    assert_eq!(s.push(rec(101)).await.expect("push"), mark + 2);
    assert_eq!(s.pending(), 2, "unused sequences are not pending records");
    // A destination reading from its cursor is taken past the jump.
    assert_eq!(
        s.read(4, 10, 1 << 20).expect("read"),
        (mark + 1, vec![rec(100), rec(101)])
    );
    drop(s);

    // A restart on the same boot: the jump is kept, nothing skipped again.
    let s = Spool::open_on_boot(cfg.clone(), 1, 2).expect("reopen");
    assert_eq!(s.last(), mark + 2);
    assert_eq!(
        s.read(1, 10, 1 << 20).expect("read"),
        (mark + 1, vec![rec(100), rec(101)])
    );
    assert_eq!(s.push(rec(102)).await.expect("push"), mark + 3);
    drop(s);
    // A clean shutdown released the mark: a reboot skips nothing.
    let s = Spool::open_on_boot(cfg, 1, 3).expect("reopen after a reboot");
    assert_eq!(s.push(rec(103)).await.expect("push"), mark + 4);
}

#[tokio::test]
async fn a_process_crash_skips_nothing_and_a_reboot_without_reservation_neither() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let s = Spool::open_on_boot(config(dir.path()), 1, 1).expect("open");
    push_n(&s, 1..=5).await;
    // The process dies: its writes are all in the page cache.
    crash_copy(dir.path(), copy.path(), 0, 5);
    drop(s);
    let s = Spool::open_on_boot(config(copy.path()), 1, 1).expect("recover");
    assert_eq!(s.push(rec(6)).await.expect("push"), 6);
    drop(s);
    // No `reserved` file (a spool written by an older build): nothing was
    // sent past the records on disk.
    std::fs::remove_file(copy.path().join(super::format::RESERVED_FILE)).expect("rm");
    let s = Spool::open_on_boot(config(copy.path()), 1, 9).expect("recover");
    assert_eq!(s.push(rec(7)).await.expect("push"), 7);
}

#[tokio::test]
async fn writes_made_during_an_fsync_are_a_torn_tail_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(Spool::open_on_boot(config(dir.path()), 1, 1).expect("open"));
    push_n(&s, 1..=2).await;
    // Three more writes, one record each, while the fsync is held back:
    // the writer goes on, and each record says how many before it were
    // not yet durable when it was written.
    let fsync = s.shared.fsync_gate.lock().await;
    let mut pushers = Vec::new();
    for i in 3..=5 {
        let t = {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move { s.push(rec(i)).await })
        };
        let mut seen = s.subscribe();
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| *v >= i))
            .await
            .expect("written while the fsync waits")
            .expect("watch");
        pushers.push(t);
    }
    let newest = segment_files(dir.path()).pop().expect("segment");
    let bytes = std::fs::read(&newest).expect("read");
    let leads: Vec<u32> = offsets(1, 5)
        .iter()
        .map(|&off| {
            let at = off as usize + 24;
            u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
        })
        .collect();
    assert_eq!(leads, [0, 0, 0, 1, 2]);
    // The machine crashes: record 3 reached the disk damaged, 4 and 5
    // whole. None of the three was reported durable, and 4 and 5 say so:
    // a torn tail, truncated at 3, not corruption.
    crash_copy(dir.path(), crashed.path(), 0, 5);
    let copy = segment_files(crashed.path()).pop().expect("segment");
    let mut damaged = std::fs::read(&copy).expect("read");
    damaged[offsets(1, 5)[2] as usize + 30] ^= 0x40;
    std::fs::write(&copy, &damaged).expect("write");
    let recovered = Spool::open_on_boot(config(crashed.path()), 1, 2).expect("a torn tail");
    assert_eq!(read_all(&recovered, 1, 10), (1, vec![rec(1), rec(2)]));
    drop(recovered);
    drop(fsync);
    for (i, t) in pushers.into_iter().enumerate() {
        assert_eq!(t.await.expect("joined").expect("push"), i as u64 + 3);
    }
    // Once fsynced, the next write says so: damage before it would be
    // corruption.
    assert_eq!(s.push(rec(6)).await.expect("push"), 6);
    let bytes = std::fs::read(&newest).expect("read");
    let at = offsets(1, 6)[5] as usize + 24;
    assert_eq!(
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")),
        0
    );
}

#[tokio::test]
async fn an_unknown_boot_counts_as_a_reboot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    // No boot id on this system (0): a restart cannot tell a process crash
    // from a machine crash, so it skips the reserved sequences.
    let s = Spool::open_on_boot(config(dir.path()), 1, 0).expect("open");
    push_n(&s, 1..=5).await;
    let mark = reserved_mark(dir.path());
    crash_copy(dir.path(), copy.path(), 0, 5);
    drop(s);
    let s = Spool::open_on_boot(config(copy.path()), 1, 0).expect("recover");
    assert_eq!(s.push(rec(6)).await.expect("push"), mark + 1);
}

/// A waker that records that it was woken.
#[derive(Default)]
struct Woken(std::sync::atomic::AtomicBool);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(me: &std::sync::Arc<Self>) {
        me.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Woken {
    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_cursor_waits_for_an_append_and_is_woken_by_it() {
    use std::future::Future;
    use std::task::Context;

    let dir = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(Spool::open(config(dir.path()), 1).expect("open"));
    let mut cursor = s.cursor(1);
    assert!(!cursor.ready());
    // Dropped while waiting (as `select!` does): nothing is lost.
    assert!(futures::FutureExt::now_or_never(cursor.wait()).is_none());

    let woken = std::sync::Arc::new(Woken::default());
    let waker = futures::task::waker(std::sync::Arc::clone(&woken));
    {
        let read = cursor.next_batch(10, 1 << 20);
        tokio::pin!(read);
        assert!(read
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(!woken.take());
        // A record is readable before `push` returns (written, then
        // fsynced): the append has woken the waiting cursor by then.
        assert_eq!(s.push(rec(1)).await.expect("push"), 1);
        assert!(woken.take(), "the append wakes the cursor");
        let batch = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("read once woken")
            .expect("read");
        assert_eq!(batch, (1, vec![rec(1)]));
    }
    assert_eq!(cursor.position(), 2);
    assert!(!cursor.ready());

    // Caught up: it waits again, and reads what the next appends bring.
    {
        let read = cursor.next_batch(10, 1 << 20);
        tokio::pin!(read);
        assert!(read
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        push_n(&s, 2..=3).await;
        assert!(woken.take(), "the append wakes the cursor");
        let batch = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("read once woken")
            .expect("read");
        assert_eq!(batch, (2, vec![rec(2), rec(3)]));
    }
    assert!(
        matches!(
            futures::FutureExt::now_or_never(cursor.read(10, 1 << 20)),
            Some(Ok(None))
        ),
        "nothing readable: no records, and no waiting"
    );

    // A rewind reads again from there.
    cursor.seek(2);
    assert!(cursor.ready());
    let read = cursor.read(1, 1 << 20).await.expect("read");
    assert_eq!(read, Some((2, vec![rec(2)])));
    assert_eq!(cursor.position(), 3);
    // Below what every destination acknowledged, it starts at the oldest
    // record kept.
    s.ack(0, 2);
    cursor.seek(1);
    let read = cursor.read(10, 1 << 20).await.expect("read");
    assert_eq!(read, Some((3, vec![rec(3)])));
    assert_eq!(cursor.position(), 4);
    assert!(
        futures::FutureExt::now_or_never(cursor.wait()).is_none(),
        "caught up: the wait goes on"
    );
}

#[tokio::test]
async fn a_cursor_goes_past_the_unused_sequences_of_a_jump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let s = Spool::open_on_boot(config(dir.path()), 1, 0).expect("open");
    push_n(&s, 1..=5).await;
    let mark = reserved_mark(dir.path());
    crash_copy(dir.path(), copy.path(), 0, 5);
    drop(s);
    // A reboot: the next record takes the first sequence past the mark.
    let s = std::sync::Arc::new(Spool::open_on_boot(config(copy.path()), 1, 0).expect("recover"));
    assert!(mark > 6, "a jump to test");
    let mut cursor = s.cursor(6);
    assert!(!cursor.ready());
    let reader = {
        let s = std::sync::Arc::clone(&s);
        tokio::spawn(async move {
            let mut cursor = s.cursor(6);
            cursor.next_batch(10, 1 << 20).await
        })
    };
    assert_eq!(s.push(rec(6)).await.expect("push"), mark + 1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("woken by the append")
            .expect("joined")
            .expect("read"),
        (mark + 1, vec![rec(6)])
    );
    assert_eq!(
        cursor.read(10, 1 << 20).await.expect("read"),
        Some((mark + 1, vec![rec(6)]))
    );
    assert_eq!(cursor.position(), mark + 2);
}

#[test]
fn chunk_reader_slices_outlive_refills_and_the_buffer_is_reused_when_free() {
    use std::io::Write;

    use super::segment::ChunkReader;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&content))
        .expect("write");
    let file = std::fs::File::open(&path).expect("open");
    let mut r = ChunkReader::new(&file, content.len() as u64, 100);
    // Slices kept while later reads refill the chunk (a new buffer each
    // time: the old one is still held).
    let kept: Vec<(usize, Bytes)> = (0..9)
        .map(|i| {
            let off = i * 110;
            (off, r.get_shared(off as u64, 30).expect("read"))
        })
        .collect();
    for (off, b) in &kept {
        assert_eq!(&b[..], &content[*off..off + 30]);
    }
    drop(kept);
    // Nothing holds the chunks any more: plain reads across refills, a
    // read longer than the chunk, and one back at the start.
    for (off, len) in [(5u64, 40usize), (950, 50), (0, 300), (120, 7), (0, 1000)] {
        let got = r.get(off, len).expect("read").to_vec();
        assert_eq!(got, &content[off as usize..off as usize + len]);
    }
}

/// A disk read is sized to the records it is asked for, at their average
/// size, not to a fixed bound per record.
#[test]
fn disk_reads_are_sized_to_the_records_asked() {
    use super::segment::{chunk_for, IndexEntry, ReadPlan};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seg");
    let file = std::fs::File::create(&path).expect("file");
    // 10,000 records of 128 bytes with their headers, from offset 4096.
    let plan = |start: u64| ReadPlan {
        path: path.clone().into(),
        file: file.try_clone().expect("clone").into(),
        segment_base: 1,
        start: IndexEntry {
            seq: start,
            offset: 4096 + (start - 1) * 128,
            time_ms: 0,
        },
        last: 10_000,
        len: 4096 + 10_000 * 128,
    };
    // 1,024 records from where the last read stopped: 1,025 records' worth.
    assert_eq!(chunk_for(&plan(1), 1, 1024, 1 << 20), 1025 * 128);
    // 500 records to skip from the index entry first, then 1,024 wanted.
    assert_eq!(chunk_for(&plan(1), 501, 1024, 1 << 20), 1525 * 128);
    // One record: the floor, not a megabyte.
    assert_eq!(chunk_for(&plan(1), 1, 1, 1 << 20), 4 << 10);
    // Fewer bytes asked than the records: the bytes (and their headers).
    assert_eq!(
        chunk_for(&plan(1), 1, 1024, 64 << 10),
        (64 << 10) + 1024 * RECORD_HEADER as usize
    );
    // Near the end: no more than the records left and one more.
    assert_eq!(chunk_for(&plan(9_901), 9_901, 1024, 1 << 20), 101 * 128);
    // Huge records: at most 8 MiB at a time.
    let mut big = plan(1);
    big.len = 4096 + 10_000 * (1 << 20);
    assert_eq!(chunk_for(&big, 1, 1024, 1 << 30), 8 << 20);
}
