//! The spool's bytes on disk: segment names and headers, record framing,
//! the `acked` and `reserved` files. Pure encoding and decoding, no IO. The layout is
//! described byte by byte in `docs/spool.md`; all integers little-endian.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// A CRC-32 hasher, from one made at start-up: `crc32fast::Hasher::new`
/// (and `crc32fast::hash`) asks which CPU features there are on every
/// call, ~35 instructions per record written (callgrind), more than a
/// small record's checksum itself.
fn crc_hasher() -> crc32fast::Hasher {
    static TEMPLATE: LazyLock<crc32fast::Hasher> = LazyLock::new(crc32fast::Hasher::new);
    TEMPLATE.clone()
}

/// The CRC-32 of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc_hasher();
    h.update(bytes);
    h.finalize()
}

/// First bytes of every segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"SYNCSSEG";
/// First bytes of the `acked` file.
pub(super) const ACKED_MAGIC: [u8; 8] = *b"SYNCSACK";
/// First bytes of the `reserved` file.
pub(super) const RESERVED_MAGIC: [u8; 8] = *b"SYNCSRSV";
/// The on-disk format this build writes and reads.
pub(super) const FORMAT_VERSION: u16 = 1;
/// Bytes of a segment header.
pub(super) const SEGMENT_HEADER: u64 = 48;
/// Bytes of a record header (before the payload).
pub(super) const RECORD_HEADER: u64 = 28;
/// The largest payload a record may carry. Lengths read from a file are
/// checked against it and against the bytes left in the file before
/// anything is allocated.
pub(super) const MAX_RECORD: u64 = 1 << 30;
/// Bytes of the `acked` file.
pub(super) const ACKED_LEN: usize = 36;
/// Bytes of the `reserved` file.
pub(super) const RESERVED_LEN: usize = 56;
/// Segment header flag (byte 10): the segment's base follows a sequence
/// jump, so the previous segment may end before `base - 1`.
pub(super) const FLAG_AFTER_JUMP: u8 = 1;

pub(super) const SEGMENT_SUFFIX: &str = ".seg";
pub(super) const TMP_SUFFIX: &str = ".tmp";
pub(super) const ACKED_FILE: &str = "acked";
pub(super) const RESERVED_FILE: &str = "reserved";
pub(super) const LOCK_FILE: &str = "lock";

/// `00000000000000000001.seg`: the base sequence, 20 decimal digits, so
/// that name order is sequence order.
pub(super) fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_name(base))
}

/// The base sequence a segment file name stands for.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub stream: u64,
    pub base: u64,
    pub created_ms: u64,
    /// Made at a restart after a machine crash: the sequences between the
    /// previous segment's last record and `base` were never used here.
    pub after_jump: bool,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER as usize] {
        let mut b = [0u8; SEGMENT_HEADER as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10] = if self.after_jump { FLAG_AFTER_JUMP } else { 0 };
        // 11..16 reserved, zero.
        b[16..24].copy_from_slice(&self.stream.to_le_bytes());
        b[24..32].copy_from_slice(&self.base.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        // 44..48 reserved, zero.
        b
    }

    /// Decodes `b` (exactly [`SEGMENT_HEADER`] bytes); the error is the
    /// reason, for a message that names the file.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != SEGMENT_HEADER as usize {
            return Err(format!(
                "segment header is {} bytes, expected {SEGMENT_HEADER}",
                b.len()
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a syncs spool segment (bad magic)".into());
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "segment format version {version}; this build reads version {FORMAT_VERSION}"
            ));
        }
        let crc = u32_at(b, 40);
        if crc != crc32(&b[0..40]) {
            return Err("segment header checksum mismatch".into());
        }
        Ok(Self {
            stream: u64_at(b, 16),
            base: u64_at(b, 24),
            created_ms: u64_at(b, 32),
            after_jump: b[10] & FLAG_AFTER_JUMP != 0,
        })
    }
}

/// What a record header says; the payload follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
    pub time_ms: u64,
    /// Records before this one in the same write (0: first of its write).
    pub lead: u32,
}

impl RecordHeader {
    pub fn decode(b: &[u8; RECORD_HEADER as usize]) -> Self {
        Self {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            seq: u64_at(b, 8),
            time_ms: u64_at(b, 16),
            lead: u32_at(b, 24),
        }
    }

    /// Bytes of header and payload.
    pub fn size(&self) -> u64 {
        RECORD_HEADER + u64::from(self.len)
    }

    /// The sequence of the first record of this record's write.
    pub fn write_start(&self) -> Option<u64> {
        self.seq.checked_sub(u64::from(self.lead))
    }

    /// Starts the checksum: covers header bytes 4..28, then the payload.
    pub fn crc_start(b: &[u8; RECORD_HEADER as usize]) -> crc32fast::Hasher {
        let mut h = crc_hasher();
        h.update(&b[4..]);
        h
    }
}

/// Bytes a record of `len` payload bytes takes on disk.
pub(super) fn record_size(len: usize) -> u64 {
    RECORD_HEADER + len as u64
}

