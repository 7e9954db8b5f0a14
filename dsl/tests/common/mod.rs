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
                    .map(|k| String::from_utf8_lossy(&a.rewrite_key(k)).into_owned())
                    .unwrap_or_default();
                (rs.target(a.target).name.clone(), a.redis_db(q.db), key)
            })
            .collect(),
        Decision::Drop { .. } | Decision::DeadLetter { .. } => Vec::new(),
    }
}

/// Key positions of the few multi-key commands the shipped tests use; other
/// commands have their key at position 1, or none.
fn key_positions(cmd: &str, argc: usize) -> Vec<usize> {
    match cmd.to_ascii_uppercase().as_str() {
        "FLUSHALL" | "FLUSHDB" | "PING" | "SAVE" | "CONFIG" => vec![],
        "RENAME" | "RENAMENX" | "COPY" | "SMOVE" | "LMOVE" => vec![1, 2],
        "MSET" | "MSETNX" => (1..argc).step_by(2).collect(),
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => (1..argc).collect(),
        _ if argc > 1 => vec![1],
        _ => vec![],
    }
}

/// A small stand-in for the engine's test runner: asks once per key, routes
/// when every key agrees, dead-letters otherwise (no splitting).
pub fn run_rule_test(rs: &RuleSet, t: &RuleTest) -> Result<(), String> {
    let actual = match &t.input {
        TestInput::Redis { port, db, args } => {
            let cmd = String::from_utf8_lossy(&args[0]).into_owned();
            let keys = key_positions(&cmd, args.len());
            let ask = |key: Option<&[u8]>| {
                rs.decide_redis(&RedisQuery {
                    port: *port,
                    db: *db,
                    command: &args[0],
                    key,
                })
            };
            let decisions: Vec<_> = if keys.is_empty() {
                vec![ask(None)]
            } else {
                keys.iter().map(|&i| ask(Some(&args[i]))).collect()
            };
            let first = &decisions[0];
            if decisions.iter().any(|d| d != first) {
                Expected::DeadLetter
            } else {
                match first {
                    Decision::Drop { reason, .. } => Expected::Drop(Some(*reason)),
                    Decision::DeadLetter { .. } => Expected::DeadLetter,
                    Decision::Route { actions, .. } => Expected::Routed(
                        actions
                            .iter()
                            .map(|a| {
                                let mut out = args.clone();
                                for &i in &keys {
                                    out[i] = a.rewrite_key(&args[i]).into_owned();
                                }
                                ExpectedRoute {
                                    target: a.target,
                                    target_name: rs.target(a.target).name.clone(),
                                    line: 0,
                                    output: ExpectedOutput::Redis {
                                        db: a.redis_db(*db),
                                        args: out,
                                    },
                                }
                            })
                            .collect(),
                    ),
                }
            }
        }
        TestInput::Mongo { db, coll, op } => {
            match rs.decide_mongo(&MongoQuery { db, coll, op: *op }) {
                Decision::Drop { reason, .. } => Expected::Drop(Some(reason)),
                Decision::DeadLetter { .. } => Expected::DeadLetter,
                Decision::Route { actions, .. } => Expected::Routed(
                    actions
                        .iter()
                        .map(|a| {
                            let (db, coll) = a.mongo_namespace(db, coll);
                            ExpectedRoute {
                                target: a.target,
                                target_name: rs.target(a.target).name.clone(),
                                line: 0,
                                output: ExpectedOutput::Mongo { db, coll },
                            }
                        })
                        .collect(),
                ),
            }
        }
    };
    let ok = match (&t.expect, &actual) {
        (Expected::Drop(None), Expected::Drop(_)) => true,
        (Expected::Drop(Some(a)), Expected::Drop(Some(b))) => a == b,
        (Expected::DeadLetter, Expected::DeadLetter) => true,
        (Expected::Routed(want), Expected::Routed(got)) => {
            let strip = |v: &Vec<ExpectedRoute>| {
                let mut v: Vec<_> = v.iter().map(|r| (r.target, r.output.clone())).collect();
                v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                v
            };
            strip(want) == strip(got)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "test {:?} ({}:{}): expected {:?}, got {:?}",
            t.name,
            t.file.display(),
            t.line,
            t.expect,
            actual
        ))
    }
}
