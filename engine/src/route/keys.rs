//! Where the keys are in a Redis command, after Redis' own key specs
//! (`COMMAND INFO`'s first/last/step and numkeys forms).
//!
//! Rules match on every key of a command, so routing needs the key positions,
//! not "the first argument". Commands not in the table are treated as having
//! their key in the first argument, the shape of nearly every Redis and
//! module write command.

use smallvec::SmallVec;

use crate::op::RedisCommand;

/// Key positions of one command, as argument indexes (the name is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys (PING, FLUSHALL, PUBLISH's channel is not a key, …).
    None,
    /// Keys at `first`, `first + step`, … up to `last` (negative counts
    /// from the end: -1 is the last argument).
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// `numkeys` at `at`, then that many keys; `extra` is a key before it
    /// (ZUNIONSTORE's destination).
    NumKeys { at: usize, extra: Option<usize> },
    /// Keys after the `STREAMS` keyword, looked for from argument `from`
    /// on (past XREADGROUP's group and consumer names): the first half of
    /// the arguments after it, the IDs being the second.
    Streams { from: usize },
}

/// How a command whose keys route apart may be split into per-key commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Not splittable: the command's meaning spans its keys.
    No,
    /// Each key (with the `step - 1` arguments after it) stands alone (MSET,
    /// DEL, UNLINK, EXISTS, TOUCH).
    PerKey,
}

const MAX_NAME: usize = 24;

/// The key spec and split rule of `cmd`.
pub fn spec(cmd: &RedisCommand) -> (KeySpec, Split) {
    spec_of(cmd.name())
}

/// The key spec and split rule of the command named `name` (any case).
pub fn spec_of(name: &[u8]) -> (KeySpec, Split) {
    let r = |first, last, step| KeySpec::Range { first, last, step };
    // An unknown command (a name longer than any known one too): key first.
    let unknown = (r(1, 1, 1), Split::No);
    syncs_dsl::commands::with_upper::<MAX_NAME, _>(name, |upper| {
        match upper {
            // Keyless.
            b"PING" | b"ECHO" | b"FLUSHALL" | b"FLUSHDB" | b"SWAPDB" | b"CONFIG" | b"SHUTDOWN"
            | b"DEBUG" | b"MODULE" | b"ACL" | b"REPLICAOF" | b"SLAVEOF" | b"SAVE" | b"BGSAVE"
            | b"BGREWRITEAOF" | b"CLIENT" | b"CLUSTER" | b"FAILOVER" | b"FUNCTION" | b"SCRIPT"
            | b"PUBLISH" | b"SPUBLISH" | b"DBSIZE" | b"INFO" | b"TIME" | b"LASTSAVE"
            | b"RANDOMKEY" | b"KEYS" | b"SCAN" | b"WAIT" | b"MEMORY" | b"LATENCY" | b"SLOWLOG"
            | b"COMMAND" | b"READONLY" | b"READWRITE" | b"RESET" | b"QUIT" | b"HELLO" | b"AUTH" => {
                (KeySpec::None, Split::No)
            }
            // Every argument a key.
            b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => (r(1, -1, 1), Split::PerKey),
            b"WATCH" | b"SINTER" | b"SUNION" | b"SDIFF" | b"PFCOUNT" | b"MGET" => {
                (r(1, -1, 1), Split::No)
            }
            b"PFMERGE" | b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" => {
                (r(1, -1, 1), Split::No)
            }
            // Key/value pairs.
            b"MSET" => (r(1, -1, 2), Split::PerKey),
            b"MSETNX" => (r(1, -1, 2), Split::No),
            // Two keys up front.
            b"RENAME" | b"RENAMENX" | b"COPY" | b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH"
            | b"BRPOPLPUSH" | b"GEOSEARCHSTORE" | b"ZRANGESTORE" | b"LCS" => {
                (r(1, 2, 1), Split::No)
            }
            // Keys then a trailing timeout.
            b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => (r(1, -2, 1), Split::No),
            // BITOP <op> <dest> <key>…
            b"BITOP" => (r(2, -1, 1), Split::No),
            // A subcommand, then the key.
            b"XGROUP" | b"PFDEBUG" => (r(2, 2, 1), Split::No),
            b"XREADGROUP" => (KeySpec::Streams { from: 4 }, Split::No),
            b"XREAD" => (KeySpec::Streams { from: 1 }, Split::No),
            // numkeys forms.
            b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => (
                KeySpec::NumKeys {
                    at: 2,
                    extra: Some(1),
                },
                Split::No,
            ),
            b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
                (KeySpec::NumKeys { at: 2, extra: None }, Split::No)
            }
            b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"SINTERCARD" | b"ZINTERCARD" | b"LMPOP"
            | b"ZMPOP" => (KeySpec::NumKeys { at: 1, extra: None }, Split::No),
            b"BLMPOP" | b"BZMPOP" => (KeySpec::NumKeys { at: 2, extra: None }, Split::No),
            _ => unknown,
        }
    })
    .unwrap_or(unknown)
}

/// Argument indexes (of keys): inline for up to four.
pub type Positions = SmallVec<[usize; 4]>;

/// The argument indexes holding keys, in order. Out-of-range specs (a
/// command sent with too few arguments) yield the keys that exist.
pub fn positions(cmd: &RedisCommand, spec: KeySpec, out: &mut Positions) {
    let args = cmd.args();
    positions_with(args.len(), |i| args.get(i), spec, out);
}

