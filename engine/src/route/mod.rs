//! The router: asks the compiled rules what to do with an operation and
//! builds the operation each target receives.
//!
//! A Redis command is decided once per key (see [`keys`]). When its keys
//! agree, the command goes where the rule says, keys rewritten. When they
//! disagree, a command whose keys stand alone (MSET, DEL, UNLINK, EXISTS,
//! TOUCH) is split into one command per destination; any other command is
//! refused whole, never applied in part. A transaction must keep every
//! routed command on the same targets and db, or it is refused whole.
//! Then every op bound for a `redis-cluster` target is made to lie in one
//! hash slot ([`cluster`]): split per slot where the command or the
//! target's `split_transactions` allows, else the whole operation is
//! refused with a reason starting `cross_slot: `.
//!
//! **Architecture invariant:** routing does no IO; a refusal is a value
//! (`Outcome::Refused`) the caller writes to the dead-letter file.

pub mod cluster;
pub mod keys;
pub mod ruletest;
pub mod slot;

use syncs_dsl::{
    Action, Decision, DropReason, MongoOpKind, MongoQuery, RedisQuery, RuleId, RuleSet, TargetId,
    TargetKind,
};

use crate::op::{MongoOp, MongoWrite, Op, RedisCommand, RedisOp};
use keys::Split;
use smallvec::{smallvec, SmallVec};

/// One operation bound for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub target: TargetId,
    pub op: Op,
    /// The rule that sent it (`None`: the default); for a transaction, the
    /// rule of its first command bound for this target.
    pub rule: Option<RuleId>,
}

/// Why (part of) an operation is not sent anywhere, by decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub rule: Option<RuleId>,
    pub reason: DropReason,
}

/// The operations one operation becomes: one inline (the usual case, one
/// target), more on the heap.
pub type Routes = SmallVec<[Routed; 1]>;

/// What the rules made of one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send these (possibly none, when everything was dropped by rule);
    /// `dropped` tells whether some part was dropped and why.
    Routed {
        ops: Routes,
        dropped: Option<Dropped>,
    },
    /// Refused whole: goes to the dead-letter file with this reason.
    Refused(String),
}

impl Outcome {
    fn dropped(d: Dropped) -> Self {
        Outcome::Routed {
            ops: Routes::new(),
            dropped: Some(d),
        }
    }
}

/// Routes one operation through `rules`.
///
/// Takes the operation: the last target it goes to gets its parts without
/// a copy (a clone per routed op was a measurable share of the server's
/// CPU: an allocation and a reference count per argument).
pub fn route(rules: &RuleSet, op: Op) -> Outcome {
    match op {
        Op::Redis(r) => route_redis(rules, r),
        Op::Mongo(m) => route_mongo(rules, *m),
    }
}

/// Each of `places` with its own `value`: clones for all but the last,
/// which gets `value` itself.
fn fan_out<P, T: Clone>(places: &[P], value: T) -> impl Iterator<Item = (&P, T)> {
    let mut value = Some(value);
    let last = places.len().saturating_sub(1);
    places.iter().enumerate().filter_map(move |(i, place)| {
        let v = if i == last {
            value.take()
        } else {
            value.clone()
        };
        v.map(|v| (place, v))
    })
}

fn route_mongo(rules: &RuleSet, op: MongoOp) -> Outcome {
    let q = MongoQuery {
        db: &op.db,
        coll: &op.coll,
        op: mongo_kind(&op.write),
    };
    match rules.decide_mongo(&q) {
        Decision::Drop { rule, reason } => Outcome::dropped(Dropped { rule, reason }),
        Decision::DeadLetter { rule, reason } => {
            Outcome::Refused(dead_letter_reason(rules, rule, reason))
        }
        Decision::Route { actions, rule } => Outcome::Routed {
            ops: fan_out(actions, op.write)
                .map(|(a, write)| {
                    let (db, coll) = a.mongo_namespace(&op.db, &op.coll);
                    Routed {
                        target: a.target,
                        rule,
                        op: Op::from(MongoOp { db, coll, write }),
                    }
                })
                .collect(),
            dropped: None,
        },
    }
}

