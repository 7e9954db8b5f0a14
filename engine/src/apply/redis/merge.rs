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

use super::Part;

/// A merged command holds at most this many pairs…
const MAX_PAIRS: usize = 128;
/// …and at most this many bytes of them (large values are not gathered
/// into one huge command).
const MAX_BYTES: usize = 256 << 10;

/// `*3\r\n$3\r\nSET\r\n`: the head of a plain `SET` in canonical RESP.
const SET_HEAD: usize = 13;

/// Whether `resp`, one command in canonical RESP, is a plain `SET key
/// value` (the name in any case).
pub(super) fn is_plain_set(resp: &[u8]) -> bool {
    resp.get(..SET_HEAD).is_some_and(|head| {
        head.starts_with(b"*3\r\n$3\r\n")
            && head[8..11].eq_ignore_ascii_case(b"SET")
            && head.ends_with(b"\r\n")
    })
}

/// The `$<n>\r\n<key>\r\n$<n>\r\n<value>\r\n` part of a plain `SET`.
fn pair(set: &[u8]) -> &[u8] {
    &set[SET_HEAD..]
}

/// Plain `SET`s gathered for one `MSET` (each command whole), each with
/// the item it belongs to.
#[derive(Debug, Default)]
pub(super) struct Pairs<'a> {
    sets: Vec<(usize, &'a [u8])>,
    /// Bytes of their pairs.
    bytes: usize,
}

impl<'a> Pairs<'a> {
    /// Whether `set`, a plain `SET` ([`is_plain_set`]), still fits the
    /// group.
    fn fits(&self, set: &[u8]) -> bool {
        self.sets.is_empty()
            || (self.sets.len() < MAX_PAIRS && self.bytes + pair(set).len() <= MAX_BYTES)
    }

    /// Adds `set`, a plain `SET` ([`is_plain_set`]) of `item`, writing the
    /// group first (as [`Self::flush`]) when `set` does not fit it.
    pub(super) fn push(
        &mut self,
        item: usize,
        set: &'a [u8],
        packed: &mut Vec<u8>,
        parts: &mut Vec<Part>,
    ) {
        if !self.fits(set) {
            self.flush(packed, parts);
        }
        self.bytes += pair(set).len();
        self.sets.push((item, set));
    }

    /// Writes the group to `packed` (a lone `SET` as it came, more as one
    /// `MSET`), notes in `parts` what was queued, and empties it.
    pub(super) fn flush(&mut self, packed: &mut Vec<u8>, parts: &mut Vec<Part>) {
        match self.sets.as_slice() {
            [] => {}
            [(item, set)] => {
                packed.extend_from_slice(set);
                parts.push(Part::Command(*item));
            }
            sets => {
                // Writing to a Vec cannot fail.
                let _ = write!(packed, "*{}\r\n$4\r\nMSET\r\n", 1 + 2 * sets.len());
                let mut items: Vec<usize> = Vec::new();
                for (item, set) in sets {
                    packed.extend_from_slice(pair(set));
                    if items.last() != Some(item) {
                        items.push(*item);
                    }
                }
                parts.push(Part::Merged(items));
            }
        }
        self.sets.clear();
        self.bytes = 0;
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
    fn only_a_plain_set_is_merged() {
        let set = resp(&[b"set", b"k", b"v"]);
        assert!(is_plain_set(&set));
        assert_eq!(pair(&set), b"$1\r\nk\r\n$1\r\nv\r\n");
        assert!(is_plain_set(&resp(&[b"SeT", b"k", b""])));
        assert!(!is_plain_set(&resp(&[b"SET", b"k", b"v", b"EX", b"10"])));
        assert!(!is_plain_set(&resp(&[b"SET", b"k"])));
        assert!(!is_plain_set(&resp(&[b"GET", b"k", b"v"])));
        assert!(!is_plain_set(&resp(&[b"SETNX", b"k", b"v"])));
        assert!(!is_plain_set(b"*3\r\n$3\r\nSET"));
    }

    #[test]
    fn a_group_becomes_one_mset_with_its_pairs_in_order() {
        let (a, b, c) = (
            resp(&[b"SET", b"a", b"1"]),
            resp(&[b"set", b"b", b"2"]),
            resp(&[b"SET", b"a", b"3"]),
        );
        let (mut packed, mut parts) = (Vec::new(), Vec::new());
        let mut pairs = Pairs::default();
        for (item, set) in [(0, &a), (2, &b), (2, &c)] {
            pairs.push(item, set, &mut packed, &mut parts);
        }
        assert!(packed.is_empty(), "nothing written before the flush");
        pairs.flush(&mut packed, &mut parts);
        assert!(
            matches!(&parts[..], [Part::Merged(items)] if *items == [0, 2]),
            "{parts:?}"
        );
        let parsed = parse_commands(&packed).expect("RESP");
        assert_eq!(
            parsed,
            vec![vec![&b"MSET"[..], b"a", b"1", b"b", b"2", b"a", b"3"]]
        );
        pairs.flush(&mut packed, &mut parts);
        assert_eq!(parts.len(), 1, "an empty group writes nothing");
    }

    #[test]
    fn a_lone_set_goes_as_it_came() {
        let set = resp(&[b"set", b"k", b"v"]);
        let (mut packed, mut parts) = (Vec::new(), Vec::new());
        let mut pairs = Pairs::default();
        pairs.push(4, &set, &mut packed, &mut parts);
        pairs.flush(&mut packed, &mut parts);
        assert!(matches!(parts[..], [Part::Command(4)]), "{parts:?}");
        assert_eq!(packed, set);
    }

    #[test]
    fn a_group_is_bounded_by_pairs_and_bytes() {
        let small = resp(&[b"SET", b"k", b"v"]);
        let (mut packed, mut parts) = (Vec::new(), Vec::new());
        let mut pairs = Pairs::default();
        for i in 0..MAX_PAIRS {
            assert!(pairs.fits(&small));
            pairs.push(i, &small, &mut packed, &mut parts);
        }
        assert!(!pairs.fits(&small));
        // One more: the full group is written first, the SET starts the next.
        pairs.push(MAX_PAIRS, &small, &mut packed, &mut parts);
        assert!(matches!(&parts[..], [Part::Merged(items)] if items.len() == MAX_PAIRS));
        pairs.flush(&mut packed, &mut parts);
        assert!(matches!(parts[1], Part::Command(i) if i == MAX_PAIRS));

        let big_value = vec![b'x'; MAX_BYTES / 2];
        let big = resp(&[b"SET", b"k", &big_value]);
        let mut pairs = Pairs::default();
        assert!(pairs.fits(&big));
        pairs.push(0, &big, &mut packed, &mut parts);
        assert!(!pairs.fits(&big));
        // A pair larger than the bound on its own still fits an empty group.
        let huge_value = vec![b'x'; MAX_BYTES * 2];
        let huge = resp(&[b"SET", b"k", &huge_value]);
        assert!(Pairs::default().fits(&huge));
    }
}
