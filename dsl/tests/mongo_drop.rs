//! A Mongo collection drop is routed like a dangerous Redis command: only by
//! a rule that names it (`op drop`), never by the default nor by a rule
//! without an `op` condition; `syncs-check` warns about a rule that routes
//! it; tests can say `mongo DB COLL drop` / `expect drop dangerous`.

mod common;

use common::{errors, one_error, outcome, rules};
use syncs_dsl::*;

const T: &str = "target m = mongo \"mongodb://a\"\ntarget m2 = mongo \"mongodb://b\"\n";

fn who(rs: &RuleSet, db: &str, coll: &str, op: MongoOpKind) -> String {
    outcome(rs, &rs.decide_mongo(&MongoQuery { db, coll, op }))
}

#[test]
fn drop_is_routed_only_where_a_rule_names_it() {
    let rs = rules(&format!(
        "{T}rule everything: mongo db \"app\" -> m\n\
         rule cache: mongo db \"cache\" op drop -> m2\n\
         rule logs: mongo coll \"logs_*\" op insert, drop -> m\n\
         rule quiet: mongo db \"quiet\" -> drop\n\
         default mongo -> m\n"
    ));
    use MongoOpKind::*;
    // A rule without `op` passes over a drop; the default never routes it.
    assert_eq!(
        rs.decide_mongo(&MongoQuery {
            db: "app",
            coll: "users",
            op: Drop
        }),
        Decision::Drop {
            rule: rs.rule_id("everything"),
            reason: DropReason::Dangerous
        }
    );
    assert_eq!(who(&rs, "app", "users", InsertOne), "everything");
    assert_eq!(who(&rs, "other", "users", Drop), "drop(Dangerous)");
    assert_eq!(who(&rs, "other", "users", DeleteMany), "<default>");
    // Named: routed, also in a list and after a rule that passed over it.
    assert_eq!(who(&rs, "cache", "x", Drop), "cache");
    assert_eq!(who(&rs, "cache", "x", InsertOne), "<default>");
    assert_eq!(who(&rs, "other", "logs_1", Drop), "logs");
    assert_eq!(who(&rs, "app", "logs_1", Drop), "logs");
    // A drop rule drops it as a rule.
    assert_eq!(who(&rs, "quiet", "x", Drop), "drop(Rule, quiet)");
}

#[test]
fn drop_without_a_routing_default_is_a_default_drop() {
    let rs = rules(&format!("{T}rule x: mongo db \"a\" op insert -> m\n"));
    assert_eq!(who(&rs, "b", "c", MongoOpKind::Drop), "drop(Default)");
    let rs = rules(&format!("{T}rule x: mongo -> m\ndefault mongo -> drop\n"));
    assert_eq!(who(&rs, "b", "c", MongoOpKind::Drop), "drop(Dangerous, x)");
}

#[test]
fn routing_drop_is_a_warning() {
    let rs = rules(&format!(
        "{T}rule a: mongo db \"cache\" op insert, drop -> m\n\
         rule b: mongo op drop -> drop\n\
         default mongo -> m2\n"
    ));
    let w: Vec<_> = rs
        .warnings()
        .iter()
        .map(|w| (w.line, w.col, w.message.as_str()))
        .collect();
    assert_eq!(
        w,
        [(
            3,
            37,
            "rule `a` routes mongo `drop`: its targets will drop whole collections"
        )]
    );
}

#[test]
fn shadowing_knows_a_routing_catch_all_passes_over_drop() {
    // Not shadowed: the catch-all does not take drops.
    for body in [
        "rule a: mongo -> m\nrule b: mongo op drop -> m2",
        "rule a: mongo db \"x\" -> m\nrule b: mongo db \"x\" op drop -> drop",
    ] {
        let rs = rules(&format!("{T}{body}\ndefault mongo -> m\n"));
        assert_eq!(rs.rule_count(), 2, "{body}");
    }
    // Shadowed: a drop catch-all, or a routing rule that names drop.
    for body in [
        "rule a: mongo -> drop\nrule b: mongo op drop -> m2",
        "rule a: mongo op drop, insert -> m\nrule b: mongo op drop -> m2",
    ] {
        let d = one_error(&format!("{T}{body}\ndefault mongo -> m\n"));
        assert!(
            d.message.contains("rule `b` can never match: rule `a`"),
            "{body}: {d}"
        );
    }
}

#[test]
fn tests_can_say_drop() {
    let rs = rules(&format!(
        "{T}rule cache: mongo db \"cache\" op drop -> m2\n\
         default mongo -> m\n\
         test \"a drop is not replicated\" {{\n    mongo app users drop\n    expect drop dangerous\n}}\n\
         test \"cache drops are\" {{\n    mongo cache x drop\n    expect m2\n}}\n"
    ));
    let tests = rs.tests();
    assert_eq!(tests.len(), 2);
    for t in tests {
        assert_eq!(common::run_rule_test(&rs, t), Ok(()));
    }
    assert!(matches!(
        tests[0].input,
        TestInput::Mongo {
            op: MongoOpKind::Drop,
            ..
        }
    ));
}

#[test]
fn op_words_name_drop() {
    assert_eq!(MongoOpKind::from_name("drop"), Some(MongoOpKind::Drop));
    assert_eq!(MongoOpKind::Drop.as_str(), "drop");
    // `drop` is an operation word, not a family: `dropx` is not one.
    let e = errors(&format!("{T}rule a: mongo op dropx -> m\n"));
    assert!(e[0].message.contains("`drop`"), "{}", e[0]);
}