/// The rules' name for a write.
pub fn mongo_kind(w: &MongoWrite) -> MongoOpKind {
    match w {
        MongoWrite::InsertOne { .. } => MongoOpKind::InsertOne,
        MongoWrite::InsertMany { .. } => MongoOpKind::InsertMany,
        MongoWrite::UpdateOne { .. } => MongoOpKind::UpdateOne,
        MongoWrite::UpdateMany { .. } => MongoOpKind::UpdateMany,
        MongoWrite::ReplaceOne { .. } => MongoOpKind::ReplaceOne,
        MongoWrite::DeleteOne { .. } => MongoOpKind::DeleteOne,
        MongoWrite::DeleteMany { .. } => MongoOpKind::DeleteMany,
        MongoWrite::Drop => MongoOpKind::Drop,
    }
}

/// One command's destinations: (target, target db, command as rewritten,
/// the rule that decided).
type Parts = SmallVec<[(TargetId, u32, RedisCommand, Option<RuleId>); 1]>;

/// Takes each destination of a command as it is decided: (target, target
/// db, command as rewritten, the rule that decided).
trait Sink: FnMut(TargetId, u32, RedisCommand, Option<RuleId>) {}

impl<F: FnMut(TargetId, u32, RedisCommand, Option<RuleId>)> Sink for F {}

fn route_redis(rules: &RuleSet, op: RedisOp) -> Outcome {
    fit_clusters(rules, route_redis_ops(rules, op))
}

/// Every op bound for a `redis-cluster` target made to lie in one slot
/// ([`cluster::cluster_fit`]): kept, split per slot, or the whole outcome
/// refused, for every target.
fn fit_clusters(rules: &RuleSet, outcome: Outcome) -> Outcome {
    let is_cluster = |r: &Routed| rules.target(r.target).kind == TargetKind::RedisCluster;
    let (ops, dropped) = match outcome {
        Outcome::Routed { ops, dropped } if ops.iter().any(is_cluster) => (ops, dropped),
        other => return other,
    };
    let mut out = Routes::with_capacity(ops.len());
    for r in ops {
        match r.op {
            Op::Redis(op) if is_cluster(&r) => {
                match cluster::cluster_fit(op, rules.target(r.target)) {
                    Ok(parts) => out.extend(parts.into_iter().map(|op| Routed {
                        target: r.target,
                        rule: r.rule,
                        op: Op::Redis(op),
                    })),
                    Err(reason) => return Outcome::Refused(reason),
                }
            }
            _ => out.push(r),
        }
    }
    Outcome::Routed { ops: out, dropped }
}

