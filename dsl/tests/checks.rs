//! Semantic checks: each one, its position and wording; all are collected.

mod common;

use common::{assert_diag, errors, one_error, rules};
use syncs_dsl::*;

const R: &str = "target r = redis \"redis://a\"\n";

fn only_error(body: &str) -> Diagnostic {
    one_error(&format!("{R}{body}\ndefault redis -> r\n"))
}

#[test]
fn unknown_target_with_suggestion() {
    let d = only_error("rule x: redis -> replcia, r");
    assert_diag(&d, 2, 18, "unknown target `replcia`");
    let d = one_error("target replica = redis \"redis://a\"\nrule x: redis -> replcia\n");
    assert_diag(
        &d,
        2,
        18,
        "unknown target `replcia` (did you mean `replica`?)",
    );
}

#[test]
fn duplicate_target_and_rule_names() {
    let errs = errors(&format!(
        "{R}target r = redis \"redis://b\"\nrule x: redis db 1 -> r\nrule x: redis db 2 -> r\n"
    ));
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    assert_diag(
        &errs[0],
        2,
        8,
        "duplicate target `r` (first declared at t.sync:1)",
    );
    assert_diag(
        &errs[1],
        4,
        6,
        "duplicate rule name `x` (first used at t.sync:3)",
    );
}

#[test]
fn names_are_global_across_files() {
    let sources = vec![
        (
            std::path::PathBuf::from("a.sync"),
            format!("{R}rule x: redis db 1 -> r\n"),
        ),
        (
            std::path::PathBuf::from("b.sync"),
            format!("{R}rule x: redis db 2 -> r\n"),
        ),
    ];
    let errs = parse_sources(&sources).expect_err("duplicates");
    assert_eq!(errs.len(), 2);
    assert!(errs
        .iter()
        .all(|d| d.file == std::path::Path::new("b.sync")));
    assert!(errs[0].message.contains("first declared at a.sync:1"));
    assert!(errs[1].message.contains("first used at a.sync:2"));
}

#[test]
fn invalid_regex_and_glob() {
    let d = only_error("rule x: redis key /(/ -> r");
    assert_diag(&d, 2, 19, "invalid regex /(/: unclosed group");
    let d = only_error("rule x: redis key \"a[bc\" -> r");
    assert_diag(&d, 2, 19, "invalid glob \"a[bc\": unclosed `[`");
    let d = only_error("rule x: mongo coll \"[z-a]\" -> drop");
    assert_diag(&d, 2, 20, "bad range `z-a`");
}

#[test]
fn bad_port_and_db_ranges() {
    let errs = errors(&format!(
        "{R}rule x: redis port 7010..7000 -> r\nrule y: redis port 70000 -> r\nrule z: redis db 1..5000000000 -> r\n"
    ));
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    assert_diag(
        &errs[0],
        2,
        20,
        "bad port range 7010..7000: the start is after the end",
    );
    assert_diag(&errs[1], 3, 20, "port 70000 is out of range (0 to 65535)");
    assert_diag(&errs[2], 4, 18, "db range 1..5000000000 is out of range");
}

#[test]
fn shadowed_rules() {
    let cases = [
        // Earlier rule without conditions.
        ("rule a: redis -> r\nrule b: redis key \"x\" -> r", "b", "a"),
        // Subset of conditions.
        ("rule a: redis port 6379 -> r\nrule b: redis port 6379 db 2 -> r", "b", "a"),
        // Wider port range, wider prefix.
        (
            "rule a: redis port 6000..7000 key \"user:*\" -> r\nrule b: redis port 6379, 6380 key \"user:admin:*\" -> r db 2",
            "b",
            "a",
        ),
        // A group containing the commands.
        ("rule a: redis cmd @write -> r\nrule b: redis cmd SET, DEL -> r", "b", "a"),
        // Same regex.
        ("rule a: redis key /^t/ -> drop\nrule b: redis key /^t/ db 1 -> r", "b", "a"),
        // Mongo: all ops / a db glob.
        ("rule a: mongo db \"app*\" -> drop\nrule b: mongo db \"app1\" op insert -> drop", "b", "a"),
    ];
    for (body, shadowed, by) in cases {
        let d = only_error(body);
        assert!(
            d.message.contains(&format!(
                "rule `{shadowed}` can never match: rule `{by}` (t.sync:2)"
            )),
            "{body}: {d}"
        );
        assert_eq!(d.line, 3, "{body}");
    }
}