/// The key positions of a command of `n` arguments, `arg(i)` reading one.
fn positions_with<'a>(
    n: usize,
    arg: impl Fn(usize) -> Option<&'a [u8]>,
    spec: KeySpec,
    out: &mut Positions,
) {
    out.clear();
    match spec {
        KeySpec::None => {}
        KeySpec::Range { first, last, step } => {
            let last = if last < 0 { n as isize + last } else { last };
            let mut i = first as isize;
            while i <= last && (i as usize) < n {
                out.push(i as usize);
                i += step as isize;
            }
        }
        KeySpec::NumKeys { at, extra } => {
            if let Some(e) = extra.filter(|&e| e < n) {
                out.push(e);
            }
            let count = arg(at)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            out.extend((at + 1..n).take(count));
        }
        KeySpec::Streams { from } => {
            let streams =
                (from..n).find(|&i| arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS")));
            if let Some(at) = streams {
                let count = (n - at - 1) / 2;
                out.extend((at + 1..n).take(count));
            }
        }
    }
}

/// Splits a [`Split::PerKey`] command into one command per group of keys.
/// `together(i, j)` says whether the keys at `positions[i]` and
/// `positions[j]` belong in the same part. Each part keeps its keys in
/// their order, each with the `step - 1` arguments after it (MSET's
/// values); parts come in the order of their first key. Returns, per part,
/// the index in `positions` of its first key and the command.
pub fn split_per_key(
    cmd: &RedisCommand,
    spec: KeySpec,
    positions: &[usize],
    together: impl Fn(usize, usize) -> bool,
) -> Vec<(usize, RedisCommand)> {
    let step = match spec {
        KeySpec::Range { step, .. } => step,
        _ => 1,
    };
    let args = cmd.arg_list();
    let mut groups: Vec<(usize, Vec<&[u8]>)> = Vec::new();
    for (i, &p) in positions.iter().enumerate() {
        let g = match groups.iter().position(|(first, _)| together(*first, i)) {
            Some(g) => g,
            None => {
                groups.push((i, vec![cmd.name()]));
                groups.len() - 1
            }
        };
        let end = (p + step).min(args.len());
        groups[g].1.extend(args.get(p..end).unwrap_or_default());
    }
    groups
        .into_iter()
        .filter_map(|(first, args)| Some((first, RedisCommand::new(&args)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> RedisCommand {
        RedisCommand::new(args).expect("non-empty")
    }

    fn keys(args: &[&str]) -> Vec<usize> {
        let c = cmd(args);
        let mut out = Positions::new();
        positions(&c, spec(&c).0, &mut out);
        out.to_vec()
    }

    #[test]
    fn key_positions_follow_redis_key_specs() {
        assert_eq!(keys(&["set", "a", "b"]), vec![1]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), vec![1, 3]);
        assert_eq!(keys(&["del", "a", "b", "c"]), vec![1, 2, 3]);
        assert_eq!(keys(&["RENAME", "a", "b"]), vec![1, 2]);
        assert_eq!(keys(&["blpop", "a", "b", "0"]), vec![1, 2]);
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            vec![1, 3, 4]
        );
        assert_eq!(keys(&["EVAL", "return 1", "1", "k", "arg"]), vec![3]);
        assert_eq!(keys(&["BITOP", "AND", "d", "a", "b"]), vec![2, 3, 4]);
        assert_eq!(keys(&["FLUSHALL"]), Vec::<usize>::new());
        assert_eq!(keys(&["set"]), Vec::<usize>::new());
        assert_eq!(keys(&["EVAL", "s", "99", "k"]), vec![3]);
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]), vec![2]);
        assert_eq!(keys(&["xgroup", "HELP"]), Vec::<usize>::new());
        assert_eq!(
            keys(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "1",
                "streams",
                "s1",
                "s2",
                ">",
                ">"
            ]),
            vec![7, 8]
        );
        assert_eq!(
            keys(&["XREADGROUP", "GROUP", "g", "c"]),
            Vec::<usize>::new()
        );
        assert_eq!(
            keys(&[
                "XREADGROUP",
                "GROUP",
                "streams",
                "streams",
                "STREAMS",
                "s",
                "0"
            ]),
            vec![5]
        );
    }

    fn words(c: &RedisCommand) -> String {
        let w: Vec<_> = c
            .args()
            .iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect();
        w.join(" ")
    }

    #[test]
    fn split_per_key_keeps_values_and_order() {
        let c = cmd(&["MSET", "a1", "1", "b1", "2", "a2", "3"]);
        let (spec, split) = spec(&c);
        assert_eq!(split, Split::PerKey);
        let mut pos = Positions::new();
        positions(&c, spec, &mut pos);
        let first_byte = |i: usize| c.args()[pos[i]][0];
        let parts = split_per_key(&c, spec, &pos, |i, j| first_byte(i) == first_byte(j));
        let got: Vec<_> = parts.iter().map(|(i, p)| (*i, words(p))).collect();
        assert_eq!(got, [(0, "MSET a1 1 a2 3".into()), (1, "MSET b1 2".into())]);
        let c = cmd(&["DEL", "x", "y", "x2"]);
        let mut pos = Positions::new();
        positions(&c, spec_of(&c), &mut pos);
        let parts = split_per_key(&c, spec_of(&c), &pos, |_, _| false);
        let got: Vec<_> = parts.iter().map(|(i, p)| (*i, words(p))).collect();
        assert_eq!(
            got,
            [
                (0, "DEL x".into()),
                (1, "DEL y".into()),
                (2, "DEL x2".into())
            ]
        );
    }

    fn spec_of(c: &RedisCommand) -> KeySpec {
        spec(c).0
    }
}