/// The per-target ops of a Redis operation, keys rewritten.
fn route_redis_ops(rules: &RuleSet, op: RedisOp) -> Outcome {
    let (port, db) = (op.port, op.db);
    if !op.is_transaction() {
        let Some(cmd) = op.commands.into_iter().next() else {
            return Outcome::Refused("an operation without a command".into());
        };
        // Each part becomes its op as it is decided (no list of parts first).
        let mut ops = Routes::new();
        let mut to_op = |target, db, cmd, rule| {
            ops.push(Routed {
                target,
                rule,
                op: Op::Redis(RedisOp {
                    port,
                    db,
                    commands: smallvec![cmd],
                }),
            })
        };
        return match route_command(rules, port, db, cmd, &mut to_op) {
            Err(reason) => Outcome::Refused(reason),
            Ok(dropped) => Outcome::Routed { ops, dropped },
        };
    }
    // A transaction: every routed command must reach the same (target, db)
    // set, so that each target can apply its share atomically.
    let mut dests: Option<Vec<(TargetId, u32)>> = None;
    let mut per_dest: Vec<(Vec<RedisCommand>, Option<RuleId>)> = Vec::new();
    let mut dropped = None;
    for (i, cmd) in op.commands.into_iter().enumerate() {
        let mut parts = Parts::new();
        let mut collect = |t, db, c, rule| parts.push((t, db, c, rule));
        let d = match route_command(rules, port, db, cmd, &mut collect) {
            Ok(d) => d,
            Err(reason) => {
                return Outcome::Refused(format!("transaction command #{}: {reason}", i + 1))
            }
        };
        dropped = dropped.or(d);
        if parts.is_empty() {
            continue;
        }
        let mut these: Vec<(TargetId, u32)> = parts.iter().map(|(t, db, _, _)| (*t, *db)).collect();
        these.sort_unstable();
        let duplicate = these.windows(2).any(|w| w[0] == w[1]);
        match &dests {
            None if !duplicate => {
                per_dest = vec![(Vec::new(), None); these.len()];
                dests = Some(these);
            }
            Some(known) if *known == these && !duplicate => {}
            _ => {
                return Outcome::Refused(format!(
                    "transaction command #{} ({}) routes to other targets or dbs than the rest; a transaction must stay whole on each target",
                    i + 1,
                    String::from_utf8_lossy(parts[0].2.name())
                ))
            }
        }
        let known = dests.as_deref().unwrap_or_default();
        for (t, db, c, rule) in parts {
            if let Some(slot) = known.iter().position(|k| *k == (t, db)) {
                let (commands, first_rule) = &mut per_dest[slot];
                if commands.is_empty() {
                    *first_rule = rule;
                }
                commands.push(c);
            }
        }
    }
    let ops = dests
        .unwrap_or_default()
        .into_iter()
        .zip(per_dest)
        .map(|((target, db), (commands, rule))| Routed {
            target,
            rule,
            op: Op::Redis(RedisOp {
                port,
                db,
                commands: commands.into(),
            }),
        })
        .collect();
    Outcome::Routed { ops, dropped }
}

