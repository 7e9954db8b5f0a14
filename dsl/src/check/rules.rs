//! Rules and defaults: names, conditions (ranges, commands, patterns), and
//! the shadowing check over the rules in matching order.

use std::collections::{HashMap, HashSet};

use super::outcome::{check_outcome, Scope};
use super::shadow::{cmd_set, merge, shadows, Shape, ShapeKind};
use super::suggest::{closest, suggest};
use super::{Ctx, RulePatterns};
use crate::ast::*;
use crate::commands::{self, Group};
use crate::matcher::MongoOpKind;
use crate::pattern::{analyze, Analyzed, PatternSrc};
use crate::target::{Target, TargetId};

/// Checks a list of patterns; returns the analyzed ones (invalid ones are
/// reported and left out).
fn check_patterns(
    cx: &mut Ctx<'_>,
    fi: usize,
    pats: &Option<Vec<Spanned<PatternSrc>>>,
) -> Option<Vec<(PatternSrc, Analyzed)>> {
    let pats = pats.as_ref()?;
    let mut out = Vec::new();
    for p in pats {
        match analyze(&p.node) {
            Ok(a) => out.push((p.node.clone(), a)),
            Err(e) => cx.error(fi, p.span, e.to_string()),
        }
    }
    Some(out)
}

fn check_ranges(
    cx: &mut Ctx<'_>,
    fi: usize,
    what: &str,
    max: u64,
    items: &Option<Vec<Spanned<NumRange>>>,
) -> Option<Vec<(u64, u64)>> {
    let items = items.as_ref()?;
    for it in items {
        let r = it.node;
        if r.lo > r.hi {
            cx.error(
                fi,
                it.span,
                format!(
                    "bad {what} range {}..{}: the start is after the end",
                    r.lo, r.hi
                ),
            );
        } else if r.hi > max {
            let shown = if r.lo == r.hi {
                format!("{what} {}", r.hi)
            } else {
                format!("{what} range {}..{}", r.lo, r.hi)
            };
            cx.error(fi, it.span, format!("{shown} is out of range (0 to {max})"));
        }
    }
    let valid: Vec<NumRange> = items
        .iter()
        .map(|s| s.node)
        .filter(|r| r.lo <= r.hi && r.hi <= max)
        .collect();
    Some(merge(&valid))
}

pub(super) fn check_rules(
    cx: &mut Ctx<'_>,
    targets: &[Target],
    ids: &HashMap<String, TargetId>,
    used: &mut HashSet<String>,
) -> Vec<RulePatterns> {
    let mut names: HashMap<String, (usize, Span)> = HashMap::new();
    let mut shapes: Vec<Shape> = Vec::new();
    let mut patterns = Vec::new();
    for (fi, file) in cx.files.iter().enumerate() {
        for item in &file.items {
            let Item::Rule(r) = item else { continue };
            let name = &r.name.node;
            if let Some((pfi, pspan)) = names.get(name).copied() {
                let at = cx.at(pfi, pspan);
                cx.error(
                    fi,
                    r.name.span,
                    format!("duplicate rule name `{name}` (first used at {at})"),
                );
            } else {
                names.insert(name.clone(), (fi, r.name.span));
            }
            // Dropping and dead-lettering rules decide without routing:
            // dangerous commands are not passed over by them.
            let drop = matches!(r.outcome.node, OutcomeAst::Drop | OutcomeAst::DeadLetter(_));
            let errors_before = cx.error_count();
            let (kind, caps) = match &r.conds {
                Conditions::Redis(c) => {
                    for rep in &c.repeated {
                        cx.error(
                            fi,
                            rep.span,
                            format!("`{}` is given twice in rule `{name}`", rep.node),
                        );
                    }
                    let ports = check_ranges(cx, fi, "port", u64::from(u16::MAX), &c.ports);
                    let dbs = check_ranges(cx, fi, "db", u64::from(u32::MAX), &c.dbs);
                    check_cmds(cx, fi, name, drop, &c.cmds);
                    let keys = check_patterns(cx, fi, &c.keys);
                    let caps = Scope {
                        patterns: keys.as_ref().map(|k| {
                            k.iter()
                                .map(|(_, a)| (a.captures, a.names.clone()))
                                .collect()
                        }),
                        dbs: dbs.clone(),
                        rule: true,
                    };
                    let kind = ShapeKind::Redis {
                        ports,
                        dbs,
                        cmds: cmd_set(&c.cmds),
                        keys,
                    };
                    (kind, caps)
                }
                Conditions::Mongo(c) => {
                    for rep in &c.repeated {
                        cx.error(
                            fi,
                            rep.span,
                            format!("`{}` is given twice in rule `{name}`", rep.node),
                        );
                    }
                    let dbs = check_patterns(cx, fi, &c.dbs);
                    let colls = check_patterns(cx, fi, &c.colls);
                    // The kinds the rule decides: a routing rule passes
                    // over a drop unless it names it.
                    let mut ops = c.op_bits();
                    if !drop && !c.names_drop() {
                        ops &= !MongoOpKind::Drop.bit();
                    }
                    if !drop {
                        for it in c.ops.iter().flatten() {
                            if it.node == OpItem::Exact(MongoOpKind::Drop) {
                                cx.warning(
                                    fi,
                                    it.span,
                                    format!("rule `{name}` routes mongo `drop`: its targets will drop whole collections"),
                                );
                            }
                        }
                    }
                    (
                        ShapeKind::Mongo { dbs, colls, ops },
                        Scope {
                            patterns: None,
                            dbs: None,
                            rule: true,
                        },
                    )
                }
            };
            patterns.push(rule_patterns(&kind));
            let who = format!("rule `{name}`");
            check_outcome(
                cx,
                fi,
                &who,
                r.protocol(),
                &caps,
                &r.outcome,
                targets,
                ids,
                used,
            );

            // A rule whose conditions have errors is left out of the
            // shadowing check: what it matches is not known.
            if cx.error_count() > errors_before {
                continue;
            }
            let shape = Shape {
                fi,
                name: name.clone(),
                span: r.name.span,
                drop,
                kind,
            };
            if let Some(a) = shapes.iter().find(|a| shadows(a, &shape)) {
                let at = cx.at(a.fi, a.span);
                cx.error(
                    fi,
                    r.name.span,
                    format!(
                        "rule `{name}` can never match: rule `{}` ({at}) comes first and matches everything it would",
                        a.name
                    ),
                );
            }
            shapes.push(shape);
        }
    }
    patterns
}

