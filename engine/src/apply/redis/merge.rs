//! Plain `SET key value` commands that follow each other in a run go to
//! the target as one `MSET key value key value …` (the `merge_sets` option
//! of `redis` and `redis-sentinel` targets, on by default).
//!
//! Inside the run's `MULTI … EXEC` nothing can tell the two apart by the
//! data: `MSET` sets its pairs in order, as the `SET`s would one after the
//! other (a key given twice ends with its last value), each key loses its
//! TTL as with `SET`, and keyspace notifications and client-side caching
//! invalidations are one `set` per key either way. What differs is what
//! the target counts and shows (`INFO commandstats`, `MONITOR`, the
//! slowlog) and what its ACL must allow (`MSET`); a target that refuses
//! `MSET` while queueing has merging turned off and the run sent again
//! (mod.rs). For Redis, one command of 128 pairs costs about two thirds of
//! 128 queued `SET`s (benchmarks.md): the command lookup, the `+QUEUED`
//! reply and the call happen once.
//!
//! Only `SET` with exactly two arguments is merged (no `EX`, `NX`, `GET`,
//! … which `MSET` cannot express), and only between commands of the same
//! db (a `SELECT` ends a group).

use std::io::Write;

/// A merged command holds at most this many pairs…
pub(super) const MAX_PAIRS: usize = 128;
/// …and at most this many bytes of them (large values are not gathered
/// into one huge command).
pub(super) const MAX_BYTES: usize = 256 << 10;

/// `*3\r\n$3\r\nSET\r\n`: the head of a plain `SET` in canonical RESP.
const SET_HEAD: usize = 13;

/// The `$<n>\r\n<key>\r\n$<n>\r\n<value>\r\n` part of a plain `SET key
/// value` in canonical RESP (the name in any case), or `None` for any
/// other command.
pub(super) fn set_pair(resp: &[u8]) -> Option<&[u8]> {
    let head = resp.get(..SET_HEAD)?;
    let plain = head.starts_with(b"*3\r\n$3\r\n")
        && head[8..11].eq_ignore_ascii_case(b"SET")
        && head.ends_with(b"\r\n");
    plain.then(|| &resp[SET_HEAD..])
}

/// Plain `SET`s gathered for one `MSET`, each with the item it belongs to.
#[derive(Debug, Default)]
pub(super) struct Pairs<'a> {
    pairs: Vec<(usize, &'a [u8])>,
    bytes: usize,
}

/// What [`Pairs::flush`] wrote.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    Nothing,
    /// One `SET`, as it came, of this item.
    Single(usize),
    /// One `MSET` for these items (each once, in run order).
    Merged(Vec<usize>),
}

impl<'a> Pairs<'a> {
    /// Whether `pair` (of `bytes` bytes) still fits the group.
    pub(super) fn fits(&self, pair: &[u8]) -> bool {
        self.pairs.is_empty()
            || (self.pairs.len() < MAX_PAIRS && self.bytes + pair.len() <= MAX_BYTES)
    }

    pub(super) fn push(&mut self, item: usize, pair: &'a [u8]) {
        self.bytes += pair.len();
        self.pairs.push((item, pair));
    }

    /// Writes the group to `packed` (a lone `SET` as it was, more as one
    /// `MSET`) and empties it.
    pub(super) fn flush(&mut self, packed: &mut Vec<u8>) -> Flushed {
        let flushed = match self.pairs.as_slice() {
            [] => Flushed::Nothing,
            [(item, pair)] => {
                packed.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                packed.extend_from_slice(pair);
                Flushed::Single(*item)
            }
            pairs => {
                // Writing to a Vec cannot fail.
                let _ = write!(packed, "*{}\r\n$4\r\nMSET\r\n", 1 + 2 * pairs.len());
                let mut items: Vec<usize> = Vec::new();
                for (item, pair) in pairs {
                    packed.extend_from_slice(pair);
                    if items.last() != Some(item) {
                        items.push(*item);
                    }
                }
                Flushed::Merged(items)
            }
        };
        self.pairs.clear();
        self.bytes = 0;
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::resp::{encode_command, parse_commands};

    fn resp(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        out
    }

    #[test]
    fn only_a_plain_set_is_a_pair() {
        let set = resp(&[b"set", b"k", b"v"]);
        assert_eq!(set_pair(&set), Some(&b"$1\r\nk\r\n$1\r\nv\r\n"[..]));
        assert!(set_pair(&resp(&[b"SeT", b"k", b""])).is_some());
        assert!(set_pair(&resp(&[b"SET", b"k", b"v", b"EX", b"10"])).is_none());
        assert!(set_pair(&resp(&[b"SET", b"k"])).is_none());
        assert!(set_pair(&resp(&[b"GET", b"k", b"v"])).is_none());
        assert!(set_pair(&resp(&[b"SETNX", b"k", b"v"])).is_none());
        assert!(set_pair(b"*3\r\n$3\r\nSET").is_none());
    }

    #[test]
    fn a_group_becomes_one_mset_with_its_pairs_in_order() {
        let (a, b, c) = (
            resp(&[b"SET", b"a", b"1"]),
            resp(&[b"set", b"b", b"2"]),
            resp(&[b"SET", b"a", b"3"]),
        );
        let mut pairs = Pairs::default();
        for (item, cmd) in [(0, &a), (2, &b), (2, &c)] {
            let pair = set_pair(cmd).expect("a pair");
            assert!(pairs.fits(pair));
            pairs.push(item, pair);
        }
        let mut packed = Vec::new();
        assert_eq!(pairs.flush(&mut packed), Flushed::Merged(vec![0, 2]));
        let parsed = parse_commands(&packed).expect("RESP");
        assert_eq!(
            parsed,
            vec![vec![&b"MSET"[..], b"a", b"1", b"b", b"2", b"a", b"3"]]
        );
        assert_eq!(pairs.flush(&mut packed), Flushed::Nothing);
    }

    #[test]
    fn a_lone_set_goes_as_it_came() {
        let set = resp(&[b"set", b"k", b"v"]);
        let mut pairs = Pairs::default();
        pairs.push(4, set_pair(&set).expect("a pair"));
        let mut packed = Vec::new();
        assert_eq!(pairs.flush(&mut packed), Flushed::Single(4));
        assert_eq!(
            parse_commands(&packed).expect("RESP"),
            vec![vec![&b"SET"[..], b"k", b"v"]]
        );
    }

    #[test]
    fn a_group_is_bounded_by_pairs_and_bytes() {
        let small = resp(&[b"SET", b"k", b"v"]);
        let pair = set_pair(&small).expect("a pair");
        let mut pairs = Pairs::default();
        for i in 0..MAX_PAIRS {
            assert!(pairs.fits(pair));
            pairs.push(i, pair);
        }
        assert!(!pairs.fits(pair));

        let big_value = vec![b'x'; MAX_BYTES / 2];
        let big = resp(&[b"SET", b"k", &big_value]);
        let big_pair = set_pair(&big).expect("a pair");
        let mut pairs = Pairs::default();
        assert!(pairs.fits(big_pair));
        pairs.push(0, big_pair);
        assert!(!pairs.fits(big_pair));
        // A pair larger than the bound on its own still fits an empty group.
        let huge_value = vec![b'x'; MAX_BYTES * 2];
        let huge = resp(&[b"SET", b"k", &huge_value]);
        assert!(Pairs::default().fits(set_pair(&huge).expect("a pair")));
    }
}
