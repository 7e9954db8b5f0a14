//! Semantic checks over all files of a rule set at once. Every problem is
//! collected; nothing stops at the first.
//!
//! Errors: unknown or duplicate names, values out of range, invalid globs,
//! regexes and templates, options that do not fit the target, rules and
//! targets of different protocols, repeated conditions, rules that can never
//! match because an earlier rule catches everything they would, tests that
//! name unknown targets or mix protocols.
//!
//! Warnings: unused targets, rules that route dangerous commands or mongo
//! `drop`, unknown Redis command names, duplicate test names.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::commands::{self, Group};
use crate::diagnostic::{Diagnostic, Severity};
use crate::matcher::MongoOpKind;
use crate::pattern::{analyze, covers, Analyzed, PatternSrc};
use crate::target::{Target, TargetId, TargetKind, TargetOptions};
use crate::template::{split, RawPiece};

/// What the checker found, and the resolved targets for the compiler.
#[derive(Debug, Default)]
pub struct Checked {
    /// Errors and warnings, in file order then position.
    pub diagnostics: Vec<Diagnostic>,
    pub targets: Vec<Target>,
    pub target_ids: HashMap<String, TargetId>,
}

struct Ctx<'a> {
    files: &'a [File],
    diags: Vec<(usize, Diagnostic)>,
}

impl<'a> Ctx<'a> {
    fn push(&mut self, fi: usize, span: Span, severity: Severity, message: String) {
        let file = &self.files[fi];
        let d = Diagnostic {
            severity,
            file: file.path.clone(),
            line: span.line,
            col: span.col,
            message,
            source_line: file.line_text(span.line).to_string(),
        };
        self.diags.push((fi, d));
    }
    fn error(&mut self, fi: usize, span: Span, message: String) {
        self.push(fi, span, Severity::Error, message);
    }
    fn warning(&mut self, fi: usize, span: Span, message: String) {
        self.push(fi, span, Severity::Warning, message);
    }
    fn error_count(&self) -> usize {
        self.diags.iter().filter(|(_, d)| d.is_error()).count()
    }
    fn at(&self, fi: usize, span: Span) -> String {
        format!("{}:{}", self.files[fi].path.display(), span.line)
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `name`, if it is close enough to be a typo.
fn closest<'n>(name: &str, known: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    known
        .map(|k| (levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// " (did you mean `x`?)" when a known name is close.
fn suggest<'n>(name: &str, known: impl Iterator<Item = &'n str>) -> String {
    closest(name, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// A union of inclusive ranges, merged and sorted.
fn merge(ranges: &[NumRange]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.iter().map(|r| (r.lo, r.hi)).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn ranges_cover(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    b.iter()
        .all(|&(lo, hi)| a.iter().any(|&(alo, ahi)| alo <= lo && hi <= ahi))
}

/// A rule's command condition, expanded for the shadowing check.
#[derive(Default)]
struct CmdSet {
    /// No condition, or `@all`.
    all: bool,
    names: HashSet<String>,
    /// Dangerous commands named explicitly (by name or `@dangerous`).
    explicit_dangerous: HashSet<String>,
    /// Dangerous commands matched at all (named, or in a group, or `all`).
    dangerous: HashSet<String>,
}

fn cmd_set(cmds: &Option<Vec<Spanned<CmdItem>>>) -> CmdSet {
    let mut set = cmd_set_names(cmds);
    set.dangerous = if set.all {
        Group::Dangerous.commands().map(String::from).collect()
    } else {
        set.names
            .iter()
            .filter(|n| commands::is_dangerous(n.as_bytes()))
            .cloned()
            .collect()
    };
    set
}

fn cmd_set_names(cmds: &Option<Vec<Spanned<CmdItem>>>) -> CmdSet {
    let Some(items) = cmds else {
        return CmdSet {
            all: true,
            ..CmdSet::default()
        };
    };
    let mut set = CmdSet::default();
    for it in items {
        match &it.node {
            CmdItem::Name(n) => {
                if commands::is_dangerous(n.as_bytes()) {
                    set.explicit_dangerous.insert(n.clone());
                }
                set.names.insert(n.clone());
            }
            CmdItem::Group(g) => match Group::from_name(g) {
                Some(Group::All) => set.all = true,
                Some(group) => {
                    set.names.extend(group.commands().map(String::from));
                    if group == Group::Dangerous {
                        set.explicit_dangerous
                            .extend(group.commands().map(String::from));
                    }
                }
                None => {}
            },
        }
    }
    set
}

/// A rule reduced to what the shadowing check compares.
struct Shape {
    fi: usize,
    name: String,
    span: Span,
    drop: bool,
    kind: ShapeKind,
}

enum ShapeKind {
    Redis {
        ports: Option<Vec<(u64, u64)>>,
        dbs: Option<Vec<(u64, u64)>>,
        cmds: CmdSet,
        keys: Option<Vec<(PatternSrc, Analyzed)>>,
    },
    Mongo {
        dbs: Option<Vec<(PatternSrc, Analyzed)>>,
        colls: Option<Vec<(PatternSrc, Analyzed)>>,
        ops: u8,
    },
}

fn pats_cover(
    a: &Option<Vec<(PatternSrc, Analyzed)>>,
    b: &Option<Vec<(PatternSrc, Analyzed)>>,
) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b
            .iter()
            .all(|(bs, ba)| a.iter().any(|(as_, aa)| covers(as_, aa, bs, ba))),
    }
}

fn opt_ranges_cover(a: &Option<Vec<(u64, u64)>>, b: &Option<Vec<(u64, u64)>>, full: u64) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(a), None) => ranges_cover(a, &[(0, full)]),
        (Some(a), Some(b)) => ranges_cover(a, b),
    }
}

/// True if rule `a`, placed before `b`, takes every operation `b` would.
fn shadows(a: &Shape, b: &Shape) -> bool {
    match (&a.kind, &b.kind) {
        (
            ShapeKind::Redis {
                ports: ap,
                dbs: ad,
                cmds: ac,
                keys: ak,
            },
            ShapeKind::Redis {
                ports: bp,
                dbs: bd,
                cmds: bc,
                keys: bk,
            },
        ) => {
            // Cheapest comparisons first.
            opt_ranges_cover(ap, bp, u64::from(u16::MAX))
                && opt_ranges_cover(ad, bd, u64::from(u32::MAX))
                && pats_cover(ak, bk)
                && (ac.all || (!bc.all && bc.names.is_subset(&ac.names)))
                // A routing rule passes over dangerous commands it does not
                // name: a later rule that names them, or drops them, still
                // gets them.
                && (a.drop
                    || if b.drop {
                        bc.dangerous.is_subset(&ac.explicit_dangerous)
                    } else {
                        bc.explicit_dangerous.is_subset(&ac.explicit_dangerous)
                    })
        }
        (
            ShapeKind::Mongo {
                dbs: ad,
                colls: ac,
                ops: ao,
            },
            ShapeKind::Mongo {
                dbs: bd,
                colls: bc,
                ops: bo,
            },
        ) => bo & !ao == 0 && pats_cover(ad, bd) && pats_cover(ac, bc),
        _ => false,
    }
}

const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];
const MONGO_SCHEMES: &[&str] = &["mongodb://", "mongodb+srv://"];