#[test]
fn not_shadowed_when_not_provable() {
    let ok = [
        "rule a: redis port 6379 -> r\nrule b: redis db 2 -> r",
        "rule a: redis key \"user:*\" -> r\nrule b: redis -> r",
        "rule a: redis key /^user:/ -> r\nrule b: redis key \"user:1\" -> r",
        "rule a: redis cmd SET -> r\nrule b: redis cmd SET, GET -> r",
        "rule a: redis key \"a*\" -> r\nrule b: redis cmd PING -> r",
        "rule a: mongo op insert -> drop\nrule b: mongo op insert, delete -> drop",
        // A routing catch-all does not take dangerous commands: a later rule
        // naming one still matters.
        "rule a: redis -> r\nrule b: redis cmd FLUSHALL -> r",
        "rule a: redis -> r\nrule b: redis cmd @dangerous -> r",
        // ... or drops them (with reason `Rule` instead of `Dangerous`).
        "rule a: redis -> r\nrule b: redis -> drop",
    ];
    for body in ok {
        let rs = rules(&format!(
            "{R}target m = mongo \"mongodb://x\"\n{body}\ndefault mongo -> m\n"
        ));
        assert_eq!(rs.rule_count(), 2, "{body}");
    }
    // But a *drop* catch-all does take them.
    let d = only_error("rule a: redis -> drop\nrule b: redis cmd FLUSHALL -> r");
    assert!(d.message.contains("rule `b` can never match"));
}

#[test]
fn unused_target_is_a_warning() {
    let rs = rules(&format!(
        "{R}target unused = file \"/tmp/x\"\ndefault redis -> r\n"
    ));
    assert_eq!(rs.warnings().len(), 1);
    let w = &rs.warnings()[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_diag(w, 2, 8, "target `unused` is never used");
    assert!(w.to_string().starts_with("warning: "));
}

#[test]
fn routing_dangerous_commands_is_a_warning() {
    let rs = rules(&format!(
        "{R}rule a: redis cmd FLUSHALL, SET -> r\nrule b: redis port 1 cmd @dangerous -> r\nrule c: redis port 2 cmd CONFIG -> drop\n"
    ));
    let w: Vec<_> = rs
        .warnings()
        .iter()
        .map(|w| (w.line, w.col, w.message.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (
                2,
                19,
                "rule `a` routes dangerous command FLUSHALL to its targets"
            ),
            (
                3,
                26,
                "rule `b` routes dangerous commands (@dangerous) to its targets"
            ),
        ]
    );
}

#[test]
fn unknown_command_warns_and_unknown_group_errors() {
    let rs = rules(&format!("{R}rule a: redis cmd SETT -> r\n"));
    assert_diag(
        &rs.warnings()[0],
        2,
        19,
        "unknown Redis command `SETT` (did you mean `SET`?)",
    );
    let d = only_error("rule a: redis cmd @wrte -> r");
    assert_diag(
        &d,
        2,
        19,
        "unknown command group `@wrte` (did you mean `@write`?)",
    );
}

#[test]
fn test_with_unknown_target() {
    let d = only_error("test \"t\" {\n  redis 1 0 SET a b\n  expect r\n  expect nope db 1\n}");
    assert_diag(&d, 5, 10, "test \"t\" expects unknown target `nope`");
}

#[test]
fn protocol_and_kind_mismatches() {
    let src = "target r = redis \"redis://a\"\ntarget m = mongo \"mongodb://b\"\n\
               rule a: redis -> m\n\
               rule b: mongo -> r\n\
               test \"t\" {\n  mongo a b insert_one\n  expect r\n}\n";
    let errs = errors(src);
    let msgs: Vec<_> = errs.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(
        msgs,
        [
            (
                3,
                "rule `a` handles redis operations but target `m` is a mongo target"
            ),
            (
                4,
                "rule `b` handles mongo operations but target `r` is a redis target"
            ),
            (
                7,
                "test \"t\" has a mongo input but target `r` is a redis target"
            ),
        ]
    );
}

#[test]
fn action_option_checks() {
    let errs = errors(&format!(
        "{R}target m = mongo \"mongodb://b\"\n\
         rule a: redis port 1 -> r db \"x\" coll \"y\"\n\
         rule b: mongo db \"b\" -> m db 3 key \"k\"\n\
         rule c: redis key \"s:*\" -> r key \"{{2}}\" prefix \"p\"\n\
         rule d: redis port 4 -> r key \"{{1}}{{coll}}\"\n\
         rule e: mongo db \"e\" -> m coll \"{{x}}\" db \"\"\n\
         rule f: redis key /(?P<a>x)/ -> r key \"{{a}}{{b}}\"\n\
         rule g: redis port 7 -> r db 1 db 2\n\
         rule h: redis port 1 port 2 -> r\n\
         default redis -> r key \"{{1}}\"\n"
    ));
    let msgs: Vec<String> = errs
        .iter()
        .map(|d| format!("{}: {}", d.line, d.message))
        .collect();
    let expect = [
        "3: a redis db is a number",
        "3: `coll` only applies to mongo operations",
        "4: a mongo db is a quoted name",
        "4: `key` and `prefix` only apply to redis operations",
        "5: `{2}` refers to capture 2, but a key pattern of rule `c` has only 1",
        "5: target `r` has both `key` and `prefix`",
        "6: `{1}` refers to a capture, but rule `d` has no key pattern",
        "6: `{coll}` is for mongo names",
        "7: `{x}` is not available in a mongo name",
        "7: the new db name is empty",
        "8: `{b}` is not a named group of every key pattern of rule `f`",
        "9: `db` is given twice for target `r`",
        "10: `port` is given twice in rule `h`",
        "11: `{1}` refers to a capture, but the redis default has no key pattern",
    ];
    assert_eq!(msgs.len(), expect.len(), "{}", msgs.join("\n"));
    for (m, e) in msgs.iter().zip(expect) {
        assert!(m.starts_with(e), "{m:?} should start with {e:?}");
    }
}

#[test]
fn target_checks() {
    let errs = errors(
        "target a = redis \"http://x\" { pool = 0, colour = 2, fsync = true, pool = 2 }\n\
         target b = mongo \"\" { timeout = 0s }\n\
         target c = file \"/x\" { pool = 2, fsync = 1 }\n\
         default redis -> a, c\ndefault mongo -> b\n",
    );
    let msgs: Vec<String> = errs
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect();
    let expect = [
        "1:18: a redis target's URL must start with redis://",
        "1:38: `pool` must be a number from 1 to 1024",
        "1:41: unknown option `colour` for a redis target",
        "1:53: option `fsync` does not apply to redis targets",
        "1:67: option `pool` is given twice",
        "2:18: target `b` has an empty URL",
        "2:33: `timeout` must be a non-zero duration",
        "3:24: option `pool` does not apply to file targets",
        "3:42: `fsync` must be `true` or `false`",
    ];
    assert_eq!(msgs.len(), expect.len(), "{}", msgs.join("\n"));
    for (m, e) in msgs.iter().zip(expect) {
        assert!(m.starts_with(e), "{m:?} should start with {e:?}");
    }
}

#[test]
fn duplicate_defaults_across_files() {
    let sources = vec![
        (
            std::path::PathBuf::from("a.sync"),
            format!("{R}default redis -> r\n"),
        ),
        (
            std::path::PathBuf::from("b.sync"),
            "\ndefault redis -> drop\n".to_string(),
        ),
    ];
    let errs = parse_sources(&sources).expect_err("two defaults");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].file, std::path::Path::new("b.sync"));
    assert_eq!((errs[0].line, errs[0].col), (2, 1));
    assert!(errs[0]
        .message
        .contains("duplicate `default redis` (first at a.sync:2)"));
}

