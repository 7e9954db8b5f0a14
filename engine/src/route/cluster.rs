//! Redis Cluster fit: every operation bound for a `redis-cluster` target
//! must lie in one hash slot, since the cluster applies a command (or a
//! MULTI/EXEC) on the one node that owns its keys' slot, together with
//! that slot's exactly-once marker.
//!
//! [`cluster_fit`] takes an operation as the router built it for the
//! target (keys already rewritten) and returns the operations to send:
//!
//! - A command whose keys all hash to one slot is kept.
//! - A command whose keys hash to several slots is split per slot when its
//!   keys stand alone (MSET, DEL, UNLINK, EXISTS, TOUCH: [`Split::PerKey`]);
//!   the parts are applied exactly once each, but not atomically together.
//!   Any other such command is refused.
//! - A command without keys is refused, except `PUBLISH`: Redis Cluster
//!   forwards a publish to every node, so it may run on any of them. It
//!   goes with the rest of its transaction, or alone in slot 0 (the slot
//!   whose marker records it). `SPUBLISH` (sharded) goes to its channel's
//!   slot.
//! - A transaction whose keys all lie in one slot is kept whole. One that
//!   spans slots is refused, or, with `split_transactions = true`, becomes
//!   one transaction per slot, in the order of each slot's first command;
//!   each is atomic in its slot, not across slots.
//!
//! A refusal is a reason starting with `cross_slot: `; the router refuses
//! the whole operation with it, for every target (never applied in part).
//!
//! The db is left as the rules made it: `syncs-check` only lets db 0 reach
//! a cluster target (a rule that may route another db is an error), and an
//! applier refuses anything else. [`op_slot`] is the one definition of an
//! operation's slot, for the router and the applier alike.
//!
//! **Architecture invariant:** pure, no IO.

use syncs_dsl::Target as TargetDef;

use super::keys::{self, Split};
use super::slot::key_slot;
use crate::op::{RedisCommand, RedisOp};
use smallvec::smallvec;

/// Keys shown in a refusal, at most.
const SHOWN_KEYS: usize = 6;

/// Where a command may run in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Every key hashes to this slot.
    Slot(u16),
    /// The keys hash to several slots: the slot of each key position.
    Spread(Vec<u16>),
    /// No key, and any node may run it (`PUBLISH`).
    Anywhere,
    /// No key, and no node is the right one.
    Nowhere,
}

/// The command's name, upper-cased, for messages.
fn name(cmd: &RedisCommand) -> String {
    String::from_utf8_lossy(cmd.name()).to_uppercase()
}

/// Where `cmd` may run, and its key positions.
fn place(cmd: &RedisCommand, positions: &mut keys::Positions) -> Place {
    let (spec, _) = keys::spec(cmd);
    keys::positions(cmd, spec, positions);
    if positions.is_empty() {
        return match cmd.args().get(1) {
            // The channel of a sharded publish picks the slot.
            Some(channel) if cmd.is("SPUBLISH") => Place::Slot(key_slot(channel)),
            _ if cmd.is("PUBLISH") => Place::Anywhere,
            _ => Place::Nowhere,
        };
    }
    let args = cmd.arg_list();
    let slots: Vec<u16> = positions.iter().map(|&p| key_slot(args[p])).collect();
    if slots.iter().all(|&s| s == slots[0]) {
        Place::Slot(slots[0])
    } else {
        Place::Spread(slots)
    }
}

fn no_key(cmd: &RedisCommand, target: &TargetDef) -> String {
    format!(
        "{} has no key; a cluster target cannot route it (redis-cluster target `{}`)",
        name(cmd),
        target.name
    )
}

/// "keys of RENAME hash to slots 15495 (a), 3300 (b) of redis-cluster
/// target `c`".
fn spread(cmd: &RedisCommand, positions: &[usize], slots: &[u16], target: &TargetDef) -> String {
    let args = cmd.arg_list();
    let mut shown: Vec<String> = positions
        .iter()
        .zip(slots)
        .take(SHOWN_KEYS)
        .map(|(&p, s)| format!("{s} ({})", String::from_utf8_lossy(args[p])))
        .collect();
    if positions.len() > SHOWN_KEYS {
        shown.push(format!("… ({} keys)", positions.len()));
    }
    format!(
        "keys of {} hash to slots {} of redis-cluster target `{}`",
        name(cmd),
        shown.join(", "),
        target.name
    )
}