/// The analysed patterns of a rule's conditions, for the compiler.
fn rule_patterns(kind: &ShapeKind) -> RulePatterns {
    let analyzed = |p: &Option<Vec<(PatternSrc, Analyzed)>>| {
        p.as_ref()
            .map(|v| v.iter().map(|(_, a)| a.clone()).collect())
    };
    match kind {
        ShapeKind::Redis { keys, .. } => RulePatterns {
            keys: analyzed(keys),
            ..RulePatterns::default()
        },
        ShapeKind::Mongo { dbs, colls, .. } => RulePatterns {
            dbs: analyzed(dbs),
            colls: analyzed(colls),
            ..RulePatterns::default()
        },
    }
}

fn check_cmds(
    cx: &mut Ctx<'_>,
    fi: usize,
    rule: &str,
    drop: bool,
    cmds: &Option<Vec<Spanned<CmdItem>>>,
) {
    let Some(items) = cmds else { return };
    for it in items {
        match &it.node {
            CmdItem::Group(g) => match Group::from_name(g) {
                None => {
                    let known: Vec<String> = Group::ALL
                        .iter()
                        .map(|g| format!("@{}", g.name()))
                        .collect();
                    cx.error(
                        fi,
                        it.span,
                        format!(
                            "unknown command group `@{g}`{}; known groups: {}",
                            closest(g, Group::ALL.iter().map(|g| g.name()))
                                .map(|c| format!(" (did you mean `@{c}`?)"))
                                .unwrap_or_default(),
                            known.join(", ")
                        ),
                    );
                }
                Some(Group::Dangerous) if !drop => cx.warning(
                    fi,
                    it.span,
                    format!("rule `{rule}` routes dangerous commands (@dangerous) to its targets"),
                ),
                Some(_) => {}
            },
            CmdItem::Name(n) => {
                if !commands::is_known_command(n) {
                    cx.warning(
                        fi,
                        it.span,
                        format!(
                            "unknown Redis command `{n}`{}; it will still match by name",
                            suggest(n, commands::COMMANDS.iter().map(|(c, _)| *c))
                        ),
                    );
                } else if !drop && commands::is_dangerous(n.as_bytes()) {
                    cx.warning(
                        fi,
                        it.span,
                        format!("rule `{rule}` routes dangerous command {n} to its targets"),
                    );
                }
            }
        }
    }
}

pub(super) fn check_defaults(
    cx: &mut Ctx<'_>,
    targets: &[Target],
    ids: &HashMap<String, TargetId>,
    used: &mut HashSet<String>,
) {
    let mut seen: HashMap<Protocol, (usize, Span)> = HashMap::new();
    for (fi, file) in cx.files.iter().enumerate() {
        for item in &file.items {
            let Item::Default(d) = item else { continue };
            let p = d.protocol.as_str();
            if let Some((pfi, pspan)) = seen.get(&d.protocol).copied() {
                let at = cx.at(pfi, pspan);
                cx.error(
                    fi,
                    d.span,
                    format!("duplicate `default {p}` (first at {at})"),
                );
            } else {
                seen.insert(d.protocol, (fi, d.span));
            }
            let who = format!("the {p} default");
            let caps = Scope::default_outcome();
            check_outcome(
                cx, fi, &who, d.protocol, &caps, &d.outcome, targets, ids, used,
            );
        }
    }
}
