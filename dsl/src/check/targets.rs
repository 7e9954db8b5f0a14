//! Target declarations: names, URLs and options.

use std::collections::{HashMap, HashSet};

use super::suggest::suggest;
use super::Ctx;
use crate::ast::*;
use crate::target::{Target, TargetId, TargetKind, TargetOptions};

const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];
const MONGO_SCHEMES: &[&str] = &["mongodb://", "mongodb+srv://"];

pub(super) type TargetDecls = HashMap<String, (usize, Span)>;

pub(super) fn check_targets(
    cx: &mut Ctx<'_>,
) -> (Vec<Target>, HashMap<String, TargetId>, TargetDecls) {
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
