//! The one runner of rules-file tests (`test` blocks) and of
//! `syncs-check --explain`: it routes the operation a [`TestInput`]
//! describes through [`route`], the router the server uses (key positions,
//! multi-key splitting, refusals), and compares the outcome with the
//! test's `expect` lines.

use serde::Serialize;
use syncs_dsl::{
    Decision, Expected, ExpectedOutput, MongoOpKind, RedisQuery, RuleSet, RuleTest, TargetKind,
    TestInput,
};

use super::{cluster, keys, route, Outcome, Routed};
use crate::op::{MongoOp, MongoUpdate, MongoWrite, Op, RedisCommand, RedisOp};
use smallvec::smallvec;

/// One rules-file test and how it went.
#[derive(Debug, Serialize)]
pub struct TestResult {
    pub name: String,
    pub location: String,
    pub passed: bool,
    /// What the router did, in words (on failure).
    pub detail: Option<String>,
}

/// Builds the operation a test or `--explain` describes.
pub fn input_op(input: &TestInput) -> Option<Op> {
    Some(match input {
        TestInput::Redis { port, db, args } => Op::Redis(RedisOp {
            port: *port,
            db: *db,
            commands: smallvec![RedisCommand::new(args)?],
        }),
        TestInput::Mongo { db, coll, op } => Op::from(MongoOp {
            db: db.clone(),
            coll: coll.clone(),
            write: sample_write(*op),
        }),
    })
}

/// A write of the given kind; routing looks only at the kind.
fn sample_write(kind: MongoOpKind) -> MongoWrite {
    let d = bson::Document::new;
    match kind {
        MongoOpKind::InsertOne => MongoWrite::InsertOne { document: d() },
        MongoOpKind::InsertMany => MongoWrite::InsertMany {
            documents: vec![d()],
        },
        MongoOpKind::UpdateOne => MongoWrite::UpdateOne {
            filter: d(),
            update: MongoUpdate::Document(d()),
            upsert: false,
        },
        MongoOpKind::UpdateMany => MongoWrite::UpdateMany {
            filter: d(),
            update: MongoUpdate::Document(d()),
            upsert: false,
        },
        MongoOpKind::ReplaceOne => MongoWrite::ReplaceOne {
            filter: d(),
            replacement: d(),
            upsert: false,
        },
        MongoOpKind::DeleteOne => MongoWrite::DeleteOne { filter: d() },
        MongoOpKind::DeleteMany => MongoWrite::DeleteMany { filter: d() },
        MongoOpKind::Drop => MongoWrite::Drop,
    }
}

/// One command (or Mongo write) as a target receives it.
struct Output {
    target: String,
    out: ExpectedOutput,
    /// The hash slot of the op it belongs to, for `redis-cluster` targets.
    slot: Option<u16>,
}

/// Each routed op's outputs, one per command, sorted.
fn outputs(rules: &RuleSet, ops: &[Routed]) -> Vec<Output> {
    let mut out: Vec<Output> = ops
        .iter()
        .flat_map(|r| {
            let def = rules.target(r.target);
            match &r.op {
                Op::Redis(op) => {
                    let slot = (def.kind == TargetKind::RedisCluster)
                        .then(|| cluster::op_slot(op).ok())
                        .flatten();
                    op.commands
                        .iter()
                        .map(|c| Output {
                            target: def.name.clone(),
                            out: ExpectedOutput::Redis {
                                db: op.db,
                                args: c.args().iter().map(|a| a.to_vec()).collect(),
                            },
                            slot,
                        })
                        .collect::<Vec<_>>()
                }
                Op::Mongo(op) => vec![Output {
                    target: def.name.clone(),
                    out: ExpectedOutput::Mongo {
                        db: op.db.clone(),
                        coll: op.coll.clone(),
                    },
                    slot: None,
                }],
            }
        })
        .collect();
    out.sort_by_cached_key(|o| format!("{:?}", (&o.target, &o.out)));
    out
}