/// Routes one command, handing each destination to `sink`; `Err` is the
/// reason to refuse it whole (then `sink` may have been given parts of it:
/// the caller drops them).
fn route_command(
    rules: &RuleSet,
    port: u16,
    db: u32,
    cmd: RedisCommand,
    sink: &mut impl Sink,
) -> Result<Option<Dropped>, String> {
    // The command's RESP is read as far as needed: its name, then the key
    // positions from the argument count (nothing read for most specs), then
    // up to its key when it has one (most commands: a SET's value is never
    // looked at); every argument only for a command with several keys.
    let mut args = cmd.args().iter();
    let name = args.next().unwrap_or_default();
    let (spec, split) = keys::spec_of(name);
    let mut positions = keys::Positions::new();
    keys::positions(&cmd, spec, &mut positions);
    let decide = |key: Option<&[u8]>| {
        rules.decide_redis(&RedisQuery {
            port,
            db,
            command: name,
            key,
        })
    };
    if let [] | [_] = positions[..] {
        // No key, or one: one decision. Key positions start at 1 (the
        // name is 0): the key is the `p - 1`th argument after the name.
        let key = positions.first().and_then(|&p| args.nth(p.checked_sub(1)?));
        let decision = decide(key);
        return apply_decision(rules, decision, db, cmd, &positions, sink);
    }
    let args = cmd.arg_list();
    let decisions: SmallVec<[Decision<'_>; 4]> =
        positions.iter().map(|&p| decide(Some(args[p]))).collect();
    if decisions.iter().all(|d| same(d, &decisions[0])) {
        drop(args);
        return apply_decision(rules, decisions[0], db, cmd, &positions, sink);
    }
    if split == Split::No {
        let detail: Vec<String> = positions
            .iter()
            .zip(&decisions)
            .map(|(&p, d)| {
                format!(
                    "{} → {}",
                    String::from_utf8_lossy(args[p]),
                    describe(rules, d)
                )
            })
            .collect();
        return Err(format!(
            "keys of {} route to different places and the command cannot be split: {}",
            String::from_utf8_lossy(cmd.name()).to_uppercase(),
            detail.join(", ")
        ));
    }
    // Split: group the keys (with the values after them) by decision, in
    // order of first appearance.
    let groups = keys::split_per_key(&cmd, spec, &positions, |i, j| {
        same(&decisions[i], &decisions[j])
    });
    let mut dropped = None;
    for (d, sub) in groups {
        let mut sub_positions = keys::Positions::new();
        keys::positions(&sub, spec, &mut sub_positions);
        // A part that a rule dead-letters refuses the whole command.
        let dr = apply_decision(rules, decisions[d], db, sub, &sub_positions, sink)?;
        dropped = dropped.or(dr);
    }
    Ok(dropped)
}

/// What `decision` makes of `cmd`, each destination handed to `sink`;
/// `Err` (the reason) when a rule dead-letters it.
fn apply_decision(
    rules: &RuleSet,
    decision: Decision<'_>,
    db: u32,
    cmd: RedisCommand,
    positions: &[usize],
    sink: &mut impl Sink,
) -> Result<Option<Dropped>, String> {
    match decision {
        Decision::Drop { rule, reason } => Ok(Some(Dropped { rule, reason })),
        Decision::DeadLetter { rule, reason } => Err(dead_letter_reason(rules, rule, reason)),
        Decision::Route { actions, rule } => {
            for (a, cmd) in fan_out(actions, cmd) {
                sink(
                    a.target,
                    a.redis_db(db),
                    rewrite(a, cmd, positions, db),
                    rule,
                );
            }
            Ok(None)
        }
    }
}

/// The dead-letter reason of a `-> dead-letter ["reason"]` decision, naming
/// the rule (or the default) that gave it.
fn dead_letter_reason(rules: &RuleSet, rule: Option<RuleId>, reason: &str) -> String {
    let by = match rule {
        Some(id) => format!("rule `{}`", rules.rule_name(id)),
        None => "the default".to_owned(),
    };
    if reason.is_empty() {
        format!("dead-lettered by {by}")
    } else {
        format!("{reason} ({by})")
    }
}

/// `cmd` with the keys at `positions` rewritten by `action`; `source_db`
/// is the db the command came from (a template's `{db}`).
fn rewrite(
    action: &Action,
    out: RedisCommand,
    positions: &[usize],
    source_db: u32,
) -> RedisCommand {
    if !action.rewrites_key() {
        return out;
    }
    let args = out.arg_list();
    let new: Vec<(usize, Vec<u8>)> = positions
        .iter()
        .map(|&p| (p, action.rewrite_key(args[p], source_db).into_owned()))
        .collect();
    out.with_args_replaced(&new)
}

/// Two decisions send a key to the same places in the same way.
fn same(a: &Decision<'_>, b: &Decision<'_>) -> bool {
    match (a, b) {
        (Decision::Drop { .. }, Decision::Drop { .. }) => true,
        (Decision::DeadLetter { .. }, Decision::DeadLetter { .. }) => a == b,
        (Decision::Route { actions: x, .. }, Decision::Route { actions: y, .. }) => x == y,
        _ => false,
    }
}

fn describe(rules: &RuleSet, d: &Decision<'_>) -> String {
    let rule = |r: &Option<RuleId>| match r {
        Some(id) => format!("rule {}", rules.rule_name(*id)),
        None => "the default".to_owned(),
    };
    match d {
        Decision::Drop { rule: r, reason } => format!("dropped by {} ({reason:?})", rule(r)),
        Decision::DeadLetter { rule: r, .. } => format!("dead-lettered by {}", rule(r)),
        Decision::Route { rule: r, actions } => {
            let names: Vec<&str> = actions
                .iter()
                .map(|a| rules.target(a.target).name.as_str())
                .collect();
            format!("{} by {}", names.join("+"), rule(r))
        }
    }
}
