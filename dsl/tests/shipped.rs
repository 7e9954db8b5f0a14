//! The rules files shipped in `rules/` load, and their own tests pass.

mod common;

use std::path::Path;

use syncs_dsl::*;

fn load(p: &str) -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
    match load_path(&path) {
        Ok(r) => r,
        Err(e) => panic!("{p} does not load:\n{}", render(&e)),
    }
}

fn run_all(rs: &RuleSet) {
    let failures: Vec<String> = rs
        .tests()
        .iter()
        .filter_map(|t| common::run_rule_test(rs, t).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn default_sync_loads_without_warnings_and_copies_everything() {
    let rs = load("rules/default.sync");
    assert!(rs.warnings().is_empty(), "{}", render(rs.warnings()));
    let names: Vec<_> = rs.targets().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["local_redis", "local_mongo"]);
    assert_eq!(rs.targets()[0].url, "redis://127.0.0.1:6380");
    assert_eq!(rs.targets()[1].url, "mongodb://127.0.0.1:27017");
    let q = common::redis(6379, 7, "set", Some("k"));
    assert_eq!(
        common::redis_routes(&rs, &q),
        [("local_redis".to_string(), 7, "k".to_string())]
    );
    match rs.decide_mongo(&MongoQuery {
        db: "app",
        coll: "users",
        op: MongoOpKind::DeleteMany,
    }) {
        Decision::Route {
            rule: None,
            actions,
        } => {
            assert_eq!(actions.len(), 1);
            assert_eq!(rs.target(actions[0].target).name, "local_mongo");
            assert_eq!(
                actions[0].mongo_namespace("app", "users"),
                ("app".to_string(), "users".to_string())
            );
        }
        other => panic!("{other:?}"),
    }
    // A collection drop is destructive: the default never routes it.
    assert_eq!(
        rs.decide_mongo(&MongoQuery {
            db: "app",
            coll: "users",
            op: MongoOpKind::Drop,
        }),
        Decision::Drop {
            rule: None,
            reason: DropReason::Dangerous
        }
    );
    assert_eq!(rs.tests().len(), 4);
    run_all(&rs);
}

#[test]
fn the_rules_directory_loads_only_default_sync() {
    // rules/examples/ is a subdirectory: not loaded with rules/.
    let rs = load("rules");
    assert_eq!(rs.targets().len(), 2);
    assert_eq!(rs.rule_count(), 0);
}

#[test]
fn examples_load_and_their_tests_pass() {
    let rs = load("rules/examples");
    let errors: Vec<_> = rs.warnings().iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty());
    // The one intended warning.
    assert_eq!(rs.warnings().len(), 1, "{}", render(rs.warnings()));
    assert!(rs.warnings()[0].message.contains("FLUSHDB"));
    assert!(rs.tests().len() >= 15);
    // Files in lexical order: redis rules (20-) before mongo rules (30-).
    let first = rs.rule_id("no_temp").expect("no_temp");
    let mongo = rs.rule_id("no_sessions").expect("no_sessions");
    assert!(first.0 < mongo.0);
    let (file, line) = rs.rule_location(first);
    assert!(file.ends_with("20-redis.sync"));
    assert!(line > 1);
    run_all(&rs);
}
