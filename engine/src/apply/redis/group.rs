//! A cluster run's slot groups, as bytes and back: which slot an operation
//! lies in, how a group and its marker read are written
//! (`[ASKING] MULTI … HSET <slot marker> … EXEC`), and what their replies
//! mean (design `docs/design/redis-cluster.md` §2.5). Pure: no IO.

use std::collections::BTreeMap;

use super::is_transient;
use super::topology::NodeAddr;
use crate::apply::Applied;
use crate::op::{Op, RedisOp};
use crate::route::cluster;
use crate::route::slot::marker_key;
use crate::wire::reply::{error_code, escape, Reply};
use crate::wire::resp::encode_command;

/// The slot of `op`: the router's [`cluster::op_slot`] (the one
/// definition), after refusing a db other than 0. The router only lets
/// fitting operations through; this is the applier's own check, so a
/// router bug is a refusal, not a write to the wrong place.
pub(super) fn op_slot(op: &RedisOp) -> Result<u16, String> {
    if op.db != 0 {
        return Err(format!(
            "db {}: a Redis Cluster target has only db 0",
            op.db
        ));
    }
    cluster::op_slot(op)
}

/// The items of a run that lie in one slot, in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) slot: u16,
    /// Indexes into the run.
    pub(super) items: Vec<usize>,
}

/// Splits a run into slot groups (ordered by slot), refusing in `out`
/// the items that cannot go to a cluster.
pub(super) fn by_slot(items: &[(u64, &Op)], out: &mut [Applied]) -> Vec<Group> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, (_, op)) in items.iter().enumerate() {
        match op {
            Op::Mongo(_) => {
                out[i] = Applied::Refused("a Mongo write cannot go to a Redis target".into())
            }
            Op::Redis(r) => match op_slot(r) {
                Ok(slot) => groups.entry(slot).or_default().push(i),
                Err(why) => out[i] = Applied::Refused(why),
            },
        }
    }
    groups
        .into_iter()
        .map(|(slot, items)| Group { slot, items })
        .collect()
}

/// What one reply of a pipeline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Unwatch,
    Asking,
    Watch,
    Read,
    Multi,
    /// A command of the item at this index of the run.
    Command(usize),
    Marker,
    Exec,
}

/// The replies a piece of a pipeline expects, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    parts: Vec<Part>,
    /// The slot the group (or marker read) is for.
    slot: u16,
}

impl Layout {
    pub(super) fn replies(&self) -> usize {
        self.parts.len()
    }
}

/// Appends the read of `slot`'s marker field: `HMGET <marker key> <field>`,
/// after `ASKING` when the slot is reached through an `ASK`. With `watch`
/// (shared streams), the key is first watched (after an `UNWATCH` that
/// clears whatever an earlier, abandoned group left watched).
pub(super) fn encode_read(
    packed: &mut Vec<u8>,
    slot: u16,
    field: &str,
    asking: bool,
    watch: bool,
) -> Layout {
    let key = marker_key(slot);
    let mut parts = Vec::new();
    if watch {
        encode_command(packed, &[&b"UNWATCH"[..]]);
        parts.push(Part::Unwatch);
        if asking {
            encode_command(packed, &[&b"ASKING"[..]]);
            parts.push(Part::Asking);
        }
        encode_command(packed, &[&b"WATCH"[..], key.as_bytes()]);
        parts.push(Part::Watch);
    }
    if asking {
        encode_command(packed, &[&b"ASKING"[..]]);
        parts.push(Part::Asking);
    }
    encode_command(packed, &[&b"HMGET"[..], key.as_bytes(), field.as_bytes()]);
    parts.push(Part::Read);
    Layout { parts, slot }
}

/// Appends a group: `[ASKING] MULTI <each op's commands> HSET <marker key>
/// <field> <value> EXEC`. The data and the marker commit together or not
/// at all; `ASKING` holds through the MULTI (Redis clears it only outside
/// one).
pub(super) fn encode_group(
    packed: &mut Vec<u8>,
    slot: u16,
    ops: &[(usize, &RedisOp)],
    field: &str,
    value: u64,
    asking: bool,
) -> Layout {
    let mut parts = Vec::with_capacity(ops.len() + 4);
    if asking {
        encode_command(packed, &[&b"ASKING"[..]]);
        parts.push(Part::Asking);
    }
    encode_command(packed, &[&b"MULTI"[..]]);
    parts.push(Part::Multi);
    for &(i, op) in ops {
        for c in &op.commands {
            packed.extend_from_slice(c.resp());
            parts.push(Part::Command(i));
        }
    }
    let key = marker_key(slot);
    let value = value.to_string();
    encode_command(
        packed,
        &[
            &b"HSET"[..],
            key.as_bytes(),
            field.as_bytes(),
            value.as_bytes(),
        ],
    );
    parts.push(Part::Marker);
    encode_command(packed, &[&b"EXEC"[..]]);
    parts.push(Part::Exec);
    Layout { parts, slot }
}