/// Checks all files. The order of `files` is the matching order.
pub fn check(files: &[File]) -> Checked {
    let mut cx = Ctx {
        files,
        diags: Vec::new(),
    };
    let (targets, target_ids, target_decl) = check_targets(&mut cx);
    let mut used: HashSet<String> = HashSet::new();
    check_rules(&mut cx, &targets, &target_ids, &mut used);
    check_defaults(&mut cx, &targets, &target_ids, &mut used);
    check_tests(&mut cx, &targets, &target_ids);

    for (name, (fi, span)) in &target_decl {
        if !used.contains(name) {
            cx.warning(
                *fi,
                *span,
                format!("target `{name}` is never used by a rule or a default"),
            );
        }
    }

    let mut diags = cx.diags;
    diags.sort_by(|(fa, a), (fb, b)| (fa, a.line, a.col).cmp(&(fb, b.line, b.col)));
    Checked {
        diagnostics: diags.into_iter().map(|(_, d)| d).collect(),
        targets,
        target_ids,
    }
}

type TargetDecls = HashMap<String, (usize, Span)>;

fn check_targets(cx: &mut Ctx<'_>) -> (Vec<Target>, HashMap<String, TargetId>, TargetDecls) {
    let mut targets = Vec::new();
    let mut ids = HashMap::new();
    let mut decls: TargetDecls = HashMap::new();
    for (fi, file) in cx.files.iter().enumerate() {
        for item in &file.items {
            let Item::Target(t) = item else { continue };
            let name = &t.name.node;
            if let Some((pfi, pspan)) = decls.get(name).copied() {
                let at = cx.at(pfi, pspan);
                cx.error(
                    fi,
                    t.name.span,
                    format!("duplicate target `{name}` (first declared at {at})"),
                );
                continue;
            }
            if name == "drop" {
                cx.error(
                    fi,
                    t.name.span,
                    "`drop` is a reserved word and cannot name a target".into(),
                );
            }
            let url = &t.url.node;
            let schemes = match t.kind {
                TargetKind::Redis => REDIS_SCHEMES,
                TargetKind::Mongo => MONGO_SCHEMES,
                TargetKind::File => &[][..],
            };
            if url.trim().is_empty() {
                cx.error(fi, t.url.span, format!("target `{name}` has an empty URL"));
            } else if !schemes.is_empty() && !schemes.iter().any(|s| url.starts_with(s)) {
                cx.error(
                    fi,
                    t.url.span,
                    format!(
                        "a {} target's URL must start with {}",
                        t.kind,
                        schemes.join(" or ")
                    ),
                );
            }
            let options = check_options(cx, fi, t);
            let Ok(id) = u16::try_from(targets.len()) else {
                cx.error(fi, t.name.span, "too many targets (at most 65535)".into());
                continue;
            };
            decls.insert(name.clone(), (fi, t.name.span));
            ids.insert(name.clone(), TargetId(id));
            targets.push(Target {
                name: name.clone(),
                kind: t.kind,
                url: url.clone(),
                options,
            });
        }
    }
    (targets, ids, decls)
}

