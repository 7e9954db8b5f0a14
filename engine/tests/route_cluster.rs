//! Routing into `redis-cluster` targets: every op lies in one hash slot,
//! split per slot where the command (or `split_transactions`) allows,
//! refused whole (`cross_slot: ...`) where not.

#[path = "common/route.rs"]
mod common_route;

use common_route::{redis_op as redis, words};
use syncs_dsl::{RuleSet, TestInput};
use syncs_engine::op::Op;
use syncs_engine::route::cluster::op_slot;
use syncs_engine::route::ruletest::{explain_op, input_op, run_test};
use syncs_engine::route::slot::key_slot;
use syncs_engine::route::{route, Outcome, Routed};

const RULES: &str = r#"
target c = redis-cluster "redis://127.0.0.1:7000,redis://127.0.0.1:7001"
target s = redis-cluster "redis://127.0.0.1:7100" { split_transactions = true }
target r = redis "redis://127.0.0.1:6380"
rule both:   redis port 1 db 0 -> c, r
rule split:  redis port 2 db 0 -> s
rule tagged: redis port 3 db 0 key "user:*:*" -> c key "{{{1}}}:{2}"
rule dbs:    redis port 4 -> c db 0 key "{db}:{0}"
rule flush:  redis port 5 db 0 cmd FLUSHALL, PING -> c
rule sflush: redis port 6 db 0 cmd @all, FLUSHALL -> s
default redis -> r
"#;

fn rules() -> RuleSet {
    match syncs_dsl::parse_sources(&[("cluster.sync".into(), RULES.to_owned())]) {
        Ok(r) => r,
        Err(e) => panic!("rules: {}", syncs_dsl::render(&e)),
    }
}

/// (target, db, commands as words, slot of the op) of one routed op.
type Sent = (String, u32, Vec<String>, u16);

fn sent(rules: &RuleSet, ops: &[Routed]) -> Vec<Sent> {
    ops.iter()
        .map(|r| match &r.op {
            Op::Redis(op) => (
                rules.target(r.target).name.clone(),
                op.db,
                words(op),
                op_slot(op).unwrap_or(u16::MAX),
            ),
            Op::Mongo(_) => panic!("unexpected mongo op"),
        })
        .collect()
}

fn routed(rules: &RuleSet, op: &Op) -> Vec<Sent> {
    match route(rules, op.clone()) {
        Outcome::Routed { ops, dropped } => {
            assert_eq!(dropped, None);
            sent(rules, &ops)
        }
        Outcome::Refused(r) => panic!("refused: {r}"),
    }
}

fn refused(rules: &RuleSet, op: &Op) -> String {
    match route(rules, op.clone()) {
        Outcome::Refused(r) => r,
        Outcome::Routed { ops, .. } => panic!("routed: {:?}", sent(rules, &ops)),
    }
}

fn one(target: &str, cmds: &[&str], slot: u16) -> Sent {
    (
        target.to_owned(),
        0,
        cmds.iter().map(|c| c.to_string()).collect(),
        slot,
    )
}

const FOO: u16 = 12182;
const BAR: u16 = 5061;

#[test]
fn slots_of_the_keys_used_here() {
    assert_eq!((key_slot(b"foo"), key_slot(b"bar")), (FOO, BAR));
    assert_eq!(key_slot(b"{foo}x"), FOO);
}

#[test]
fn a_single_slot_command_is_kept() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(1, 0, &["SET foo 1"])),
        [one("c", &["SET foo 1"], FOO), one("r", &["SET foo 1"], FOO)]
    );
    // Keys with one hash tag share a slot: MSET stays whole.
    assert_eq!(
        routed(&r, &redis(1, 0, &["MSET {foo}a 1 {foo}b 2"])),
        [
            one("c", &["MSET {foo}a 1 {foo}b 2"], FOO),
            one("r", &["MSET {foo}a 1 {foo}b 2"], FOO)
        ]
    );
}