/// Where Redis sent a group instead of applying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Redirect {
    /// The slot is served by `to` now: update the map, send there.
    Moved { slot: u16, to: NodeAddr },
    /// The slot is being migrated and the keys are at `to`: send there
    /// once, after `ASKING`; the map does not change.
    Ask { to: NodeAddr },
    /// Keys of the group are split between the two nodes of a migration:
    /// wait and send again.
    TryAgain(String),
    /// The node became a replica: refresh the map, reconnect.
    ReadOnly(String),
}

/// What happened to a group (or a marker read) at one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// EXEC ran. Per item, the errors its commands got (Redis does not
    /// roll back; the rest of the group is applied).
    Committed(BTreeMap<usize, Vec<String>>),
    /// Nothing was applied here.
    Redirect(Redirect),
    /// Commands refused while queueing (wrong arity, unknown command):
    /// nothing was applied; these items are refused for good and the group
    /// goes again without them.
    Refused(BTreeMap<usize, Vec<String>>),
    /// EXEC answered nil: the watched marker changed (shared streams).
    /// Nothing was applied; plan the group again.
    Conflict,
    /// The node or the cluster cannot take writes now (CLUSTERDOWN,
    /// LOADING, OOM, …). Nothing was applied.
    Unavailable(String),
    /// The replies do not say what happened: the connection is not to be
    /// trusted and the outcome is unknown.
    Broken(String),
}

/// A redirect's `<slot> <host:port>`.
fn redirect_target(line: &[u8], here: &NodeAddr) -> Option<(u16, NodeAddr)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace().skip(1);
    let slot = words.next()?.parse().ok()?;
    let to = NodeAddr::parse(words.next()?, &here.host)?;
    Some((slot, to))
}

/// An error reply that is about the node or the cluster rather than the
/// command: a redirect or a transient state. `None`: the command's own.
fn cluster_error(line: &[u8], here: &NodeAddr) -> Option<Outcome> {
    let redirect = |make: fn(u16, NodeAddr) -> Redirect| {
        Some(match redirect_target(line, here) {
            Some((slot, to)) => Outcome::Redirect(make(slot, to)),
            None => Outcome::Broken(format!("unreadable redirect: {}", escape(line))),
        })
    };
    match error_code(line) {
        b"MOVED" => redirect(|slot, to| Redirect::Moved { slot, to }),
        b"ASK" => redirect(|_, to| Redirect::Ask { to }),
        b"TRYAGAIN" => Some(Outcome::Redirect(Redirect::TryAgain(escape(line)))),
        b"READONLY" => Some(Outcome::Redirect(Redirect::ReadOnly(escape(line)))),
        _ if is_transient(line) => Some(Outcome::Unavailable(escape(line))),
        _ => None,
    }
}

/// The bookkeeping replies (`UNWATCH`, `ASKING`, `WATCH`, `MULTI`) must be
/// `+OK`; anything else says why the rest cannot be believed.
fn check_bookkeeping(part: Part, reply: &Reply, here: &NodeAddr) -> Option<Outcome> {
    match reply {
        Reply::Status(_) => None,
        Reply::Error(e) => {
            Some(cluster_error(e, here).unwrap_or_else(|| {
                Outcome::Unavailable(format!("{part:?} refused: {}", escape(e)))
            }))
        }
        other => Some(Outcome::Broken(format!("{part:?} answered {other:?}"))),
    }
}

