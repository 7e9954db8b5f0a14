//! Redis Cluster's key-to-slot mapping, and the marker key of each slot.
//!
//! A key's slot is `CRC16(key) mod 16384` (CRC16/XMODEM), where only the
//! part between the first `{` and the next `}` is hashed when that part is
//! not empty (the *hash tag*): cluster specification, "Keys distribution
//! model" and "Hash tags".
//!
//! The exactly-once marker of a cluster target lives in every slot it
//! covers: [`marker_key`] gives, for slot `s`, the key
//! `syncs:applied:{T}` whose hash tag `T` is the smallest decimal number
//! that hashes to `s`. The table is frozen by a test: a change would move
//! every marker and lose where each slot stands.

use std::sync::OnceLock;

use crc::{Crc, CRC_16_XMODEM};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The part of `key` that is hashed: its hash tag when it has a non-empty
/// one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hash_tag(key)) % SLOTS
}

/// The prefix of every marker key (`syncs:applied:{<tag>}`).
pub const MARKER_PREFIX: &str = "syncs:applied:";

/// For each slot, the smallest decimal number that hashes to it.
fn tags() -> &'static [u32] {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut left = usize::from(SLOTS);
        let mut buf = itoa::Buffer::new();
        let mut n = 0u32;
        while left > 0 {
            let slot = usize::from(CRC16.checksum(buf.format(n).as_bytes()) % SLOTS);
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// The hash tag of slot `slot`'s marker key (`slot` is taken mod 16384).
pub fn marker_tag(slot: u16) -> u32 {
    tags()[usize::from(slot % SLOTS)]
}

/// The marker key of `slot`: `syncs:applied:{<marker_tag(slot)>}`, a key
/// that lives in `slot` itself.
pub fn marker_key(slot: u16) -> String {
    format!("{MARKER_PREFIX}{{{}}}", marker_tag(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_of_known_keys() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag(b"{user}.a"), b"user");
        assert_eq!(hash_tag(b"{}x"), b"{}x");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"a}b{c}"), b"c");
    }

    /// Frozen: every marker key of every cluster target depends on these.
    #[test]
    fn marker_tags_are_frozen() {
        assert_eq!(marker_tag(0), 3560);
        assert_eq!(marker_tag(1), 22179);
        assert_eq!(marker_tag(16383), 39296);
        assert_eq!(tags().iter().max(), Some(&109_757));
        let sum: u64 = tags().iter().map(|&t| u64::from(t)).sum();
        let xor = tags().iter().fold(0u32, |a, &t| a.rotate_left(5) ^ t);
        assert_eq!((sum, xor), (FROZEN_SUM, FROZEN_XOR));
    }

    #[test]
    fn every_marker_key_lives_in_its_slot() {
        for s in 0..SLOTS {
            assert_eq!(key_slot(marker_key(s).as_bytes()), s);
        }
    }

    const FROZEN_SUM: u64 = 313_131_612;
    const FROZEN_XOR: u32 = 1_556_583_792;
}
