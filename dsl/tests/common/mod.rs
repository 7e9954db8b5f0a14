//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use syncs_dsl::*;

/// Parses one source named `t.sync`; panics with the rendered diagnostics on
/// failure.
pub fn rules(src: &str) -> RuleSet {
    match parse_sources(&[(PathBuf::from("t.sync"), src.to_string())]) {
        Ok(r) => r,
        Err(e) => panic!("unexpected errors:\n{}", render(&e)),
    }
}

/// Parses one source that must fail; returns the diagnostics.
pub fn errors(src: &str) -> Vec<Diagnostic> {
    match parse_sources(&[(PathBuf::from("t.sync"), src.to_string())]) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e,
    }
}

/// The only error of a source that must fail with exactly one.
pub fn one_error(src: &str) -> Diagnostic {
    let e: Vec<_> = errors(src).into_iter().filter(|d| d.is_error()).collect();
    assert_eq!(e.len(), 1, "expected one error, got:\n{}", render(&e));
    e.into_iter().next().expect("one error")
}

/// Asserts a diagnostic's position and that its message contains `words`.
pub fn assert_diag(d: &Diagnostic, line: usize, col: usize, words: &str) {
    assert_eq!((d.line, d.col), (line, col), "wrong position for: {d}");
    assert!(
        d.message.contains(words),
        "message {:?} lacks {words:?}",
        d.message
    );
    let rendered = d.to_string();
    assert!(
        rendered.contains(&format!("t.sync:{line}:{col}")),
        "{rendered}"
    );
}

pub fn redis<'a>(port: u16, db: u32, cmd: &'a str, key: Option<&'a str>) -> RedisQuery<'a> {
    RedisQuery {
        port,
        db,
        command: cmd.as_bytes(),
        key: key.map(str::as_bytes),
    }
}

/// The name of the deciding rule, `"<default>"` for the default, and
/// `"drop"` with the reason for drops.
pub fn outcome(rs: &RuleSet, d: &Decision<'_>) -> String {
    match d {
        Decision::Route { rule: Some(r), .. } => rs.rule_name(*r).to_string(),
        Decision::Route { rule: None, .. } => "<default>".into(),
        Decision::Drop { rule, reason } => format!(
            "drop({reason:?}{})",
            rule.map(|r| format!(", {}", rs.rule_name(r)))
                .unwrap_or_default()
        ),
        Decision::DeadLetter { rule, reason } => format!(
            "dead-letter({reason:?}{})",
            rule.map(|r| format!(", {}", rs.rule_name(r)))
                .unwrap_or_default()
        ),
    }
}

/// Route actions as (target name, db, rewritten key) for a redis query.
pub fn redis_routes(rs: &RuleSet, q: &RedisQuery<'_>) -> Vec<(String, u32, String)> {
    match rs.decide_redis(q) {
        Decision::Route { actions, .. } => actions
            .iter()
            .map(|a| {
                let key = q
                    .key
                    .map(|k| String::from_utf8_lossy(&a.rewrite_key(k, q.db)).into_owned())
                    .unwrap_or_default();
                (rs.target(a.target).name.clone(), a.redis_db(q.db), key)
            })
            .collect(),
        Decision::Drop { .. } | Decision::DeadLetter { .. } => Vec::new(),
    }
}

/// Runs a rules-file test with the one runner, the engine's (the server's
/// router: key positions, multi-key splitting, refusals).
pub fn run_rule_test(rs: &RuleSet, t: &RuleTest) -> Result<(), String> {
    let r = syncs_engine::route::ruletest::run_test(rs, t);
    if r.passed {
        Ok(())
    } else {
        Err(format!(
            "test {:?} ({}): {}",
            r.name,
            r.location,
            r.detail.unwrap_or_default()
        ))
    }
}
