//! What `decide_redis` / `decide_mongo` answer, feature by feature.

mod common;

use std::path::PathBuf;

use common::{outcome, redis, redis_routes, rules};
use syncs_dsl::*;

const TARGETS: &str = r#"
target r1 = redis "redis://127.0.0.1:6380"
target r2 = redis "redis://127.0.0.1:6381"
target m1 = mongo "mongodb://127.0.0.1:27017"
target m2 = mongo "mongodb://127.0.0.1:27018"
target f  = file "/tmp/syncs-audit.jsonl"
"#;

fn with_targets(body: &str) -> RuleSet {
    rules(&format!("{TARGETS}\n{body}\ndefault mongo -> m1, m2\n"))
}

fn who(rs: &RuleSet, port: u16, db: u32, cmd: &str, key: Option<&str>) -> String {
    outcome(rs, &rs.decide_redis(&redis(port, db, cmd, key)))
}

fn mongo_who(rs: &RuleSet, db: &str, coll: &str, op: MongoOpKind) -> String {
    outcome(rs, &rs.decide_mongo(&MongoQuery { db, coll, op }))
}

#[test]
fn ports_one_list_and_range() {
    let rs = with_targets(
        "rule one: redis port 6379 -> r1, f\n\
         rule list: redis port 6380, 6390 -> r1, f\n\
         rule range: redis port 7000..7010 -> r2, f\n\
         default redis -> drop",
    );
    assert_eq!(who(&rs, 6379, 0, "SET", Some("k")), "one");
    assert_eq!(who(&rs, 6380, 0, "SET", Some("k")), "list");
    assert_eq!(who(&rs, 6390, 0, "SET", Some("k")), "list");
    assert_eq!(who(&rs, 6385, 0, "SET", Some("k")), "drop(Default)");
    assert_eq!(who(&rs, 7000, 0, "SET", Some("k")), "range");
    assert_eq!(who(&rs, 7010, 0, "SET", Some("k")), "range");
    assert_eq!(who(&rs, 7011, 0, "SET", Some("k")), "drop(Default)");
    assert_eq!(who(&rs, 6999, 0, "SET", Some("k")), "drop(Default)");
    assert_eq!(who(&rs, 65535, 0, "SET", Some("k")), "drop(Default)");
    assert_eq!(who(&rs, 0, 0, "SET", Some("k")), "drop(Default)");
}

#[test]
fn dbs_one_list_and_range() {
    let rs = with_targets(
        "rule one: redis db 1 -> r1\n\
         rule list: redis db 2, 4 -> r1\n\
         rule range: redis db 10..12 -> r2\n\
         default redis -> f",
    );
    assert_eq!(who(&rs, 6379, 1, "SET", Some("k")), "one");
    assert_eq!(who(&rs, 6379, 2, "SET", Some("k")), "list");
    assert_eq!(who(&rs, 6379, 4, "SET", Some("k")), "list");
    assert_eq!(who(&rs, 6379, 3, "SET", Some("k")), "<default>");
    assert_eq!(who(&rs, 6379, 11, "SET", Some("k")), "range");
    assert_eq!(who(&rs, 6379, 13, "SET", Some("k")), "<default>");
    assert_eq!(who(&rs, 6379, u32::MAX, "SET", Some("k")), "<default>");
}

#[test]
fn commands_by_name_any_case() {
    let rs = with_targets(
        "rule strings: redis cmd SET, GETSET -> r1\n\
         rule dels: redis cmd del, Unlink -> r2\n\
         default redis -> f",
    );
    assert_eq!(who(&rs, 1, 0, "set", Some("k")), "strings");
    assert_eq!(who(&rs, 1, 0, "SeT", Some("k")), "strings");
    assert_eq!(who(&rs, 1, 0, "GETSET", Some("k")), "strings");
    assert_eq!(who(&rs, 1, 0, "DEL", Some("k")), "dels");
    assert_eq!(who(&rs, 1, 0, "unlink", Some("k")), "dels");
    assert_eq!(who(&rs, 1, 0, "SETEX", Some("k")), "<default>");
    assert_eq!(who(&rs, 1, 0, "", Some("k")), "<default>");
    let long = "X".repeat(100);
    assert_eq!(who(&rs, 1, 0, &long, Some("k")), "<default>");
}

