//! Routing through a real compiled rule set: key rewrites, fan-out, splits,
//! refusals and transactions.

#[path = "common/route.rs"]
mod common_route;

use common_route::{redis_op, words};
use syncs_dsl::{DropReason, RuleSet};
use syncs_engine::op::{MongoOp, MongoWrite, Op};
use syncs_engine::route::{route, Outcome, Routed};

const RULES: &str = r#"
target a = redis "redis://127.0.0.1:1"
target b = redis "redis://127.0.0.1:2"
target audit = file "/tmp/audit.jsonl"
target m = mongo "mongodb://127.0.0.1:3"
rule tmp: redis key "tmp:*" -> drop
rule sess: redis key "session:*" -> b db 5 key "s:{1}"
rule both: redis key "both:*" -> a, audit
rule users: mongo db "app" coll "users" -> m db "app2" coll "{coll}_copy"
default redis -> a
default mongo -> drop
"#;

fn rules() -> RuleSet {
    match syncs_dsl::parse_sources(&[("test.sync".into(), RULES.to_owned())]) {
        Ok(r) => r,
        Err(e) => panic!("rules: {e:?}"),
    }
}

fn redis(db: u32, cmds: &[&str]) -> Op {
    redis_op(6379, db, cmds)
}

/// (target name, db, commands as words) of one routed op.
type Sent = (String, u32, Vec<String>);

/// What each routed op sends where.
fn summary(rules: &RuleSet, ops: &[Routed]) -> Vec<Sent> {
    ops.iter()
        .map(|r| match &r.op {
            Op::Redis(op) => (rules.target(r.target).name.clone(), op.db, words(op)),
            Op::Mongo(_) => panic!("unexpected mongo op"),
        })
        .collect()
}

fn routed(rules: &RuleSet, op: &Op) -> (Vec<Sent>, Option<DropReason>) {
    match route(rules, op.clone()) {
        Outcome::Routed { ops, dropped } => (summary(rules, &ops), dropped.map(|d| d.reason)),
        Outcome::Refused(r) => panic!("refused: {r}"),
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn default_keeps_db_and_command() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(3, &["SET k v"])),
        (vec![(s("a"), 3, vec![s("SET k v")])], None)
    );
}

#[test]
fn key_rewrite_and_target_db() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(0, &["SET session:7 x"])),
        (vec![(s("b"), 5, vec![s("SET s:7 x")])], None)
    );
}

#[test]
fn fan_out_sends_to_every_target() {
    let r = rules();
    let (ops, _) = routed(&r, &redis(1, &["INCR both:n"]));
    assert_eq!(
        ops,
        vec![
            (s("a"), 1, vec![s("INCR both:n")]),
            (s("audit"), 1, vec![s("INCR both:n")])
        ]
    );
}

#[test]
fn mset_splits_by_destination_with_values() {
    let r = rules();
    let (ops, dropped) = routed(&r, &redis(0, &["MSET k1 v1 session:1 v2 k2 v3"]));
    assert_eq!(
        ops,
        vec![
            (s("a"), 0, vec![s("MSET k1 v1 k2 v3")]),
            (s("b"), 5, vec![s("MSET s:1 v2")])
        ]
    );
    assert_eq!(dropped, None);
}

#[test]
fn del_splits_and_drops_the_dropped_keys() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(0, &["DEL x tmp:1 y"])),
        (
            vec![(s("a"), 0, vec![s("DEL x y")])],
            Some(DropReason::Rule)
        )
    );
}

#[test]
fn unsplittable_command_across_destinations_is_refused_whole() {
    let r = rules();
    match route(&r, redis(0, &["RENAME x session:1"])) {
        Outcome::Refused(reason) => {
            assert!(reason.contains("RENAME"), "{reason}");
            assert!(reason.contains("cannot be split"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn transaction_stays_whole_on_one_target() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(2, &["SET x 1", "INCR n"])),
        (vec![(s("a"), 2, vec![s("SET x 1"), s("INCR n")])], None)
    );
}

#[test]
fn transaction_across_targets_is_refused_whole() {
    let r = rules();
    match route(&r, redis(0, &["SET x 1", "SET session:1 y"])) {
        Outcome::Refused(reason) => assert!(reason.contains("transaction"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn transaction_keeps_routed_commands_when_some_are_dropped_by_rule() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(0, &["SET x 1", "SET tmp:z 2", "INCR n"])),
        (
            vec![(s("a"), 0, vec![s("SET x 1"), s("INCR n")])],
            Some(DropReason::Rule)
        )
    );
}

#[test]
fn dangerous_commands_are_dropped_by_default() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(0, &["FLUSHALL"])),
        (vec![], Some(DropReason::Dangerous))
    );
}

#[test]
fn mongo_namespace_is_renamed() {
    let r = rules();
    let op = Op::from(MongoOp {
        db: "app".into(),
        coll: "users".into(),
        write: MongoWrite::DeleteOne {
            filter: bson::doc! { "a": 1 },
        },
    });
    match route(&r, op.clone()) {
        Outcome::Routed { ops, dropped: None } => {
            assert_eq!(ops.len(), 1);
            assert_eq!(r.target(ops[0].target).name, "m");
            let Op::Mongo(m) = &ops[0].op else {
                panic!("not mongo")
            };
            assert_eq!((m.db.as_str(), m.coll.as_str()), ("app2", "users_copy"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let other = Op::from(MongoOp {
        db: "x".into(),
        coll: "y".into(),
        write: MongoWrite::DeleteOne {
            filter: bson::doc! {},
        },
    });
    assert!(
        matches!(route(&r, other.clone()), Outcome::Routed { ops, dropped: Some(_) } if ops.is_empty())
    );
}

#[test]
fn dead_letter_rules_refuse_with_their_reason() {
    let text = r#"
target a = redis "redis://127.0.0.1:1"
target m = mongo "mongodb://127.0.0.1:3"
rule gone: redis key "gone:*" -> dead-letter
rule known: redis port 6379 db 1 -> a db 3
default redis -> dead-letter "no route for this port and db"
default mongo -> dead-letter "no mongo target"
"#;
    let r = match syncs_dsl::parse_sources(&[("dl.sync".into(), text.to_owned())]) {
        Ok(r) => r,
        Err(e) => panic!("rules: {e:?}"),
    };
    assert_eq!(
        routed(&r, &redis(1, &["SET k v"])),
        (vec![(s("a"), 3, vec![s("SET k v")])], None)
    );
    let refused = |op: &Op| match route(&r, op.clone()) {
        Outcome::Refused(reason) => reason,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        refused(&redis(2, &["SET k v"])),
        "no route for this port and db (the default)"
    );
    assert_eq!(
        refused(&redis(1, &["SET gone:1 v"])),
        "dead-lettered by rule `gone`"
    );
    // A command split by its keys is refused whole when one part is
    // dead-lettered; so is a transaction holding such a command.
    assert_eq!(
        refused(&redis(1, &["DEL k gone:1"])),
        "dead-lettered by rule `gone`"
    );
    assert_eq!(
        refused(&redis(1, &["SET k v", "SET gone:2 v"])),
        "transaction command #2: dead-lettered by rule `gone`"
    );
    let mongo = Op::from(MongoOp {
        db: "x".into(),
        coll: "y".into(),
        write: MongoWrite::DeleteOne {
            filter: bson::doc! {},
        },
    });
    assert_eq!(refused(&mongo), "no mongo target (the default)");
}
