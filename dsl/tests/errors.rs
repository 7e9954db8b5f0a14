//! Syntax errors: position (`line:col`), wording, rendering, and collection
//! across files.

mod common;

use std::path::PathBuf;

use common::{assert_diag, one_error};
use syncs_dsl::*;

#[test]
fn missing_key_pattern() {
    let d = one_error("rule x: redis key -> drop");
    assert_diag(&d, 1, 19, "expected a key pattern");
}

#[test]
fn missing_arrow() {
    let d = one_error("target r = redis \"redis://a\"\nrule x: redis port 6379 r");
    assert_diag(&d, 2, 25, "`->`");
    assert!(d.message.contains("a redis condition"), "{}", d.message);
}

#[test]
fn misspelled_condition() {
    let d = one_error("rule x: redis prot 6379 -> drop");
    assert_diag(
        &d,
        1,
        15,
        "expected `->` or a redis condition (`port`, `db`, `cmd` or `key`)",
    );
}

#[test]
fn unquoted_url() {
    let d = one_error("target a = redis redis://x");
    assert_diag(&d, 1, 18, "expected a quoted string");
}

#[test]
fn unknown_target_kind() {
    let d = one_error("target a = kafka \"x\"");
    assert_diag(
        &d,
        1,
        12,
        "expected a target kind (`redis`, `redis-cluster`, `redis-sentinel`, `mongo` or `file`)",
    );
}

#[test]
fn missing_rule_name() {
    let d = one_error("rule : redis -> drop");
    assert_diag(&d, 1, 6, "expected a rule name");
}

#[test]
fn missing_outcome() {
    let d = one_error("rule x: redis ->\n");
    assert_diag(&d, 2, 1, "expected `drop`, `dead-letter` or a target name");
}

#[test]
fn bad_operation() {
    let d = one_error("rule x: mongo op insrt -> drop");
    assert_diag(&d, 1, 18, "expected an operation");
}

#[test]
fn missing_command() {
    let d = one_error("rule x: redis cmd -> drop");
    assert_diag(&d, 1, 19, "expected a command name or `@group`");
}

#[test]
fn unterminated_string() {
    let d = one_error("rule x: redis key \"abc -> drop\nrule y: redis -> drop");
    assert_diag(&d, 1, 31, "expected a closing `\"`");
    // The excerpt is the line as written, without pest's ␊ for its end.
    assert_eq!(d.source_line, "rule x: redis key \"abc -> drop");
}

#[test]
fn unterminated_regex() {
    let d = one_error("rule x: redis key /abc -> drop");
    assert_diag(&d, 1, 31, "expected a closing `/`");
}

#[test]
fn garbage_statement() {
    let d = one_error("# comment\n\n  garbage here");
    assert_diag(
        &d,
        3,
        3,
        "a statement (`target`, `rule`, `default` or `test`)",
    );
}

#[test]
fn bad_option_value() {
    let d = one_error("target a = redis \"redis://x\" { pool = }");
    assert_diag(&d, 1, 39, "expected an option value");
}

#[test]
fn db_action_without_value() {
    let d = one_error("target a = redis \"redis://x\"\nrule x: redis -> a db\n");
    assert_diag(&d, 3, 1, "expected a db number or a quoted db name");
}

#[test]
fn default_needs_protocol() {
    let d = one_error("default -> drop");
    assert_diag(&d, 1, 9, "expected `redis` or `mongo`");
}

#[test]
fn test_block_errors() {
    let d = one_error("test \"t\" {\n  redis 6379 x SET a b\n  expect drop\n}");
    assert_diag(&d, 2, 14, "expected a db number");

    let d = one_error("test \"t\" {\n  redis 6379 0 SET a b\n}");
    assert_diag(&d, 3, 1, "expected an `expect` line");

    let d = one_error("test \"t\" {\n  redis 6379 0 SET a b\n  expect drop }");
    assert_diag(&d, 3, 15, "expected end of line");

    let d = one_error("test \"t\" {\n  mongo app users insert\n  expect drop\n}");
    assert_diag(&d, 2, 19, "expected an operation (`insert_one`");

    let d = one_error("test \"t\" {\n  redis 6379 0\n  expect drop\n}");
    assert_diag(
        &d,
        2,
        3,
        "expected a test input line (`redis PORT DB COMMAND ARG...`",
    );
}

#[test]
fn rendering_looks_like_rustc() {
    let d = one_error("rule x: redis key -> drop");
    let text = d.to_string();
    let expected = "error: expected a key pattern (\"glob\" or /regex/)\n \
                    --> t.sync:1:19\n  |\n1 | rule x: redis key -> drop\n  |                   ^";
    assert_eq!(text, expected);
    assert_eq!(d.source_line, "rule x: redis key -> drop");
    assert_eq!(d.severity, Severity::Error);
}

#[test]
fn diagnostics_serialize_to_json() {
    let d = one_error("rule x: redis key -> drop");
    let json = serde_json::to_value(&d).expect("serializable");
    assert_eq!(json["severity"], "error");
    assert_eq!(json["file"], "t.sync");
    assert_eq!(json["line"], 1);
    assert_eq!(json["col"], 19);
    assert_eq!(json["source_line"], "rule x: redis key -> drop");
    assert!(json["message"]
        .as_str()
        .is_some_and(|m| m.contains("key pattern")));
}

#[test]
fn every_file_reports_its_syntax_error() {
    let sources = vec![
        (
            PathBuf::from("a.sync"),
            "rule x: redis key -> drop\n".to_string(),
        ),
        (
            PathBuf::from("b.sync"),
            "default redis -> drop\n".to_string(),
        ),
        (
            PathBuf::from("c.sync"),
            "\ntarget = redis \"redis://x\"\n".to_string(),
        ),
    ];
    let errs = parse_sources(&sources).expect_err("two files are wrong");
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].file, PathBuf::from("a.sync"));
    assert_eq!((errs[0].line, errs[0].col), (1, 19));
    assert_eq!(errs[1].file, PathBuf::from("c.sync"));
    assert_eq!((errs[1].line, errs[1].col), (2, 8));
    assert!(errs[1].message.contains("expected a target name"));
    let all = render(&errs);
    assert!(all.contains("a.sync:1:19") && all.contains("c.sync:2:8"));
    assert!(all.ends_with("2 errors, 0 warnings"));
}

#[test]
fn missing_file_is_a_diagnostic() {
    let errs = load_path(std::path::Path::new("/nonexistent/rules.sync")).expect_err("missing");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 0);
    assert!(errs[0].message.contains("cannot read"));
    assert!(errs[0].to_string().contains("--> /nonexistent/rules.sync"));
}