#[test]
fn commands_by_group() {
    let rs = with_targets(
        "rule hashes: redis cmd @hash -> r2\n\
         rule writes: redis cmd @write -> r1\n\
         rule reads: redis cmd @read -> drop\n\
         rule scripts: redis cmd @scripting, @pubsub -> f\n\
         default redis -> f",
    );
    assert_eq!(who(&rs, 1, 0, "HGET", Some("h")), "hashes");
    assert_eq!(who(&rs, 1, 0, "hset", Some("h")), "hashes");
    assert_eq!(who(&rs, 1, 0, "SET", Some("k")), "writes");
    assert_eq!(who(&rs, 1, 0, "ZADD", Some("z")), "writes");
    assert_eq!(who(&rs, 1, 0, "XADD", Some("s")), "writes");
    assert_eq!(who(&rs, 1, 0, "GET", Some("k")), "drop(Rule, reads)");
    assert_eq!(who(&rs, 1, 0, "KEYS", None), "drop(Rule, reads)");
    assert_eq!(who(&rs, 1, 0, "EVALSHA", None), "scripts");
    assert_eq!(who(&rs, 1, 0, "PUBLISH", None), "scripts");
    // Unknown commands are in no group.
    assert_eq!(who(&rs, 1, 0, "MY.MODULECMD", Some("k")), "<default>");
}

#[test]
fn unknown_command_named_in_a_rule_matches_by_name() {
    let rs = rules(
        "target r = redis \"redis://a\"\n\
         rule bf: redis cmd BF.ADD, CF-ADD -> r\n",
    );
    assert_eq!(rs.warnings().len(), 2, "unknown commands warn");
    assert!(rs.warnings()[0]
        .message
        .contains("unknown Redis command `BF.ADD`"));
    assert_eq!(who(&rs, 1, 0, "bf.add", Some("k")), "bf");
    assert_eq!(who(&rs, 1, 0, "CF-ADD", Some("k")), "bf");
    assert_eq!(who(&rs, 1, 0, "SET", Some("k")), "drop(Default)");
}

