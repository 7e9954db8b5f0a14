//! Outcomes of rules and defaults: the targets they name, the options of
//! each action, key and namespace templates.

use std::collections::{HashMap, HashSet};

use super::suggest::suggest;
use super::{kind_fits, Ctx};
use crate::ast::*;
use crate::target::{Target, TargetId};
use crate::template::{split, RawPiece};

/// What a key template may refer to: for each key pattern, its capture count
/// and names. `None` when the rule has no key condition (or for defaults).
pub(super) struct KeyCaptures {
    pub(super) patterns: Option<Vec<(usize, Vec<String>)>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_outcome(
    cx: &mut Ctx<'_>,
    fi: usize,
    who: &str,
    protocol: Protocol,
    caps: &KeyCaptures,
    outcome: &Spanned<OutcomeAst>,
    targets: &[Target],
    ids: &HashMap<String, TargetId>,
    used: &mut HashSet<String>,
) {
    let OutcomeAst::Route(actions) = &outcome.node else {
        return;
    };
    for a in actions {
        let tname = &a.target.node;
        used.insert(tname.clone());
        for rep in &a.repeated {
            cx.error(
                fi,
                rep.span,
                format!("`{}` is given twice for target `{tname}`", rep.node),
            );
        }
        let Some(id) = ids.get(tname) else {
            cx.error(
                fi,
                a.target.span,
                format!(
                    "unknown target `{tname}`{}",
                    suggest(tname, targets.iter().map(|t| t.name.as_str()))
                ),
            );
            continue;
        };
        let kind = targets[usize::from(id.0)].kind;
        if !kind_fits(protocol, kind) {
            cx.error(
                fi,
                a.target.span,
                format!(
                    "{who} handles {} operations but target `{tname}` is a {kind} target",
                    protocol.as_str()
                ),
            );
        }
        match protocol {
            Protocol::Redis => {
                if let Some(db) = &a.db {
                    match db.node {
                        DbValue::Number(n) if n > u64::from(u32::MAX) => cx.error(
                            fi,
                            db.span,
                            format!("db {n} is out of range (0 to {})", u32::MAX),
                        ),
                        DbValue::Number(_) => {}
                        DbValue::Name(_) => cx.error(
                            fi,
                            db.span,
                            "a redis db is a number, e.g. `db 2` (quoted names are for mongo)"
                                .into(),
                        ),
                    }
                }
                if let Some(c) = &a.coll {
                    cx.error(fi, c.span, "`coll` only applies to mongo operations".into());
                }
                if let (Some(_), Some(p)) = (&a.key, &a.prefix) {
                    cx.error(
                        fi,
                        p.span,
                        format!("target `{tname}` has both `key` and `prefix`; use one (`key \"p{{0}}\"` is a prefix)"),
                    );
                }
                if let Some(k) = &a.key {
                    check_key_template(cx, fi, who, caps, k);
                }
            }
            Protocol::Mongo => {
                if let Some(k) = a.key.as_ref().or(a.prefix.as_ref()) {
                    cx.error(
                        fi,
                        k.span,
                        "`key` and `prefix` only apply to redis operations".into(),
                    );
                }
                if let Some(db) = &a.db {
                    match &db.node {
                        DbValue::Number(_) => cx.error(
                            fi,
                            db.span,
                            "a mongo db is a quoted name, e.g. `db \"app_copy\"`".into(),
                        ),
                        DbValue::Name(t) => check_ns_template(cx, fi, "db", t, db.span),
                    }
                }
                if let Some(c) = &a.coll {
                    check_ns_template(cx, fi, "coll", &c.node, c.span);
                }
            }
        }
    }
}

fn check_key_template(
    cx: &mut Ctx<'_>,
    fi: usize,
    who: &str,
    caps: &KeyCaptures,
    t: &Spanned<String>,
) {
    let pieces = match split(&t.node) {
        Ok(p) => p,
        Err(e) => return cx.error(fi, t.span, e.to_string()),
    };
    for p in pieces {
        let RawPiece::Ref(r) = p else { continue };
        if r == "db" {
            // The source db number.
            continue;
        }
        if r == "coll" {
            cx.error(
                fi,
                t.span,
                format!("`{{{r}}}` is for mongo names; key templates use {{0}} (the whole key), {{1}}, {{2}}, ..., regex group names or {{db}} (the source db)"),
            );
            continue;
        }
        if let Ok(n) = r.parse::<usize>() {
            if n == 0 {
                continue;
            }
            match &caps.patterns {
                None => cx.error(
                    fi,
                    t.span,
                    format!("`{{{n}}}` refers to a capture, but {who} has no key pattern (only {{0}}, the whole key, is available)"),
                ),
                Some(pats) => {
                    let min = pats.iter().map(|(c, _)| *c).min().unwrap_or(0);
                    if n > min {
                        cx.error(
                            fi,
                            t.span,
                            format!("`{{{n}}}` refers to capture {n}, but a key pattern of {who} has only {min}"),
                        );
                    }
                }
            }
        } else {
            let ok = caps.patterns.as_ref().is_some_and(|pats| {
                !pats.is_empty() && pats.iter().all(|(_, names)| names.contains(&r))
            });
            if !ok {
                cx.error(
                    fi,
                    t.span,
                    format!("`{{{r}}}` is not a named group of every key pattern of {who}"),
                );
            }
        }
    }
}

fn check_ns_template(cx: &mut Ctx<'_>, fi: usize, what: &str, t: &str, span: Span) {
    match split(t) {
        Err(e) => cx.error(fi, span, e.to_string()),
        Ok(pieces) => {
            if pieces.is_empty() {
                cx.error(fi, span, format!("the new {what} name is empty"));
            }
            for p in pieces {
                if let RawPiece::Ref(r) = p {
                    if r != "db" && r != "coll" {
                        cx.error(
                            fi,
                            span,
                            format!("`{{{r}}}` is not available in a mongo name; use {{db}} or {{coll}}"),
                        );
                    }
                }
            }
        }
    }
}