/// Reads the replies of an [`encode_read`]: the marker (0: none yet).
pub(super) fn read_marker(
    layout: &Layout,
    replies: &[Reply],
    here: &NodeAddr,
) -> Result<u64, Outcome> {
    if replies.len() != layout.parts.len() {
        return Err(Outcome::Broken(format!(
            "{} replies to a marker read of {} commands",
            replies.len(),
            layout.parts.len()
        )));
    }
    let mut value = None;
    for (&part, reply) in layout.parts.iter().zip(replies) {
        if part != Part::Read {
            if let Some(bad) = check_bookkeeping(part, reply, here) {
                return Err(bad);
            }
            continue;
        }
        value = Some(match reply {
            Reply::Array(Some(values)) => match values.as_slice() {
                [Reply::Bulk(None)] => 0,
                [Reply::Bulk(Some(b))] => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        Outcome::Unavailable(format!(
                            "the marker holds a non-number: {}",
                            escape(b)
                        ))
                    })?,
                other => return Err(Outcome::Broken(format!("HMGET answered {other:?}"))),
            },
            Reply::Error(e) => {
                return Err(cluster_error(e, here).unwrap_or_else(|| {
                    Outcome::Unavailable(format!("reading the marker: {}", escape(e)))
                }))
            }
            other => return Err(Outcome::Broken(format!("HMGET answered {other:?}"))),
        });
    }
    value.ok_or_else(|| Outcome::Broken("no marker read in the layout".into()))
}

/// Reads the replies of an [`encode_group`].
pub(super) fn read_group(layout: &Layout, replies: &[Reply], here: &NodeAddr) -> Outcome {
    if replies.len() != layout.parts.len() {
        return Outcome::Broken(format!(
            "{} replies to a group of {} commands",
            replies.len(),
            layout.parts.len()
        ));
    }
    let mut queued: Vec<(Part, &Reply)> = Vec::new();
    let mut exec = None;
    for (&part, reply) in layout.parts.iter().zip(replies) {
        match part {
            Part::Command(_) | Part::Marker => queued.push((part, reply)),
            Part::Exec => exec = Some(reply),
            Part::Multi => {
                if let Reply::Error(e) = reply {
                    // MULTI fails only on a connection in a state we did
                    // not put it in (nested MULTI) or one refused outright.
                    return Outcome::Broken(format!("MULTI refused: {}", escape(e)));
                }
            }
            _ => {
                if let Some(bad) = check_bookkeeping(part, reply, here) {
                    return bad;
                }
            }
        }
    }
    let Some(exec) = exec else {
        return Outcome::Broken("no EXEC in the layout".into());
    };
    match exec {
        Reply::Array(Some(results)) if results.len() == queued.len() => {
            let mut errors: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for ((part, _), result) in queued.iter().zip(results) {
                let Some(e) = result.as_error() else { continue };
                match part {
                    Part::Command(i) => errors.entry(*i).or_default().push(escape(e)),
                    _ => {
                        return Outcome::Unavailable(format!(
                            "the marker HSET failed inside EXEC: {}",
                            escape(e)
                        ))
                    }
                }
            }
            Outcome::Committed(errors)
        }
        Reply::Array(Some(results)) => Outcome::Broken(format!(
            "EXEC answered {} results for {} queued commands",
            results.len(),
            queued.len()
        )),
        Reply::Array(None) => Outcome::Conflict,
        Reply::Error(e) if error_code(e) == b"EXECABORT" => aborted(&queued, layout.slot, e, here),
        Reply::Error(e) if error_code(e) == b"CROSSSLOT" => Outcome::Broken(format!(
            "cross_slot: Redis found keys of several slots in one slot group ({}); \
             a command's key positions are not what syncs assumes",
            escape(e)
        )),
        Reply::Error(e) => cluster_error(e, here)
            .unwrap_or_else(|| Outcome::Broken(format!("EXEC failed: {}", escape(e)))),
        other => Outcome::Broken(format!("EXEC answered {other:?}")),
    }
}