#[test]
fn glob_keys() {
    let rs = with_targets(
        "rule exact: redis key \"config\" -> r1\n\
         rule prefix: redis key \"user:*\" -> r1\n\
         rule suffix: redis key \"*:lock\" -> r2\n\
         rule middle: redis key \"job:*:done\" -> r2\n\
         rule one_char: redis key \"v?\" -> f\n\
         rule class: redis key \"shard[0-3]:*\" -> f\n\
         rule negclass: redis key \"x[^ab]\" -> f\n\
         rule escaped: redis key \"lit\\*\" -> f\n\
         default redis -> drop",
    );
    assert_eq!(who(&rs, 1, 0, "GET", Some("config")), "exact");
    assert_eq!(who(&rs, 1, 0, "GET", Some("configs")), "drop(Default)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("user:1")), "prefix");
    assert_eq!(who(&rs, 1, 0, "SET", Some("user:")), "prefix");
    assert_eq!(who(&rs, 1, 0, "SET", Some("a:lock")), "suffix");
    assert_eq!(who(&rs, 1, 0, "SET", Some("job:7:done")), "middle");
    assert_eq!(who(&rs, 1, 0, "SET", Some("job:done")), "drop(Default)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("v1")), "one_char");
    assert_eq!(who(&rs, 1, 0, "SET", Some("v12")), "drop(Default)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("shard2:x")), "class");
    assert_eq!(who(&rs, 1, 0, "SET", Some("shard4:x")), "drop(Default)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("xc")), "negclass");
    assert_eq!(who(&rs, 1, 0, "SET", Some("xa")), "drop(Default)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("lit*")), "escaped");
    assert_eq!(who(&rs, 1, 0, "SET", Some("lit1")), "drop(Default)");
}

#[test]
fn regex_keys_and_flags() {
    let rs = with_targets(
        "rule anchored: redis key /^tmp:/ -> drop\n\
         rule anywhere: redis key /cache/ -> r1\n\
         rule ci: redis key /^sess:/i -> r2\n\
         rule slash: redis key /^a\\/b$/ -> f\n\
         default redis -> f",
    );
    assert_eq!(who(&rs, 1, 0, "SET", Some("tmp:1")), "drop(Rule, anchored)");
    assert_eq!(who(&rs, 1, 0, "SET", Some("x:tmp:1")), "<default>");
    assert_eq!(who(&rs, 1, 0, "SET", Some("page:cache:1")), "anywhere");
    assert_eq!(who(&rs, 1, 0, "SET", Some("SESS:1")), "ci");
    assert_eq!(who(&rs, 1, 0, "SET", Some("a/b")), "slash");
}

#[test]
fn several_key_patterns_match_any() {
    let rs = with_targets(
        "rule either: redis key \"a:*\", /^b:/, \"*:c\" -> r1\n\
         default redis -> drop",
    );
    for k in ["a:1", "b:1", "z:c"] {
        assert_eq!(who(&rs, 1, 0, "SET", Some(k)), "either", "{k}");
    }
    assert_eq!(who(&rs, 1, 0, "SET", Some("d:1")), "drop(Default)");
}

#[test]
fn key_rules_never_match_keyless_commands() {
    let rs = with_targets(
        "rule keyed: redis key \"*\" -> r1\n\
         rule any: redis cmd PING -> r2\n\
         default redis -> drop",
    );
    assert_eq!(who(&rs, 1, 0, "SET", Some("")), "keyed");
    assert_eq!(who(&rs, 1, 0, "PING", None), "any");
    assert_eq!(who(&rs, 1, 0, "SET", None), "drop(Default)");
}

#[test]
fn binary_keys() {
    let rs = with_targets(
        "rule bin: redis key \"b:*\" -> r1 key \"x:{1}\"\n\
         rule q: redis key \"q?\" -> r2\n\
         default redis -> drop",
    );
    let key: &[u8] = b"b:\xff\x00\xfe";
    let q = RedisQuery {
        port: 1,
        db: 0,
        command: b"SET",
        key: Some(key),
    };
    match rs.decide_redis(&q) {
        Decision::Route { actions, .. } => {
            assert_eq!(&*actions[0].rewrite_key(key, 0), b"x:\xff\x00\xfe");
        }
        other => panic!("{other:?}"),
    }
    let q2 = RedisQuery {
        key: Some(b"q\xff"),
        ..q
    };
    assert_eq!(outcome(&rs, &rs.decide_redis(&q2)), "q");
}

#[test]
fn glob_captures_into_templates() {
    let rs = with_targets(
        "rule s: redis key \"session:*\" -> r1 db 2 key \"sess:{1}\"\n\
         rule two: redis key \"u:*:*\" -> r1 key \"{2}/{1}\"\n\
         rule q: redis key \"v?:[ab]*\" -> r1 key \"{1}{2}{3}-{0}\"\n\
         rule braces: redis key \"t:*\" -> r1 key \"{{t}}:{1}\"",
    );
    let routes = |k: &str| redis_routes(&rs, &redis(1, 5, "SET", Some(k)));
    assert_eq!(routes("session:7"), [("r1".into(), 2, "sess:7".into())]);
    assert_eq!(routes("u:a:b:c"), [("r1".into(), 5, "b:c/a".into())]);
    assert_eq!(routes("v1:bz"), [("r1".into(), 5, "1bz-v1:bz".into())]);
    assert_eq!(routes("t:9"), [("r1".into(), 5, "{t}:9".into())]);
}

#[test]
fn db_in_key_templates_is_the_source_db() {
    let rs = with_targets(
        "rule s: redis key \"s:*\" -> r1 db 0 key \"{db}:{1}\"\n\
         rule w: redis key \"w:*\" -> r1 key \"{0}@{db}\"\n\
         rule r: redis key /^r:(?P<id>.*)$/ -> r2 key \"{{{db}}}:{id}\"",
    );
    let routes = |db: u32, k: &str| redis_routes(&rs, &redis(1, db, "SET", Some(k)));
    assert_eq!(routes(7, "s:a"), [("r1".into(), 0, "7:a".into())]);
    assert_eq!(routes(0, "s:a"), [("r1".into(), 0, "0:a".into())]);
    assert_eq!(routes(15, "w:x"), [("r1".into(), 15, "w:x@15".into())]);
    assert_eq!(
        routes(4_294_967_295, "r:9"),
        [("r2".into(), 4_294_967_295, "{4294967295}:9".into())]
    );
}

#[test]
fn regex_captures_numbered_and_named() {
    let rs = with_targets(
        "rule cart: redis key /^cart:(?P<user>\\d+):(\\w+)$/ -> r1 key \"c:{user}:{2}\"\n\
         rule whole: redis key /^k/ -> r2 key \"copy:{0}\"",
    );
    let routes = |k: &str| redis_routes(&rs, &redis(1, 0, "SET", Some(k)));
    assert_eq!(
        routes("cart:42:apple"),
        [("r1".into(), 0, "c:42:apple".into())]
    );
    assert_eq!(routes("k1"), [("r2".into(), 0, "copy:k1".into())]);
}

#[test]
fn prefix_rewrite_and_borrowed_when_unchanged() {
    let rs = with_targets(
        "rule p: redis key \"a*\" -> r1 prefix \"copy:\", r2\n\
         default redis -> r1",
    );
    match rs.decide_redis(&redis(1, 3, "SET", Some("abc"))) {
        Decision::Route { rule, actions } => {
            assert_eq!(rule.map(|r| rs.rule_name(r)), Some("p"));
            assert_eq!(actions.len(), 2);
            assert!(actions[0].rewrites_key());
            assert_eq!(&*actions[0].rewrite_key(b"abc", 3), b"copy:abc");
            assert!(!actions[1].rewrites_key());
            assert!(matches!(
                actions[1].rewrite_key(b"abc", 3),
                std::borrow::Cow::Borrowed(_)
            ));
            assert_eq!(actions[1].redis_db(3), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fan_out_keeps_order_and_rewrites() {
    let rs = with_targets("rule all: redis -> r2 db 1, f, r1 db 9 prefix \"x\"");
    assert_eq!(
        redis_routes(&rs, &redis(6379, 4, "SET", Some("k"))),
        [
            ("r2".into(), 1, "k".into()),
            ("f".into(), 4, "k".into()),
            ("r1".into(), 9, "xk".into())
        ]
    );
}

#[test]
fn drop_and_default() {
    let rs = with_targets(
        "rule gone: redis db 3 -> drop\n\
         default redis -> r2",
    );
    assert_eq!(
        rs.decide_redis(&redis(1, 3, "SET", Some("k"))),
        Decision::Drop {
            rule: rs.rule_id("gone"),
            reason: DropReason::Rule
        }
    );
    match rs.decide_redis(&redis(1, 4, "SET", Some("k"))) {
        Decision::Route {
            rule: None,
            actions,
        } => assert_eq!(rs.target(actions[0].target).name, "r2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_default_means_drop() {
    let rs = rules("target r = redis \"redis://a\"\nrule x: redis db 1 -> r\n");
    assert_eq!(
        rs.decide_redis(&redis(1, 0, "SET", Some("k"))),
        Decision::Drop {
            rule: None,
            reason: DropReason::Default
        }
    );
    assert_eq!(
        rs.decide_mongo(&MongoQuery {
            db: "a",
            coll: "b",
            op: MongoOpKind::InsertOne
        }),
        Decision::Drop {
            rule: None,
            reason: DropReason::Default
        }
    );
    // An explicit `default ... -> drop` is the same.
    let rs = rules("default redis -> drop\ndefault mongo -> drop\n");
    assert_eq!(
        rs.decide_redis(&redis(1, 0, "SET", Some("k"))),
        Decision::Drop {
            rule: None,
            reason: DropReason::Default
        }
    );
}

#[test]
fn dead_letter_outcome() {
    let rs = rules(
        "target r = redis \"redis://a\"\n\
         target m = mongo \"mongodb://a\"\n\
         rule known: redis port 6379 db 1 -> r\n\
         rule retired: redis db 9 -> dead-letter\n\
         rule old: mongo db \"old\" -> dead-letter \"db old is gone\"\n\
         default redis -> dead-letter \"no route for this port and db\"\n\
         default mongo -> m\n",
    );
    assert_eq!(who(&rs, 6379, 1, "SET", Some("k")), "known");
    assert_eq!(
        rs.decide_redis(&redis(6379, 9, "SET", Some("k"))),
        Decision::DeadLetter {
            rule: rs.rule_id("retired"),
            reason: ""
        }
    );
    assert_eq!(
        rs.decide_redis(&redis(6380, 1, "SET", Some("k"))),
        Decision::DeadLetter {
            rule: None,
            reason: "no route for this port and db"
        }
    );
    assert_eq!(
        mongo_who(&rs, "old", "c", MongoOpKind::InsertOne),
        "dead-letter(\"db old is gone\", old)"
    );
    assert_eq!(
        mongo_who(&rs, "new", "c", MongoOpKind::InsertOne),
        "<default>"
    );
    // Dangerous commands: a routing rule passes over them (dropped as
    // dangerous); one no rule names falls to the dead-letter default, which
    // routes nothing; a dead-letter rule takes them like a drop rule.
    assert_eq!(who(&rs, 6379, 1, "FLUSHDB", None), "drop(Dangerous, known)");
    assert_eq!(
        who(&rs, 6380, 1, "FLUSHDB", None),
        "dead-letter(\"no route for this port and db\")"
    );
    assert_eq!(
        who(&rs, 6379, 9, "FLUSHDB", None),
        "dead-letter(\"\", retired)"
    );
}

#[test]
fn dangerous_commands_need_an_explicit_rule() {
    let rs = with_targets(
        "rule everything: redis port 6379 -> r1\n\
         rule writes: redis cmd @write -> r1\n\
         rule all_cmds: redis cmd @all -> r1\n\
         rule flush: redis port 7000 cmd FLUSHDB -> r2\n\
         rule admin: redis port 7001 cmd @dangerous -> r2\n\
         default redis -> r1",
    );
    // A catch-all passes over FLUSHALL; nothing else takes it.
    assert_eq!(
        rs.decide_redis(&redis(6379, 0, "FLUSHALL", None)),
        Decision::Drop {
            rule: rs.rule_id("everything"),
            reason: DropReason::Dangerous
        }
    );
    // Not even a group that contains it (FLUSHDB is in @write) or @all.
    assert_eq!(
        who(&rs, 6390, 0, "flushdb", None),
        "drop(Dangerous, writes)"
    );
    // The default never routes a dangerous command.
    assert_eq!(who(&rs, 9, 0, "CONFIG", None), "drop(Dangerous, all_cmds)");
    // Named explicitly: routed, even after catch-alls that pass over it.
    assert_eq!(who(&rs, 7000, 0, "FLUSHDB", None), "flush");
    assert_eq!(who(&rs, 7001, 0, "FLUSHDB", None), "admin");
    assert_eq!(who(&rs, 7000, 0, "SET", Some("k")), "writes");
    let rs2 = with_targets(
        "rule flush: redis port 7000 cmd FLUSHDB -> r2\n\
         rule admin: redis port 7001 cmd @dangerous -> r2\n\
         default redis -> r1",
    );
    assert_eq!(who(&rs2, 7000, 0, "FLUSHDB", None), "flush");
    assert_eq!(who(&rs2, 7001, 0, "SHUTDOWN", None), "admin");
    assert_eq!(who(&rs2, 7001, 0, "script", None), "admin");
    assert_eq!(who(&rs2, 7000, 0, "FLUSHALL", None), "drop(Dangerous)");
    // KEYS is not dangerous (read-only): the default routes it.
    assert_eq!(who(&rs2, 7000, 0, "KEYS", None), "<default>");
}

#[test]
fn dangerous_command_named_after_catch_all_is_routed() {
    let rs = with_targets(
        "rule everything: redis -> r1\n\
         rule flush: redis cmd FLUSHALL -> r2",
    );
    assert_eq!(who(&rs, 1, 0, "FLUSHALL", None), "flush");
    assert_eq!(who(&rs, 1, 0, "SET", Some("k")), "everything");
}

#[test]
fn drop_rules_drop_dangerous_commands_as_rules() {
    let rs = with_targets(
        "rule quiet: redis port 6380 -> drop\n\
         rule flush: redis cmd FLUSHALL -> r2",
    );
    assert_eq!(who(&rs, 6380, 0, "FLUSHALL", None), "drop(Rule, quiet)");
    assert_eq!(who(&rs, 6379, 0, "FLUSHALL", None), "flush");
}

#[test]
fn dangerous_without_default_is_a_default_drop() {
    let rs = rules("target r = redis \"redis://a\"\nrule x: redis db 5 -> r\n");
    assert_eq!(who(&rs, 1, 0, "FLUSHALL", None), "drop(Default)");
}

#[test]
fn first_match_wins_in_file_order() {
    let rs = with_targets(
        "rule narrow: redis key \"a:b:*\" -> r2\n\
         rule wide: redis key \"a:*\" -> r1",
    );
    assert_eq!(who(&rs, 1, 0, "SET", Some("a:b:c")), "narrow");
    assert_eq!(who(&rs, 1, 0, "SET", Some("a:x")), "wide");
    // Rule ids follow file order too.
    assert!(rs.rule_id("narrow").map(|r| r.0) < rs.rule_id("wide").map(|r| r.0));
    // Indexed (prefix) and non-indexed (regex without prefix) rules
    // interleave correctly.
    let rs = with_targets(
        "rule re: redis key /b$/ -> r1\n\
         rule pre: redis key \"a*\" -> r2\n\
         rule re2: redis key /c$/ -> f",
    );
    assert_eq!(who(&rs, 1, 0, "SET", Some("ab")), "re");
    assert_eq!(who(&rs, 1, 0, "SET", Some("ac")), "pre");
    assert_eq!(who(&rs, 1, 0, "SET", Some("zc")), "re2");
}

#[test]
fn files_load_in_the_given_order_and_share_targets() {
    let sources = vec![
        (
            PathBuf::from("10-targets.sync"),
            "target r = redis \"redis://a\"\ntarget s = redis \"redis://b\"\n".to_string(),
        ),
        (
            PathBuf::from("20-a.sync"),
            "rule first: redis key \"x*\" -> s\n".to_string(),
        ),
        (
            PathBuf::from("30-b.sync"),
            "rule second: redis key \"y*\" -> r\ndefault redis -> r\n".to_string(),
        ),
    ];
    let rs = parse_sources(&sources).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(who(&rs, 1, 0, "SET", Some("xy")), "first");
    assert_eq!(who(&rs, 1, 0, "SET", Some("yx")), "second");
    assert_eq!(
        rs.rule_location(rs.rule_id("second").expect("id")).0,
        PathBuf::from("30-b.sync")
    );
}

#[test]
fn directories_load_in_lexical_order() {
    let dir = std::env::temp_dir().join(format!("syncs-dsl-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
    write("b.sync", "rule from_b: redis key \"k*\" -> r\n");
    write(
        "a.sync",
        "target r = redis \"redis://a\"\nrule from_a: redis key \"k1*\" -> r\n",
    );
    write("c.txt", "this is not a rules file");
    let rs = load_path(&dir).unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(who(&rs, 1, 0, "SET", Some("k1")), "from_a");
    assert_eq!(who(&rs, 1, 0, "SET", Some("k2")), "from_b");
    // Swap the contents: now b's rule comes second but a's is narrower...
    write(
        "a.sync",
        "target r = redis \"redis://a\"\nrule from_a: redis key \"k*\" -> r\n",
    );
    write("b.sync", "rule from_b: redis key \"k1*\" -> r\n");
    let errs = load_path(&dir).expect_err("from_b is shadowed");
    assert!(errs[0].message.contains("rule `from_b` can never match"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn empty_directory_is_an_error() {
    let dir = std::env::temp_dir().join(format!("syncs-dsl-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let errs = load_path(&dir).expect_err("no files");
    assert!(errs[0].message.contains("no *.sync files"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mongo_db_coll_and_ops() {
    let rs = with_targets(
        "rule users: mongo db \"app\" coll \"users\" op insert -> m1\n\
         rule logs: mongo db \"app\" coll \"logs_*\" -> drop\n\
         rule tenants: mongo db /^tenant_[0-9]+$/ op update_one, delete -> m2\n\
         rule replace: mongo op replace -> f",
    );
    use MongoOpKind::*;
    assert_eq!(mongo_who(&rs, "app", "users", InsertOne), "users");
    assert_eq!(mongo_who(&rs, "app", "users", InsertMany), "users");
    assert_eq!(mongo_who(&rs, "app", "users", UpdateOne), "<default>");
    assert_eq!(
        mongo_who(&rs, "app", "logs_2024", DeleteMany),
        "drop(Rule, logs)"
    );
    assert_eq!(mongo_who(&rs, "app", "logs", DeleteMany), "<default>");
    assert_eq!(mongo_who(&rs, "tenant_7", "x", UpdateOne), "tenants");
    assert_eq!(mongo_who(&rs, "tenant_7", "x", UpdateMany), "<default>");
    assert_eq!(mongo_who(&rs, "tenant_7", "x", DeleteOne), "tenants");
    assert_eq!(mongo_who(&rs, "tenant_x", "x", DeleteOne), "<default>");
    assert_eq!(mongo_who(&rs, "other", "x", ReplaceOne), "replace");
}

#[test]
fn mongo_renaming() {
    let rs = with_targets(
        "rule copy: mongo db \"app\" -> m1 db \"app_copy\", m2 coll \"{coll}_v2\", f\n\
         rule both: mongo db \"shop\" -> m1 db \"{db}_{coll}\" coll \"all\"",
    );
    let q = MongoQuery {
        db: "app",
        coll: "users",
        op: MongoOpKind::InsertOne,
    };
    match rs.decide_mongo(&q) {
        Decision::Route { actions, .. } => {
            let ns: Vec<_> = actions
                .iter()
                .map(|a| a.mongo_namespace("app", "users"))
                .collect();
            assert_eq!(
                ns,
                [
                    ("app_copy".to_string(), "users".to_string()),
                    ("app".to_string(), "users_v2".to_string()),
                    ("app".to_string(), "users".to_string()),
                ]
            );
            assert!(actions[0].renames_namespace());
            assert!(!actions[2].renames_namespace());
        }
        other => panic!("{other:?}"),
    }
    match rs.decide_mongo(&MongoQuery { db: "shop", ..q }) {
        Decision::Route { actions, .. } => assert_eq!(
            actions[0].mongo_namespace("shop", "orders"),
            ("shop_orders".to_string(), "all".to_string())
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn targets_and_options() {
    let rs = rules(
        "target r = redis \"redis://a:1/2\" { pool = 8, timeout = 2s, connect_timeout = 500ms }\n\
         target m = mongo \"mongodb+srv://x\" {}\n\
         target f = file \"/tmp/a.jsonl\" { fsync = false, }\n\
         default redis -> r, f\ndefault mongo -> m\n",
    );
    let t = rs.targets();
    assert_eq!(t.len(), 3);
    assert_eq!((t[0].name.as_str(), t[0].kind), ("r", TargetKind::Redis));
    assert_eq!(t[0].options.pool, Some(8));
    assert_eq!(
        t[0].options.timeout,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(
        t[0].options.connect_timeout,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(t[1].kind, TargetKind::Mongo);
    assert_eq!(t[1].options, TargetOptions::default());
    assert_eq!(
        (t[2].kind, t[2].url.as_str()),
        (TargetKind::File, "/tmp/a.jsonl")
    );
    assert_eq!(t[2].options.fsync, Some(false));
    assert_eq!(rs.target_id("f"), Some(TargetId(2)));
    assert_eq!(rs.target(TargetId(1)).name, "m");
}

#[test]
fn rules_may_span_lines_and_carry_comments() {
    let rs = rules(
        "target r = redis \"redis://a\" # the replica\n\
         rule x: # a comment inside\n   redis\n   port 1,\n        2\n   key \"a*\" # why\n   -> r\n      db 3\n",
    );
    assert_eq!(
        redis_routes(&rs, &redis(2, 0, "SET", Some("ab"))),
        [("r".into(), 3, "ab".into())]
    );
}

#[test]
fn rule_set_is_shareable() {
    fn assert_traits<T: Send + Sync + 'static + std::fmt::Debug>() {}
    assert_traits::<RuleSet>();
    let rs = std::sync::Arc::new(with_targets("default redis -> r1"));
    let rs2 = std::sync::Arc::clone(&rs);
    let h = std::thread::spawn(move || who(&rs2, 1, 0, "SET", Some("k")));
    assert_eq!(h.join().expect("thread"), "<default>");
}
