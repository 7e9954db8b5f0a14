//! Outcomes of rules and defaults: the targets they name, the options of
//! each action, key and namespace templates.

use std::collections::{HashMap, HashSet};

use super::suggest::suggest;
use super::{kind_fits, Ctx};
use crate::ast::*;
use crate::target::{Target, TargetId, TargetKind};
use crate::template::{split, RawPiece};

/// What a rule's conditions tell its actions: for each key pattern, its
/// capture count and names (what a key template may refer to), and the
/// source dbs it matches. `None`: no such condition (always for defaults).
pub(super) struct Scope {
    pub(super) patterns: Option<Vec<(usize, Vec<String>)>>,
    /// Merged, sorted ranges of a redis rule's `db` condition.
    pub(super) dbs: Option<Vec<(u64, u64)>>,
    /// A rule (which could get conditions), not a default.
    pub(super) rule: bool,
}

impl Scope {
    /// A default: no conditions, and none can be added.
    pub(super) fn default_outcome() -> Self {
        Scope {
            patterns: None,
            dbs: None,
            rule: false,
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_outcome(
    cx: &mut Ctx<'_>,
    fi: usize,
    who: &str,
    protocol: Protocol,
    caps: &Scope,
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
                if kind == TargetKind::RedisCluster {
                    check_cluster_action(cx, fi, who, caps, a);
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

/// An action into a `redis-cluster` target, which has only db 0: whatever
/// the rule matches must visibly land in db 0.
///
/// - `db N`, N ≠ 0: an error.
/// - no `db`, and the rule may match a db other than 0: an error (the
///   operation would be refused at the target), saying how to decide.
/// - `db 0` while the rule matches several dbs, without `{db}` in the key
///   template: a warning, their keys merge.
/// - a constant hash tag on every key (`prefix "{x}"`, `key "{{x}}..."`):
///   a warning, the rule uses one slot (one node) of the cluster.
fn check_cluster_action(cx: &mut Ctx<'_>, fi: usize, who: &str, scope: &Scope, a: &ActionAst) {
    let tname = &a.target.node;
    let whole = [(0, u64::from(u32::MAX))];
    let dbs: &[(u64, u64)] = scope.dbs.as_deref().unwrap_or(&whole);
    match a.db.as_ref().map(|d| (&d.node, d.span)) {
        Some((DbValue::Number(n), span)) if *n != 0 => cx.error(
            fi,
            span,
            format!(
                "redis-cluster target `{tname}` has only db 0: `db {n}` cannot be written there"
            ),
        ),
        Some((DbValue::Number(_), span)) => {
            let several = dbs.len() > 1 || dbs.first().is_some_and(|(lo, hi)| lo != hi);
            let keeps_apart = a.key.as_ref().is_some_and(|k| {
                split(&k.node)
                    .is_ok_and(|p| p.iter().any(|r| matches!(r, RawPiece::Ref(r) if r == "db")))
            });
            if several && !keeps_apart {
                cx.warning(
                    fi,
                    span,
                    format!(
                        "{who} writes keys of {} into db 0 of redis-cluster target `{tname}`, where they merge (a key of one db overwrites the same key of another); `key \"{{db}}:{{0}}\"` keeps them apart",
                        if dbs == whole {
                            "every db".to_string()
                        } else {
                            format!("db {}", show_dbs(dbs))
                        }
                    ),
                );
            }
        }
        // A quoted name is the mongo form, an error reported already.
        Some((DbValue::Name(_), _)) => {}
        None => {
            let others: Vec<(u64, u64)> = dbs
                .iter()
                .filter_map(|&(lo, hi)| (hi > 0).then_some((lo.max(1), hi)))
                .collect();
            if !others.is_empty() {
                let fix = if scope.rule {
                    " or add `db 0` to the rule"
                } else {
                    ""
                };
                cx.error(
                    fi,
                    a.target.span,
                    format!(
                        "{who} may route redis db {} into redis-cluster target `{tname}`, which has only db 0: write `{tname} db 0` (dbs merge; `key \"{{db}}:{{0}}\"` keeps them apart){fix}",
                        show_dbs(&others)
                    ),
                );
            }
        }
    }
    if let Some(tag) = constant_tag(a) {
        cx.warning(
            fi,
            a.key.as_ref().or(a.prefix.as_ref()).map_or(a.target.span, |k| k.span),
            format!(
                "every key {who} sends to redis-cluster target `{tname}` has the hash tag `{{{tag}}}`: they all land in one slot, on one node"
            ),
        );
    }
}

/// Source dbs as written: `1..15`, `3, 5..7`, `1 and above`.
fn show_dbs(dbs: &[(u64, u64)]) -> String {
    let max = u64::from(u32::MAX);
    let parts: Vec<String> = dbs
        .iter()
        .map(|&(lo, hi)| match (lo, hi) {
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, hi) if hi == max => format!("{lo} and above"),
            (lo, hi) => format!("{lo}..{hi}"),
        })
        .collect();
    parts.join(", ")
}

/// The hash tag every key rewritten by `a` starts with, when the prefix,
/// or the literal text before a key template's first reference, holds a
/// whole non-empty `{tag}`.
fn constant_tag(a: &ActionAst) -> Option<String> {
    let lead = match (&a.prefix, &a.key) {
        (Some(p), _) => p.node.clone(),
        (None, Some(k)) => match split(&k.node).ok()?.first()? {
            RawPiece::Lit(l) => l.clone(),
            RawPiece::Ref(_) => return None,
        },
        (None, None) => return None,
    };
    let open = lead.find('{')?;
    let len = lead[open + 1..].find('}')?;
    (len > 0).then(|| lead[open + 1..open + 1 + len].to_string())
}

fn check_key_template(cx: &mut Ctx<'_>, fi: usize, who: &str, caps: &Scope, t: &Spanned<String>) {
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