/// One part per slot of a [`Split::PerKey`] command, `Err` (without the
/// `cross_slot: ` prefix) for any other command spread over slots.
fn split_spread(
    cmd: &RedisCommand,
    positions: &[usize],
    slots: &[u16],
    target: &TargetDef,
) -> Result<Vec<(u16, RedisCommand)>, String> {
    let (spec, split) = keys::spec(cmd);
    if split != Split::PerKey {
        return Err(format!(
            "{}; {} cannot be split",
            spread(cmd, positions, slots, target),
            name(cmd)
        ));
    }
    Ok(
        keys::split_per_key(cmd, spec, positions, |i, j| slots[i] == slots[j])
            .into_iter()
            .map(|(first, part)| (slots[first], part))
            .collect(),
    )
}

/// The operations `op` becomes on cluster target `target` (see the module
/// documentation); `Err` is the reason to refuse it whole, starting with
/// `cross_slot: `.
pub fn cluster_fit(op: RedisOp, target: &TargetDef) -> Result<Vec<RedisOp>, String> {
    let mut positions = keys::Positions::new();
    if !op.is_transaction() {
        let Some(cmd) = op.commands.first() else {
            return Ok(Vec::new());
        };
        return match place(cmd, &mut positions) {
            Place::Slot(_) | Place::Anywhere => Ok(vec![op]),
            Place::Nowhere => Err(format!("cross_slot: {}", no_key(cmd, target))),
            Place::Spread(slots) => {
                let parts = split_spread(cmd, &positions, &slots, target)
                    .map_err(|e| format!("cross_slot: {e}"))?;
                Ok(parts
                    .into_iter()
                    .map(|(_, part)| RedisOp {
                        port: op.port,
                        db: op.db,
                        commands: smallvec![part],
                    })
                    .collect())
            }
        };
    }

    // A transaction: where each command may run.
    let mut places = Vec::with_capacity(op.commands.len());
    let mut order: Vec<u16> = Vec::new();
    for (i, cmd) in op.commands.iter().enumerate() {
        let p = place(cmd, &mut positions);
        match &p {
            Place::Nowhere => {
                return Err(format!(
                    "cross_slot: transaction command #{}: {}",
                    i + 1,
                    no_key(cmd, target)
                ))
            }
            Place::Slot(s) => add_slot(&mut order, *s),
            Place::Spread(slots) => slots.iter().for_each(|s| add_slot(&mut order, *s)),
            Place::Anywhere => {}
        }
        places.push((p, positions.clone()));
    }
    if order.len() <= 1 {
        return Ok(vec![op]);
    }
    if !target.split_transactions() {
        let slots: Vec<String> = order.iter().map(u16::to_string).collect();
        return Err(format!(
            "cross_slot: transaction spans slots {} of redis-cluster target `{}`; set split_transactions = true to apply it atomically per slot",
            slots.join(", "),
            target.name
        ));
    }
    // One transaction per slot, in the order of each slot's first command;
    // a command that may run anywhere joins the previous command's slot.
    let mut parts: Vec<Vec<RedisCommand>> = vec![Vec::new(); order.len()];
    let index = |s: u16| order.iter().position(|&o| o == s).unwrap_or(0);
    let mut last = 0;
    for (i, (cmd, (p, positions))) in op.commands.iter().zip(places).enumerate() {
        match p {
            Place::Slot(s) => {
                last = index(s);
                parts[last].push(cmd.clone());
            }
            Place::Anywhere => parts[last].push(cmd.clone()),
            Place::Spread(slots) => {
                let split = split_spread(cmd, &positions, &slots, target)
                    .map_err(|e| format!("cross_slot: transaction command #{}: {e}", i + 1))?;
                for (s, part) in split {
                    last = index(s);
                    parts[last].push(part);
                }
            }
            Place::Nowhere => {}
        }
    }
    Ok(parts
        .into_iter()
        .map(|commands| RedisOp {
            port: op.port,
            db: op.db,
            commands: commands.into(),
        })
        .collect())
}

fn add_slot(order: &mut Vec<u16>, s: u16) {
    if !order.contains(&s) {
        order.push(s);
    }
}

