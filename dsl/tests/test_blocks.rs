//! `test` blocks become plain `RuleTest` data.

mod common;

use common::rules;
use syncs_dsl::*;

const HEAD: &str = "target replica = redis \"redis://a\"\n\
                    target docs = mongo \"mongodb://b\"\n\
                    target audit = file \"/tmp/a\"\n\
                    default redis -> replica, audit\ndefault mongo -> docs\n";

fn tests_of(body: &str) -> Vec<RuleTest> {
    rules(&format!("{HEAD}{body}")).tests().to_vec()
}

fn bytes(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn redis_input_and_full_expectation() {
    let t = tests_of(
        "test \"sessions move\" {\n    redis 6379 1 SET session:7 x\n    expect replica db 2: SET sess:7 x\n}\n",
    );
    assert_eq!(t.len(), 1);
    let t = &t[0];
    assert_eq!(t.name, "sessions move");
    assert_eq!((t.file.to_str(), t.line), (Some("t.sync"), 6));
    assert_eq!(
        t.input,
        TestInput::Redis {
            port: 6379,
            db: 1,
            args: bytes(&["SET", "session:7", "x"])
        }
    );
    assert_eq!(
        t.expect,
        Expected::Routed(vec![ExpectedRoute {
            target: TargetId(0),
            target_name: "replica".into(),
            line: 8,
            output: ExpectedOutput::Redis {
                db: 2,
                args: bytes(&["SET", "sess:7", "x"])
            },
        }])
    );
}

#[test]
fn omitted_parts_mean_unchanged() {
    let t = tests_of(
        "test \"copy\" {\n  redis 6380 4 HSET \"a key\" f \"two words\"   # quoted args\n  expect replica\n  expect audit db 0\n  expect replica: HSET x\n}\n",
    );
    let args = bytes(&["HSET", "a key", "f", "two words"]);
    let Expected::Routed(routes) = &t[0].expect else {
        panic!("{:?}", t[0].expect)
    };
    let outs: Vec<_> = routes
        .iter()
        .map(|r| (r.target_name.as_str(), r.output.clone()))
        .collect();
    assert_eq!(
        outs,
        [
            (
                "replica",
                ExpectedOutput::Redis {
                    db: 4,
                    args: args.clone()
                }
            ),
            ("audit", ExpectedOutput::Redis { db: 0, args }),
            (
                "replica",
                ExpectedOutput::Redis {
                    db: 4,
                    args: bytes(&["HSET", "x"])
                }
            ),
        ]
    );
}

#[test]
fn mongo_input_and_expectations() {
    let t = tests_of(
        "test \"m\" {\n  mongo app users update_many\n  expect docs db app_copy\n  expect docs coll \"users v2\"\n  expect docs db a coll b\n  expect audit\n}\n",
    );
    assert_eq!(
        t[0].input,
        TestInput::Mongo {
            db: "app".into(),
            coll: "users".into(),
            op: MongoOpKind::UpdateMany
        }
    );
    let Expected::Routed(routes) = &t[0].expect else {
        panic!()
    };
    let ns: Vec<_> = routes
        .iter()
        .map(|r| match &r.output {
            ExpectedOutput::Mongo { db, coll } => (r.target, db.as_str(), coll.as_str()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ns,
        [
            (TargetId(1), "app_copy", "users"),
            (TargetId(1), "app", "users v2"),
            (TargetId(1), "a", "b"),
            (TargetId(2), "app", "users"),
        ]
    );
}

#[test]
fn drops_and_dead_letters() {
    let t = tests_of(
        "test \"a\" {\n  redis 1 0 FLUSHALL\n  expect drop\n}\n\
         test \"b\" {\n  redis 1 0 FLUSHALL\n  expect drop dangerous\n}\n\
         test \"c\" {\n  mongo a b delete_one\n  expect drop rule\n}\n\
         test \"d\" {\n  redis 1 0 GET k\n  expect drop default\n}\n\
         test \"e\" {\n  redis 1 0 RENAME a b\n  expect dead-letter\n}\n",
    );
    let e: Vec<_> = t.iter().map(|t| t.expect.clone()).collect();
    assert_eq!(
        e,
        [
            Expected::Drop(None),
            Expected::Drop(Some(DropReason::Dangerous)),
            Expected::Drop(Some(DropReason::Rule)),
            Expected::Drop(Some(DropReason::Default)),
            Expected::DeadLetter,
        ]
    );
    assert_eq!(
        t.iter().map(|t| t.line).collect::<Vec<_>>(),
        [6, 10, 14, 18, 22]
    );
}

#[test]
fn hash_tags_and_braces_in_arguments() {
    let t = tests_of(
        "test \"tags\" {\n  redis 1 0 SET {user:1}:name \"x\\\"y\"\n  expect replica\n}\n",
    );
    assert_eq!(
        t[0].input,
        TestInput::Redis {
            port: 1,
            db: 0,
            args: bytes(&["SET", "{user:1}:name", "x\"y"])
        }
    );
}

#[test]
fn tests_from_several_files_keep_file_order() {
    let sources = vec![
        (
            std::path::PathBuf::from("a.sync"),
            format!("{HEAD}test \"one\" {{\n redis 1 0 SET k v\n expect replica\n}}\n"),
        ),
        (
            std::path::PathBuf::from("b.sync"),
            "test \"two\" {\n mongo a b insert_one\n expect docs\n}\n".to_string(),
        ),
    ];
    let rs = parse_sources(&sources).unwrap_or_else(|e| panic!("{}", render(&e)));
    let names: Vec<_> = rs
        .tests()
        .iter()
        .map(|t| (t.name.as_str(), t.file.to_str()))
        .collect();
    assert_eq!(names, [("one", Some("a.sync")), ("two", Some("b.sync"))]);
}

#[test]
fn a_lone_input_line_parses_with_the_test_grammar() {
    // `syncs-check --explain` takes this: quoting works as in a test block.
    assert_eq!(
        TestInput::parse(r#"redis 6379 0 SET "a b" v"#),
        Ok(TestInput::Redis {
            port: 6379,
            db: 0,
            args: bytes(&["SET", "a b", "v"])
        })
    );
    assert_eq!(
        TestInput::parse("  redis 1 2 SET {user:1}:name \"x\\\"y\"  # a comment\n"),
        Ok(TestInput::Redis {
            port: 1,
            db: 2,
            args: bytes(&["SET", "{user:1}:name", "x\"y"])
        })
    );
    assert_eq!(
        TestInput::parse("mongo app \"users v2\" delete_many"),
        Ok(TestInput::Mongo {
            db: "app".into(),
            coll: "users v2".into(),
            op: MongoOpKind::DeleteMany
        })
    );
}

#[test]
fn a_bad_input_line_says_what_was_expected_and_where() {
    let e = TestInput::parse("redis 6379 x SET a").expect_err("bad db");
    assert!(
        matches!(&e, InputError::Syntax { col: 12, message } if message.contains("a db number")),
        "{e:?}"
    );
    assert!(e.to_string().contains("column 12"), "{e}");
    let e = TestInput::parse("mongo app users upsert").expect_err("bad op");
    assert!(e.to_string().contains("an operation"), "{e}");
    assert_eq!(
        TestInput::parse("redis 70000 0 GET k"),
        Err(InputError::Port(70000))
    );
    assert_eq!(
        TestInput::parse("redis 1 4294967296 GET k"),
        Err(InputError::Db(4_294_967_296))
    );
    // One line only: a second line is not part of the input.
    assert!(TestInput::parse("redis 1 0 GET k\nredis 1 0 GET j").is_err());
    assert!(TestInput::parse("redis 1 0").is_err());
    assert!(TestInput::parse("").is_err());
}

/// Runs every test of `body` (after HEAD and a session rule) with the one
/// runner; returns (name, error) of each failure.
fn failures(body: &str) -> Vec<(String, String)> {
    let rs = rules(&format!(
        "{HEAD}rule s: redis key \"session:*\" -> replica db 2 key \"sess:{{1}}\"\n{body}"
    ));
    rs.tests()
        .iter()
        .filter_map(|t| {
            common::run_rule_test(&rs, t)
                .err()
                .map(|e| (t.name.clone(), e))
        })
        .collect()
}

#[test]
fn a_multi_key_command_is_split_as_the_server_splits_it() {
    // MSET's keys disagree: one part per destination, keys rewritten.
    let split = "test \"split\" {\n  redis 6379 1 MSET session:7 x other y session:8 z\n  \
                 expect replica db 2: MSET sess:7 x sess:8 z\n  \
                 expect replica: MSET other y\n  expect audit: MSET other y\n}\n";
    assert_eq!(failures(split), []);
    // DEL splits too; every key of a part is rewritten.
    let del = "test \"del\" {\n  redis 6379 0 DEL session:1 k\n  \
               expect replica db 2: DEL sess:1\n  expect replica: DEL k\n  expect audit: DEL k\n}\n";
    assert_eq!(failures(del), []);
    // RENAME cannot be split: dead-lettered whole.
    let rename = "test \"rename\" {\n  redis 6379 0 RENAME session:1 k\n  expect dead-letter\n}\n";
    assert_eq!(failures(rename), []);
}

#[test]
fn a_wrong_split_expectation_fails_with_what_the_router_did() {
    let wrong = "test \"not split\" {\n  redis 6379 1 MSET session:7 x other y\n  \
                 expect replica db 2: MSET sess:7 x sess:other y\n}\n";
    let f = failures(wrong);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].1.contains("replica: db 2: MSET sess:7 x")
            && f[0].1.contains("audit: db 1: MSET other y"),
        "{f:?}"
    );
}