#[test]
fn all_semantic_errors_are_collected_with_warnings() {
    let errs = errors(
        "target r = redis \"redis://a\"\ntarget unused = file \"/x\"\n\
         rule a: redis db 0 -> nope1\nrule b: redis db 1 -> nope2\nrule c: redis port 99999 -> r\n",
    );
    let errors = errs.iter().filter(|d| d.is_error()).count();
    let warnings = errs.len() - errors;
    assert_eq!((errors, warnings), (3, 1), "{}", render(&errs));
    // Sorted by position.
    let lines: Vec<_> = errs.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 3, 4, 5]);
}

#[test]
fn reserved_target_name() {
    let d = one_error("target drop = redis \"redis://a\"\n");
    assert_diag(&d, 1, 8, "`drop` is a reserved word");
}

#[test]
fn test_block_checks() {
    let errs = errors(&format!(
        "{R}test \"a\" {{\n  redis 70000 0 SET k v\n  expect drop\n  expect r\n}}\n\
         test \"b\" {{\n  redis 1 0 SET k v\n  expect r db x coll y\n}}\n\
         default redis -> r\n"
    ));
    let msgs: Vec<String> = errs
        .iter()
        .map(|d| format!("{}: {}", d.line, d.message))
        .collect();
    let expect = [
        "3: port 70000 is out of range",
        "5: `expect drop` and `expect dead-letter` must be the only `expect` line",
        "9: expected a db number, found `x`",
        "9: `coll` is for mongo tests",
    ];
    assert_eq!(msgs.len(), expect.len(), "{}", msgs.join("\n"));
    for (m, e) in msgs.iter().zip(expect) {
        assert!(m.starts_with(e), "{m:?} should start with {e:?}");
    }
}