fn describe_outcome(rules: &RuleSet, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Refused(reason) => format!("dead-letter: {reason}"),
        Outcome::Routed { ops, dropped } if ops.is_empty() => match dropped {
            Some(d) => format!(
                "drop ({:?}{})",
                d.reason,
                d.rule
                    .map(|r| format!(", rule {}", rules.rule_name(r)))
                    .unwrap_or_default()
            ),
            None => "nothing".into(),
        },
        Outcome::Routed { ops, dropped } => {
            let mut lines: Vec<String> = outputs(rules, ops)
                .into_iter()
                .map(|o| {
                    let slot = o.slot.map(|s| format!("   (slot {s})")).unwrap_or_default();
                    format!("{}: {}{slot}", o.target, render_output(&o.out))
                })
                .collect();
            if let Some(d) = dropped {
                lines.push(format!("(part dropped: {:?})", d.reason));
            }
            lines.join("; ")
        }
    }
}

fn render_output(o: &ExpectedOutput) -> String {
    match o {
        ExpectedOutput::Redis { db, args } => {
            let words: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            format!("db {db}: {}", words.join(" "))
        }
        ExpectedOutput::Mongo { db, coll } => format!("{db}.{coll}"),
    }
}

/// Runs one test through the router.
pub fn run_test(rules: &RuleSet, test: &RuleTest) -> TestResult {
    let location = format!("{}:{}", test.file.display(), test.line);
    let Some(op) = input_op(&test.input) else {
        return TestResult {
            name: test.name.clone(),
            location,
            passed: false,
            detail: Some("the test's input has no command".into()),
        };
    };
    let outcome = route(rules, op);
    let passed = match (&test.expect, &outcome) {
        (Expected::DeadLetter, Outcome::Refused(_)) => true,
        (
            Expected::Drop(want),
            Outcome::Routed {
                ops,
                dropped: Some(d),
            },
        ) if ops.is_empty() => want.is_none_or(|w| w == d.reason),
        (Expected::Routed(want), Outcome::Routed { ops, .. }) if !ops.is_empty() => {
            let mut want: Vec<(&String, &ExpectedOutput)> =
                want.iter().map(|w| (&w.target_name, &w.output)).collect();
            want.sort_by_cached_key(|w| format!("{w:?}"));
            let got = outputs(rules, ops);
            want.len() == got.len()
                && want
                    .iter()
                    .zip(&got)
                    .all(|(w, g)| *w.0 == g.target && *w.1 == g.out)
        }
        _ => false,
    };
    TestResult {
        name: test.name.clone(),
        location,
        passed,
        detail: (!passed).then(|| format!("got: {}", describe_outcome(rules, &outcome))),
    }
}

/// Which rule decides each key, and what is sent where.
pub fn explain_op(rules: &RuleSet, op: &Op) -> String {
    let mut out = String::new();
    let rule_of = |d: &Decision<'_>| {
        let (rule, what) = match d {
            Decision::Route { rule, .. } => (*rule, "route".to_owned()),
            Decision::Drop { rule, reason } => (*rule, format!("drop ({reason:?})")),
            Decision::DeadLetter { rule, .. } => (*rule, "dead-letter".to_owned()),
        };
        let name = rule
            .map(|r| format!("rule `{}`", rules.rule_name(r)))
            .unwrap_or_else(|| "the default".into());
        format!("{what} by {name}")
    };
    match op {
        Op::Redis(r) => {
            let cmd = &r.commands[0];
            let (spec, _) = keys::spec(cmd);
            let mut positions = keys::Positions::new();
            keys::positions(cmd, spec, &mut positions);
            let q = |key| RedisQuery {
                port: r.port,
                db: r.db,
                command: cmd.name(),
                key,
            };
            if positions.is_empty() {
                out.push_str(&format!(
                    "(no key): {}\n",
                    rule_of(&rules.decide_redis(&q(None)))
                ));
            }
            let args = cmd.arg_list();
            for p in positions {
                let key = args[p];
                out.push_str(&format!(
                    "key {}: {}\n",
                    String::from_utf8_lossy(key),
                    rule_of(&rules.decide_redis(&q(Some(key))))
                ));
            }
        }
        Op::Mongo(m) => {
            let q = syncs_dsl::MongoQuery {
                db: &m.db,
                coll: &m.coll,
                op: super::mongo_kind(&m.write),
            };
            out.push_str(&format!(
                "{}.{}: {}\n",
                m.db,
                m.coll,
                rule_of(&rules.decide_mongo(&q))
            ));
        }
    }
    out.push_str(&format!(
        "=> {}\n",
        describe_outcome(rules, &route(rules, op.clone()))
    ));
    out
}