/// Appends one record to `buf`.
pub(super) fn encode_record(buf: &mut Vec<u8>, seq: u64, time_ms: u64, lead: u32, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    // The caller refused payloads over MAX_RECORD, which fits in u32.
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(&lead.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The `acked` file: every destination has acknowledged up to `floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acked {
    pub stream: u64,
    pub floor: u64,
}

impl Acked {
    pub fn encode(&self) -> [u8; ACKED_LEN] {
        let mut b = [0u8; ACKED_LEN];
        b[0..8].copy_from_slice(&ACKED_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..16 reserved, zero.
        b[16..24].copy_from_slice(&self.stream.to_le_bytes());
        b[24..32].copy_from_slice(&self.floor.to_le_bytes());
        let crc = crc32(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        check_small_file(b, ACKED_LEN, ACKED_MAGIC, 32)?;
        Ok(Self {
            stream: u64_at(b, 16),
            floor: u64_at(b, 24),
        })
    }
}

/// The checks shared by the small files (`acked`, `reserved`): length,
/// magic, format version, and the CRC-32 of the bytes before `crc_at`,
/// stored at `crc_at`.
fn check_small_file(b: &[u8], len: usize, magic: [u8; 8], crc_at: usize) -> Result<(), String> {
    if b.len() != len {
        return Err(format!("{} bytes, expected {len}", b.len()));
    }
    if b[0..8] != magic {
        return Err("bad magic".into());
    }
    let version = u16_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    if u32_at(b, crc_at) != crc32(&b[0..crc_at]) {
        return Err("checksum mismatch".into());
    }
    Ok(())
}

/// The `reserved` file: no sequence above `upto` has been handed to a
/// reader; written (and fsynced) before any is. `boot` names the boot of
/// the machine that wrote it (0: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reserved {
    pub stream: u64,
    pub upto: u64,
    pub boot: u128,
}

impl Reserved {
    pub fn encode(&self) -> [u8; RESERVED_LEN] {
        let mut b = [0u8; RESERVED_LEN];
        b[0..8].copy_from_slice(&RESERVED_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..16 reserved, zero.
        b[16..24].copy_from_slice(&self.stream.to_le_bytes());
        b[24..32].copy_from_slice(&self.upto.to_le_bytes());
        b[32..48].copy_from_slice(&self.boot.to_le_bytes());
        let crc = crc32(&b[0..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        // 52..56 reserved, zero.
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        check_small_file(b, RESERVED_LEN, RESERVED_MAGIC, 48)?;
        let mut boot = [0u8; 16];
        boot.copy_from_slice(&b[32..48]);
        Ok(Self {
            stream: u64_at(b, 16),
            upto: u64_at(b, 24),
            boot: u128::from_le_bytes(boot),
        })
    }
}

/// This boot of the machine (Linux: `/proc/sys/kernel/random/boot_id`);
/// 0 when unknown, which never matches a recorded boot.
pub(super) fn boot_id() -> u128 {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| {
            let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
            u128::from_str_radix(&hex, 16).ok()
        })
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_sequence() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = SegmentHeader {
            stream: 7,
            base: 42,
            created_ms: 1000,
            after_jump: true,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[30] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
        let a = Acked {
            stream: 7,
            floor: 9,
        };
        assert_eq!(Acked::decode(&a.encode()), Ok(a));
        let r = Reserved {
            stream: 7,
            upto: 1 << 20,
            boot: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        };
        let mut b = r.encode();
        assert_eq!(Reserved::decode(&b), Ok(r));
        b[40] ^= 1;
        assert_eq!(Reserved::decode(&b), Err("checksum mismatch".into()));
        assert!(Reserved::decode(&b[1..]).is_err());
    }

    #[test]
    fn the_jump_flag_is_byte_10_of_the_segment_header() {
        let h = SegmentHeader {
            stream: 7,
            base: 42,
            created_ms: 1000,
            after_jump: false,
        };
        assert_eq!(h.encode()[10], 0);
        let j = SegmentHeader {
            after_jump: true,
            ..h
        };
        assert_eq!(j.encode()[10], FLAG_AFTER_JUMP);
        assert_eq!(h.encode()[..10], j.encode()[..10]);
    }

    #[test]
    fn this_machine_has_a_boot_id() {
        // Linux always has one; two reads agree.
        let id = boot_id();
        assert_ne!(id, 0);
        assert_eq!(id, boot_id());
    }

    /// The example in `docs/spool.md`, byte for byte.
    #[test]
    fn documented_example_bytes() {
        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        let stream = 0x0123_4567_89ab_cdef;
        let mut seg = SegmentHeader {
            stream,
            base: 1,
            created_ms: 1_700_000_000_000,
            after_jump: false,
        }
        .encode()
        .to_vec();
        encode_record(
            &mut seg,
            1,
            1_700_000_000_123,
            0,
            b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n",
        );
        assert_eq!(
            hex(&seg),
            "53594e43535345470100000000000000efcdab896745230101000000000000000068e5cf8b0100006df1edd100000000\
             3b4b74e32200000001000000000000007b68e5cf8b01000000000000\
             363337392c31012a330d0a24330d0a7365740d0a24310d0a610d0a24310d0a620d0a"
        );
        let acked = Acked { stream, floor: 41 }.encode();
        assert_eq!(
            hex(&acked),
            "53594e435341434b0100000000000000efcdab89674523012900000000000000798c60ec"
        );
    }

    #[test]
    fn record_layout_is_as_documented() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 6, 1, b"hi");
        assert_eq!(buf.len() as u64, record_size(2));
        let mut h = [0u8; RECORD_HEADER as usize];
        h.copy_from_slice(&buf[..RECORD_HEADER as usize]);
        let r = RecordHeader::decode(&h);
        assert_eq!(
            (r.len, r.seq, r.time_ms, r.lead, r.write_start()),
            (2, 5, 6, 1, Some(4))
        );
        let mut c = RecordHeader::crc_start(&h);
        c.update(b"hi");
        assert_eq!(c.finalize(), r.crc);
    }
}