#[test]
fn mset_and_del_split_per_slot_for_the_cluster_only() {
    let r = rules();
    // Slots in order of first appearance, each key with its value.
    assert_eq!(
        routed(&r, &redis(1, 0, &["MSET foo 1 bar 2 {foo}x 3"])),
        [
            one("c", &["MSET foo 1 {foo}x 3"], FOO),
            one("c", &["MSET bar 2"], BAR),
            // The plain redis target gets the command whole.
            (
                "r".into(),
                0,
                vec!["MSET foo 1 bar 2 {foo}x 3".into()],
                u16::MAX
            ),
        ]
    );
    for name in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
        let got = routed(&r, &redis(1, 0, &[&format!("{name} bar foo {{bar}}1")]));
        assert_eq!(
            got[..2],
            [
                one("c", &[&format!("{name} bar {{bar}}1")], BAR),
                one("c", &[&format!("{name} foo")], FOO)
            ],
            "{name}"
        );
        assert_eq!(got.len(), 3, "{name}");
    }
}

#[test]
fn a_command_that_cannot_be_split_is_refused_for_every_target() {
    let r = rules();
    let why = refused(&r, &redis(1, 0, &["RENAME foo bar"]));
    assert_eq!(
        why,
        format!("cross_slot: keys of RENAME hash to slots {FOO} (foo), {BAR} (bar) of redis-cluster target `c`; RENAME cannot be split")
    );
    let why = refused(&r, &redis(1, 0, &["MSETNX foo 1 bar 2"]));
    assert!(
        why.starts_with("cross_slot: keys of MSETNX hash to slots"),
        "{why}"
    );
    // Many keys: the message shows a few.
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let why = refused(
        &r,
        &redis(1, 0, &[&format!("SUNIONSTORE {}", keys.join(" "))]),
    );
    assert!(
        why.ends_with("… (20 keys) of redis-cluster target `c`; SUNIONSTORE cannot be split"),
        "{why}"
    );
}

#[test]
fn keyless_commands() {
    let r = rules();
    // PUBLISH may run on any node: it is kept, and lives in slot 0.
    assert_eq!(
        routed(&r, &redis(1, 0, &["PUBLISH news hello"])),
        [
            one("c", &["PUBLISH news hello"], 0),
            one("r", &["PUBLISH news hello"], 0)
        ]
    );
    // A sharded publish goes to its channel's slot.
    assert_eq!(
        routed(&r, &redis(1, 0, &["SPUBLISH foo hello"]))[0],
        one("c", &["SPUBLISH foo hello"], FOO)
    );
    assert_eq!(
        refused(&r, &redis(5, 0, &["FLUSHALL"])),
        "cross_slot: FLUSHALL has no key; a cluster target cannot route it (redis-cluster target `c`)"
    );
    assert!(refused(&r, &redis(5, 0, &["PING"])).starts_with("cross_slot: PING has no key"));
    // A script with no declared key could touch any key: refused.
    assert!(
        refused(&r, &redis(1, 0, &["EVAL return 0"])).starts_with("cross_slot: EVAL has no key")
    );
}

#[test]
fn slots_are_those_of_the_rewritten_keys() {
    let r = rules();
    // user:7:a and user:7:b hash apart; rewritten to {7}:a and {7}:b they
    // share the slot of "7".
    assert_ne!(key_slot(b"user:7:a"), key_slot(b"user:7:b"));
    assert_eq!(
        routed(&r, &redis(3, 0, &["MSET user:7:a 1 user:7:b 2"])),
        [one("c", &["MSET {7}:a 1 {7}:b 2"], key_slot(b"7"))]
    );
}

#[test]
fn db_template_keeps_source_dbs_apart_in_db_0() {
    let r = rules();
    assert_eq!(
        routed(&r, &redis(4, 3, &["SET k v"])),
        [one("c", &["SET 3:k v"], key_slot(b"3:k"))]
    );
    assert_eq!(
        routed(&r, &redis(4, 0, &["SET k v"])),
        [one("c", &["SET 0:k v"], key_slot(b"0:k"))]
    );
}

#[test]
fn transactions_in_one_slot_stay_whole() {
    let r = rules();
    let tx = [
        "SET {foo}a 1",
        "INCR foo",
        "PUBLISH ch x",
        "DEL {foo}b {foo}c",
    ];
    assert_eq!(
        routed(&r, &redis(1, 0, &tx)),
        [one("c", &tx, FOO), one("r", &tx, FOO)]
    );
}

