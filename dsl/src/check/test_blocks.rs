//! `test` blocks: names, input ranges, and expectations that fit their
//! targets.

use std::collections::HashMap;

use super::suggest::suggest;
use super::{kind_fits, Ctx};
use crate::ast::*;
use crate::target::{Target, TargetId};

pub(super) fn check_tests(cx: &mut Ctx<'_>, targets: &[Target], ids: &HashMap<String, TargetId>) {
    let mut names: HashMap<String, (usize, Span)> = HashMap::new();
    for (fi, file) in cx.files.iter().enumerate() {
        for item in &file.items {
            let Item::Test(t) = item else { continue };
            if let Some((pfi, pspan)) = names.get(&t.name).copied() {
                let at = cx.at(pfi, pspan);
                cx.warning(
                    fi,
                    t.span,
                    format!("duplicate test name {:?} (first at {at})", t.name),
                );
            } else {
                names.insert(t.name.clone(), (fi, t.span));
            }
            let protocol = match &t.input.node {
                TestInputAst::Redis { port, db, .. } => {
                    if *port > u64::from(u16::MAX) {
                        cx.error(
                            fi,
                            t.input.span,
                            format!("port {port} is out of range (0 to 65535)"),
                        );
                    }
                    if *db > u64::from(u32::MAX) {
                        cx.error(
                            fi,
                            t.input.span,
                            format!("db {db} is out of range (0 to {})", u32::MAX),
                        );
                    }
                    Protocol::Redis
                }
                TestInputAst::Mongo { .. } => Protocol::Mongo,
            };
            let routes = t
                .expects
                .iter()
                .filter(|e| matches!(e.node, ExpectAst::Route { .. }))
                .count();
            if routes != t.expects.len() && t.expects.len() > 1 {
                if let Some(e) = t.expects.get(1) {
                    cx.error(
                        fi,
                        e.span,
                        "`expect drop` and `expect dead-letter` must be the only `expect` line of a test".into(),
                    );
                }
            }
            for e in &t.expects {
                let ExpectAst::Route {
                    target,
                    db,
                    coll,
                    args,
                } = &e.node
                else {
                    continue;
                };
                match ids.get(&target.node) {
                    None => cx.error(
                        fi,
                        target.span,
                        format!(
                            "test {:?} expects unknown target `{}`{}",
                            t.name,
                            target.node,
                            suggest(&target.node, targets.iter().map(|t| t.name.as_str()))
                        ),
                    ),
                    Some(id) => {
                        let kind = targets[usize::from(id.0)].kind;
                        if !kind_fits(protocol, kind) {
                            cx.error(
                                fi,
                                target.span,
                                format!(
                                    "test {:?} has a {} input but target `{}` is a {kind} target",
                                    t.name,
                                    protocol.as_str(),
                                    target.node
                                ),
                            );
                        }
                    }
                }
                match protocol {
                    Protocol::Redis => {
                        if let Some(c) = coll {
                            cx.error(fi, c.span, "`coll` is for mongo tests".into());
                        }
                        if let Some(d) = db {
                            if d.node.parse::<u32>().is_err() {
                                cx.error(
                                    fi,
                                    d.span,
                                    format!("expected a db number, found `{}`", d.node),
                                );
                            }
                        }
                        if args.as_ref().is_some_and(|a| a.is_empty()) {
                            cx.error(fi, e.span, "expected a command after `:`".into());
                        }
                    }
                    Protocol::Mongo => {
                        if args.is_some() {
                            cx.error(
                                fi,
                                e.span,
                                "a mongo test expects `TARGET [db NAME] [coll NAME]`, not a command".into(),
                            );
                        }
                    }
                }
            }
        }
    }
}