/// The one slot of an operation fitted by [`cluster_fit`]: the slot of its
/// keys, slot 0 for an operation that may run anywhere (a lone `PUBLISH`).
/// `Err` when it spans slots or holds a command no node can run: an
/// operation that did not come through the router, which an applier
/// refuses.
pub fn op_slot(op: &RedisOp) -> Result<u16, String> {
    let mut positions = keys::Positions::new();
    let mut slot = None;
    for cmd in &op.commands {
        let s = match place(cmd, &mut positions) {
            Place::Slot(s) => s,
            Place::Anywhere => continue,
            Place::Nowhere => return Err(format!("cross_slot: {} has no key", name(cmd))),
            Place::Spread(slots) => {
                let mut v: Vec<String> = slots.iter().map(u16::to_string).collect();
                v.dedup();
                return Err(format!(
                    "cross_slot: keys of {} hash to slots {}",
                    name(cmd),
                    v.join(", ")
                ));
            }
        };
        match slot {
            None => slot = Some(s),
            Some(t) if t != s => {
                return Err(format!("cross_slot: the operation spans slots {t} and {s}"))
            }
            Some(_) => {}
        }
    }
    Ok(slot.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncs_dsl::{TargetKind, TargetOptions};

    fn cmd(words: &str) -> RedisCommand {
        RedisCommand::new(&words.split(' ').collect::<Vec<_>>()).expect("non-empty")
    }

    fn op(cmds: &[&str]) -> RedisOp {
        RedisOp {
            port: 1,
            db: 0,
            commands: cmds.iter().map(|c| cmd(c)).collect(),
        }
    }

    fn target(split: bool) -> TargetDef {
        TargetDef {
            name: "c".into(),
            kind: TargetKind::RedisCluster,
            url: "redis://h:1".into(),
            options: TargetOptions {
                split_transactions: Some(split),
                ..TargetOptions::default()
            },
        }
    }

    fn words(ops: &[RedisOp]) -> Vec<Vec<String>> {
        ops.iter()
            .map(|o| {
                o.commands
                    .iter()
                    .map(|c| {
                        let w: Vec<_> = c
                            .args()
                            .iter()
                            .map(|a| String::from_utf8_lossy(a))
                            .collect();
                        w.join(" ")
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn places() {
        let mut pos = keys::Positions::new();
        assert_eq!(place(&cmd("SET foo 1"), &mut pos), Place::Slot(12182));
        assert_eq!(
            place(&cmd("MSET {u}a 1 {u}b 2"), &mut pos),
            Place::Slot(key_slot(b"u"))
        );
        assert_eq!(
            place(&cmd("DEL foo bar"), &mut pos),
            Place::Spread(vec![12182, 5061])
        );
        assert_eq!(place(&cmd("PUBLISH ch m"), &mut pos), Place::Anywhere);
        assert_eq!(place(&cmd("SPUBLISH foo m"), &mut pos), Place::Slot(12182));
        assert_eq!(place(&cmd("FLUSHALL"), &mut pos), Place::Nowhere);
        assert_eq!(place(&cmd("EVAL s 0"), &mut pos), Place::Nowhere);
    }

    #[test]
    fn a_split_transaction_keeps_order_and_publish_joins_the_previous_slot() {
        let t = target(true);
        let ops = cluster_fit(
            op(&[
                "PUBLISH ch 0",
                "SET foo 1",
                "SET bar 2",
                "PUBLISH ch 1",
                "INCR foo",
            ]),
            &t,
        )
        .expect("split");
        assert_eq!(
            words(&ops),
            [
                vec!["PUBLISH ch 0", "SET foo 1", "INCR foo"],
                vec!["SET bar 2", "PUBLISH ch 1"]
            ]
        );
        assert_eq!(
            ops.iter().map(op_slot).collect::<Vec<_>>(),
            [Ok(12182), Ok(5061)]
        );
    }

    #[test]
    fn op_slot_is_one_slot_or_an_error() {
        assert_eq!(op_slot(&op(&["PUBLISH ch m"])), Ok(0));
        assert_eq!(op_slot(&op(&["SET foo 1", "PUBLISH ch m"])), Ok(12182));
        assert!(op_slot(&op(&["SET foo 1", "SET bar 1"]))
            .is_err_and(|e| e == "cross_slot: the operation spans slots 12182 and 5061"));
        assert!(op_slot(&op(&["DEL foo bar"])).is_err_and(|e| e.contains("12182, 5061")));
        assert!(op_slot(&op(&["PING"])).is_err_and(|e| e == "cross_slot: PING has no key"));
    }
}