#[test]
fn transactions_across_slots_are_refused_whole() {
    let r = rules();
    let why = refused(&r, &redis(1, 0, &["SET foo 1", "SET bar 2"]));
    assert_eq!(
        why,
        format!("cross_slot: transaction spans slots {FOO}, {BAR} of redis-cluster target `c`; set split_transactions = true to apply it atomically per slot")
    );
    // A command in it spread over slots counts too, even one that splits.
    let why = refused(&r, &redis(1, 0, &["INCR foo", "DEL foo bar"]));
    assert!(
        why.starts_with("cross_slot: transaction spans slots"),
        "{why}"
    );
    // No key at all inside: refused, split or not.
    let why = refused(&r, &redis(6, 0, &["SET foo 1", "FLUSHALL"]));
    assert_eq!(
        why,
        "cross_slot: transaction command #2: FLUSHALL has no key; a cluster target cannot route it (redis-cluster target `s`)"
    );
}

#[test]
fn split_transactions_gives_one_transaction_per_slot_in_order() {
    let r = rules();
    let got = routed(
        &r,
        &redis(
            2,
            0,
            &[
                "SET bar 1",
                "MSET foo 1 bar 2",
                "PUBLISH ch m",
                "INCR foo",
                "DEL {bar}x",
            ],
        ),
    );
    assert_eq!(
        got,
        [
            // PUBLISH joins the slot of the part before it (MSET's last).
            one(
                "s",
                &["SET bar 1", "MSET bar 2", "PUBLISH ch m", "DEL {bar}x"],
                BAR
            ),
            one("s", &["MSET foo 1", "INCR foo"], FOO),
        ]
    );
    // One slot: whole, as without the option.
    assert_eq!(
        routed(&r, &redis(2, 0, &["SET foo 1", "SET {foo}2 2"])),
        [one("s", &["SET foo 1", "SET {foo}2 2"], FOO)]
    );
    // A command that cannot be split still refuses the transaction.
    let why = refused(&r, &redis(2, 0, &["SET foo 1", "RENAME foo bar"]));
    assert_eq!(
        why,
        format!("cross_slot: transaction command #2: keys of RENAME hash to slots {FOO} (foo), {BAR} (bar) of redis-cluster target `s`; RENAME cannot be split")
    );
}

#[test]
fn rule_tests_and_explain_see_the_parts() {
    let src = format!(
        "{RULES}\n\
         test \"mset split per slot\" {{\n    redis 1 0 MSET foo 1 bar 2\n    expect c: MSET foo 1\n    expect c: MSET bar 2\n    expect r\n}}\n\
         test \"rename across slots\" {{\n    redis 1 0 RENAME foo bar\n    expect dead-letter\n}}\n\
         test \"wrong: unsplit\" {{\n    redis 1 0 MSET foo 1 bar 2\n    expect c\n    expect r\n}}\n"
    );
    let rs = match syncs_dsl::parse_sources(&[("t.sync".into(), src)]) {
        Ok(r) => r,
        Err(e) => panic!("{}", syncs_dsl::render(&e)),
    };
    let results: Vec<_> = rs.tests().iter().map(|t| run_test(&rs, t)).collect();
    let passed: Vec<_> = results
        .iter()
        .map(|t| (t.name.as_str(), t.passed))
        .collect();
    assert_eq!(
        passed,
        [
            ("mset split per slot", true),
            ("rename across slots", true),
            ("wrong: unsplit", false)
        ]
    );
    let detail = results[2].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(&format!("c: db 0: MSET foo 1   (slot {FOO})"))
            && detail.contains(&format!("c: db 0: MSET bar 2   (slot {BAR})"))
            && detail.contains("r: db 0: MSET foo 1 bar 2"),
        "{detail}"
    );
    let input = TestInput::parse("redis 1 0 MSET foo 1 bar 2").expect("input");
    let op = input_op(&input).expect("op");
    let text = explain_op(&rs, &op);
    assert!(
        text.contains(&format!("=> c: db 0: MSET foo 1   (slot {FOO}); c: db 0: MSET bar 2   (slot {BAR}); r: db 0: MSET foo 1 bar 2")),
        "{text}"
    );
}