/// An EXECABORT: why the queued commands were refused.
fn aborted(queued: &[(Part, &Reply)], slot: u16, exec_error: &[u8], here: &NodeAddr) -> Outcome {
    let errors = || queued.iter().filter_map(|(p, r)| Some((*p, r.as_error()?)));
    // A command redirected to another slot than its group's: its key is
    // not where syncs looked for it (a command whose key positions syncs
    // does not know). No map or retry changes that: it is refused, and
    // the rest of the group goes again without it.
    let mut misrouted: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (part, e) in errors() {
        if let (Part::Command(i), Some(Outcome::Redirect(Redirect::Moved { slot: to_slot, .. }))) =
            (part, cluster_error(e, here))
        {
            if to_slot != slot {
                misrouted.entry(i).or_default().push(format!(
                    "cross_slot: Redis moved it to slot {to_slot}, not the slot {slot} syncs \
                     found its key in ({}); a command whose key positions syncs does not know",
                    escape(e)
                ));
            }
        }
    }
    if !misrouted.is_empty() {
        return Outcome::Refused(misrouted);
    }
    // A redirect or a transient state anywhere: the whole group goes.
    if let Some(o) = errors().find_map(|(_, e)| cluster_error(e, here)) {
        // Queued commands are checked one by one: a data key missing at a
        // migrating source answers ASK even while the marker is still
        // here. Only a marker gone from here means the slot's keys are at
        // the ASK's node (a key never comes back to a migrating source);
        // else the keys are split, and reading the marker at the target
        // would find none: wait, as for TRYAGAIN.
        let marker_here = queued
            .iter()
            .any(|(p, r)| *p == Part::Marker && r.as_error().is_none());
        return match o {
            Outcome::Redirect(Redirect::Ask { to }) if marker_here => {
                Outcome::Redirect(Redirect::TryAgain(format!(
                    "keys of the group are split between this node and {to} (slot migrating)"
                )))
            }
            o => o,
        };
    }
    let mut refused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (part, e) in errors() {
        match part {
            Part::Command(i) if error_code(e) == b"CROSSSLOT" => refused
                .entry(i)
                .or_default()
                .push(format!("cross_slot: {}", escape(e))),
            Part::Command(i) => refused.entry(i).or_default().push(escape(e)),
            _ => {
                return Outcome::Unavailable(format!("the marker HSET was refused: {}", escape(e)))
            }
        }
    }
    if refused.is_empty() {
        Outcome::Broken(format!("EXEC failed: {}", escape(exec_error)))
    } else {
        Outcome::Refused(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RedisCommand;
    use crate::route::slot::key_slot;
    use bytes::Bytes;

    fn redis(db: u32, commands: &[&[&str]]) -> RedisOp {
        RedisOp {
            port: 6379,
            db,
            commands: commands
                .iter()
                .map(|c| RedisCommand::new(c).expect("a command"))
                .collect(),
        }
    }

    fn status(s: &str) -> Reply {
        Reply::Status(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn err(s: &str) -> Reply {
        Reply::Error(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn here() -> NodeAddr {
        NodeAddr::new("127.0.0.1", 7000)
    }

    #[test]
    fn the_slot_of_an_operation() {
        let foo = key_slot(b"foo");
        assert_eq!(op_slot(&redis(0, &[&["SET", "foo", "1"]])), Ok(foo));
        assert_eq!(
            op_slot(&redis(0, &[&["MSET", "{foo}a", "1", "{foo}b", "2"]])),
            Ok(foo)
        );
        // A transaction in one slot, PUBLISH riding along.
        assert_eq!(
            op_slot(&redis(
                0,
                &[
                    &["RPUSH", "{foo}l", "1"],
                    &["PUBLISH", "ch", "x"],
                    &["INCR", "foo"]
                ]
            )),
            Ok(foo)
        );
        assert_eq!(op_slot(&redis(0, &[&["PUBLISH", "ch", "x"]])), Ok(0));
        assert_eq!(op_slot(&redis(0, &[&["SPUBLISH", "foo", "x"]])), Ok(foo));
    }

    #[test]
    fn operations_a_cluster_cannot_take_are_refused_with_a_reason() {
        for op in [
            redis(0, &[&["RENAME", "foo", "bar"]]),
            redis(0, &[&["SET", "foo", "1"], &["SET", "bar", "1"]]),
            redis(0, &[&["flushall"]]),
            redis(0, &[&["SET", "foo", "1"], &["PING"]]),
        ] {
            let why = op_slot(&op).expect_err("refused");
            assert!(why.starts_with("cross_slot: "), "{why}");
        }
        assert_eq!(
            op_slot(&redis(3, &[&["SET", "foo", "1"]])),
            Err("db 3: a Redis Cluster target has only db 0".to_owned())
        );
    }

    #[test]
    fn runs_split_into_slot_groups_in_order() {
        let a1 = Op::Redis(redis(0, &[&["RPUSH", "{a}l", "1"]]));
        let b = Op::Redis(redis(0, &[&["RPUSH", "{b}l", "1"]]));
        let bad = Op::Redis(redis(0, &[&["RENAME", "{a}x", "{b}x"]]));
        let a2 = Op::Redis(redis(0, &[&["RPUSH", "{a}m", "2"]]));
        let items: Vec<(u64, &Op)> = vec![(1, &a1), (2, &b), (3, &bad), (4, &a2)];
        let mut out = vec![Applied::Ok; items.len()];
        let groups = by_slot(&items, &mut out);
        let (sa, sb) = (key_slot(b"a"), key_slot(b"b"));
        let mut expected = vec![
            Group {
                slot: sa,
                items: vec![0, 3],
            },
            Group {
                slot: sb,
                items: vec![1],
            },
        ];
        expected.sort_by_key(|g| g.slot);
        assert_eq!(groups, expected);
        assert!(matches!(&out[2], Applied::Refused(r) if r.starts_with("cross_slot:")));
        assert_eq!(out[0], Applied::Ok);
    }

    /// A group of two items (the first a two-command transaction) and its
    /// layout: `ASKING MULTI c0 c0' c1 HSET EXEC`.
    fn layout(asking: bool) -> (Layout, Vec<u8>) {
        let t = redis(0, &[&["SET", "{a}x", "1"], &["SET", "{a}y", "2"]]);
        let o = redis(0, &[&["RPUSH", "{a}l", "3"]]);
        let mut packed = Vec::new();
        let l = encode_group(
            &mut packed,
            key_slot(b"a"),
            &[(0, &t), (4, &o)],
            "f",
            9,
            asking,
        );
        (l, packed)
    }

    #[test]
    fn a_group_is_one_multi_exec_with_its_marker() {
        let (l, packed) = layout(true);
        assert_eq!(l.replies(), 7);
        let text = String::from_utf8(packed).expect("text");
        let marker = marker_key(key_slot(b"a"));
        assert!(
            text.starts_with("*1\r\n$6\r\nASKING\r\n*1\r\n$5\r\nMULTI\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "*4\r\n$4\r\nHSET\r\n${}\r\n{marker}\r\n$1\r\nf\r\n$1\r\n9\r\n*1\r\n$4\r\nEXEC\r\n",
                marker.len()
            )),
            "{text}"
        );
    }

    #[test]
    fn committed_with_per_item_errors() {
        let (l, _) = layout(false);
        let q = || status("QUEUED");
        let replies = [
            status("OK"),
            q(),
            q(),
            q(),
            q(),
            Reply::Array(Some(vec![
                status("OK"),
                err("WRONGTYPE Operation against a key holding the wrong kind of value"),
                Reply::Int(1),
                Reply::Int(1),
            ])),
        ];
        let Outcome::Committed(errors) = read_group(&l, &replies, &here()) else {
            panic!()
        };
        assert_eq!(errors.keys().copied().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn redirects_at_exec_and_at_queue_time() {
        let (l, _) = layout(false);
        let q = || status("QUEUED");
        let exec_err = |e: &str| [status("OK"), q(), q(), q(), q(), err(e)];
        assert_eq!(
            read_group(&l, &exec_err("MOVED 15495 127.0.0.1:7002"), &here()),
            Outcome::Redirect(Redirect::Moved {
                slot: 15495,
                to: NodeAddr::new("127.0.0.1", 7002)
            })
        );
        assert_eq!(
            read_group(&l, &exec_err("ASK 15495 :7002"), &here()),
            Outcome::Redirect(Redirect::Ask {
                to: NodeAddr::new("127.0.0.1", 7002)
            })
        );
        assert!(matches!(
            read_group(
                &l,
                &exec_err("TRYAGAIN Multiple keys request during rehashing of slot"),
                &here()
            ),
            Outcome::Redirect(Redirect::TryAgain(_))
        ));
        assert!(matches!(
            read_group(&l, &exec_err("CLUSTERDOWN The cluster is down"), &here()),
            Outcome::Unavailable(_)
        ));
        assert!(matches!(
            read_group(&l, &exec_err("CROSSSLOT Keys in request don't hash to the same slot"), &here()),
            Outcome::Broken(m) if m.starts_with("cross_slot:")
        ));
        assert!(matches!(
            read_group(&l, &exec_err("MOVED nonsense"), &here()),
            Outcome::Broken(_)
        ));
        // The marker's HSET redirected while queueing: EXECABORT.
        let replies = [
            status("OK"),
            q(),
            q(),
            q(),
            err("ASK 15495 127.0.0.1:7002"),
            err("EXECABORT Transaction discarded because of previous errors."),
        ];
        assert_eq!(
            read_group(&l, &replies, &here()),
            Outcome::Redirect(Redirect::Ask {
                to: NodeAddr::new("127.0.0.1", 7002)
            })
        );
        // A data key already migrated, the marker still here: the keys are
        // split, which is a TRYAGAIN, not an ASK.
        let replies = [
            status("OK"),
            q(),
            err("ASK 15495 127.0.0.1:7002"),
            q(),
            q(),
            err("EXECABORT Transaction discarded because of previous errors."),
        ];
        assert!(matches!(
            read_group(&l, &replies, &here()),
            Outcome::Redirect(Redirect::TryAgain(_))
        ));
        assert_eq!(
            read_group(
                &l,
                &[status("OK"), q(), q(), q(), q(), Reply::Array(None)],
                &here()
            ),
            Outcome::Conflict
        );
    }

    #[test]
    fn a_command_moved_to_another_slot_than_its_group_is_refused() {
        let (l, _) = layout(false);
        let q = || status("QUEUED");
        let abort = || err("EXECABORT Transaction discarded because of previous errors.");
        // The item 4's key is not in the group's slot (15495, `a`): Redis
        // sends it elsewhere while the rest queue here.
        let replies = [
            status("OK"),
            q(),
            q(),
            err("MOVED 7000 127.0.0.1:7002"),
            q(),
            abort(),
        ];
        let Outcome::Refused(refused) = read_group(&l, &replies, &here()) else {
            panic!("{:?}", read_group(&l, &replies, &here()))
        };
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), [4]);
        assert!(
            refused[&4][0].starts_with("cross_slot: Redis moved it to slot 7000"),
            "{refused:?}"
        );
        // Moved to the group's own slot: the slot moved, the group goes there.
        let replies = [
            status("OK"),
            q(),
            q(),
            err("MOVED 15495 127.0.0.1:7002"),
            err("MOVED 15495 127.0.0.1:7002"),
            abort(),
        ];
        assert!(matches!(
            read_group(&l, &replies, &here()),
            Outcome::Redirect(Redirect::Moved { slot: 15495, .. })
        ));
    }

    #[test]
    fn queue_time_refusals_name_their_items() {
        let (l, _) = layout(true);
        let q = || status("QUEUED");
        let replies = [
            status("OK"),
            status("OK"),
            q(),
            q(),
            err("ERR wrong number of arguments for 'rpush' command"),
            q(),
            err("EXECABORT Transaction discarded because of previous errors."),
        ];
        let Outcome::Refused(refused) = read_group(&l, &replies, &here()) else {
            panic!()
        };
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), [4]);
        // Too few replies: the outcome is unknown.
        assert!(matches!(
            read_group(&l, &replies[1..], &here()),
            Outcome::Broken(_)
        ));
    }

    #[test]
    fn marker_reads() {
        let mut packed = Vec::new();
        let l = encode_read(&mut packed, 5, "f", true, true);
        assert_eq!(l.replies(), 5);
        let ok = || status("OK");
        let value = |v: Reply| [ok(), ok(), ok(), ok(), Reply::Array(Some(vec![v]))];
        assert_eq!(
            read_marker(
                &l,
                &value(Reply::Bulk(Some(Bytes::from_static(b"42")))),
                &here()
            ),
            Ok(42)
        );
        assert_eq!(read_marker(&l, &value(Reply::Bulk(None)), &here()), Ok(0));
        assert!(matches!(
            read_marker(
                &l,
                &value(Reply::Bulk(Some(Bytes::from_static(b"x")))),
                &here()
            ),
            Err(Outcome::Unavailable(_))
        ));
        let asked = [ok(), ok(), err("ASK 5 127.0.0.1:7001"), ok(), ok()];
        assert_eq!(
            read_marker(&l, &asked, &here()),
            Err(Outcome::Redirect(Redirect::Ask {
                to: NodeAddr::new("127.0.0.1", 7001)
            }))
        );
        let mut packed = Vec::new();
        let plain = encode_read(&mut packed, 5, "f", false, false);
        assert_eq!(plain.replies(), 1);
        assert_eq!(
            read_marker(&plain, &[err("MOVED 5 h:1")], &here()),
            Err(Outcome::Redirect(Redirect::Moved {
                slot: 5,
                to: NodeAddr::new("h", 1)
            }))
        );
    }
}