fn check_options(cx: &mut Ctx<'_>, fi: usize, t: &TargetDecl) -> TargetOptions {
    let mut o = TargetOptions::default();
    let mut seen = HashSet::new();
    const NET: &[&str] = &["pool", "timeout", "connect_timeout"];
    const FILE: &[&str] = &["fsync"];
    for opt in &t.options {
        let name = opt.name.node.as_str();
        if !seen.insert(name) {
            cx.error(fi, opt.name.span, format!("option `{name}` is given twice"));
            continue;
        }
        let allowed = if t.kind == TargetKind::File {
            FILE
        } else {
            NET
        };
        if !allowed.contains(&name) {
            let known = NET.contains(&name) || FILE.contains(&name);
            let msg = if known {
                format!("option `{name}` does not apply to {} targets", t.kind)
            } else {
                format!(
                    "unknown option `{name}` for a {} target{}; known: {}",
                    t.kind,
                    suggest(name, allowed.iter().copied()),
                    allowed.join(", ")
                )
            };
            cx.error(fi, opt.name.span, msg);
            continue;
        }
        let vspan = opt.value.span;
        match (name, &opt.value.node) {
            ("pool", OptionValue::Number(n)) if (1..=1024).contains(n) => {
                o.pool = u32::try_from(*n).ok();
            }
            ("pool", _) => cx.error(fi, vspan, "`pool` must be a number from 1 to 1024".into()),
            ("timeout", OptionValue::Duration(d)) if !d.is_zero() => o.timeout = Some(*d),
            ("connect_timeout", OptionValue::Duration(d)) if !d.is_zero() => {
                o.connect_timeout = Some(*d)
            }
            ("timeout" | "connect_timeout", _) => cx.error(
                fi,
                vspan,
                format!("`{name}` must be a non-zero duration such as `500ms` or `2s`"),
            ),
            ("fsync", OptionValue::Bool(b)) => o.fsync = Some(*b),
            ("fsync", _) => cx.error(fi, vspan, "`fsync` must be `true` or `false`".into()),
            _ => {}
        }
    }
    o
}

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

/// What a key template may refer to: for each key pattern, its capture count
/// and names. `None` when the rule has no key condition (or for defaults).
struct KeyCaptures {
    patterns: Option<Vec<(usize, Vec<String>)>>,
}

fn check_rules(
    cx: &mut Ctx<'_>,
    targets: &[Target],
    ids: &HashMap<String, TargetId>,
    used: &mut HashSet<String>,
) {
    let mut names: HashMap<String, (usize, Span)> = HashMap::new();
    let mut shapes: Vec<Shape> = Vec::new();
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
                    let caps = KeyCaptures {
                        patterns: keys.as_ref().map(|k| {
                            k.iter()
                                .map(|(_, a)| (a.captures, a.names.clone()))
                                .collect()
                        }),
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
                        KeyCaptures { patterns: None },
                    )
                }
            };
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

#[allow(clippy::too_many_arguments)]
fn check_outcome(
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
        let fits = matches!(
            (protocol, kind),
            (Protocol::Redis, TargetKind::Redis | TargetKind::File)
                | (Protocol::Mongo, TargetKind::Mongo | TargetKind::File)
        );
        if !fits {
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
        if r == "db" || r == "coll" {
            cx.error(
                fi,
                t.span,
                format!("`{{{r}}}` is for mongo names; key templates use {{0}} (the whole key), {{1}}, {{2}}, ... or regex group names"),
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

fn check_defaults(
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
            let caps = KeyCaptures { patterns: None };
            check_outcome(
                cx, fi, &who, d.protocol, &caps, &d.outcome, targets, ids, used,
            );
        }
    }
}

fn check_tests(cx: &mut Ctx<'_>, targets: &[Target], ids: &HashMap<String, TargetId>) {
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
                        let fits = matches!(
                            (protocol, kind),
                            (Protocol::Redis, TargetKind::Redis | TargetKind::File)
                                | (Protocol::Mongo, TargetKind::Mongo | TargetKind::File)
                        );
                        if !fits {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("replcia", ["replica", "docs"].into_iter()),
            " (did you mean `replica`?)"
        );
        assert_eq!(suggest("zzz", ["replica"].into_iter()), "");
    }

    #[test]
    fn merging_ranges() {
        let r = |lo, hi| NumRange { lo, hi };
        assert_eq!(merge(&[r(5, 9), r(1, 3), r(4, 4)]), vec![(1, 9)]);
        assert!(ranges_cover(&[(1, 9)], &[(2, 3), (9, 9)]));
        assert!(!ranges_cover(&[(1, 9)], &[(2, 10)]));
    }
}
