//! Target declarations: names, URLs and options.

use std::collections::{HashMap, HashSet};

use super::suggest::suggest;
use super::Ctx;
use crate::ast::*;
use crate::redis_url;
use crate::target::{split_urls, Target, TargetId, TargetKind, TargetOptions};

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
                TargetKind::RedisCluster | TargetKind::RedisSentinel | TargetKind::File => &[][..],
            };
            if t.kind.is_redis() && split_urls(url).iter().any(|u| u.starts_with("rediss://")) {
                // The server refuses it when it loads the set: say so here.
                cx.error(
                    fi,
                    t.url.span,
                    format!(
                        "target `{name}`: TLS to Redis (rediss://) is not supported yet; use \
                         redis:// on a trusted network, or a TLS tunnel (stunnel, spiped) \
                         with redis:// to its local end"
                    ),
                );
            }
            if url.trim().is_empty() {
                cx.error(fi, t.url.span, format!("target `{name}` has an empty URL"));
            } else if matches!(t.kind, TargetKind::RedisCluster | TargetKind::RedisSentinel) {
                check_url_list(cx, fi, t);
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

/// The seed list of a `redis-cluster` / `redis-sentinel` target: each
/// entry a `redis://` or `rediss://` URL, all with the same credentials,
/// and no db for a cluster.
fn check_url_list(cx: &mut Ctx<'_>, fi: usize, t: &TargetDecl) {
    let (name, kind, span) = (&t.name.node, t.kind, t.url.span);
    let entries = split_urls(&t.url.node);
    if entries.is_empty() {
        cx.error(
            fi,
            span,
            format!("{kind} target `{name}` has no URL in its list (write \"redis://host:port,redis://host:port\")"),
        );
    }
    let mut first: Option<(usize, redis_url::RedisUrl)> = None;
    for (i, entry) in entries.into_iter().enumerate() {
        let u = match redis_url::parse(entry) {
            Ok(u) => u,
            Err(e) => {
                cx.error(
                    fi,
                    span,
                    format!(
                        "URL {} of {kind} target `{name}` ({}): {e}",
                        i + 1,
                        shown(entry)
                    ),
                );
                continue;
            }
        };
        if let (TargetKind::RedisCluster, Some(db)) = (kind, u.db) {
            cx.error(
                fi,
                span,
                format!(
                    "URL {} of {kind} target `{name}` ({}:{}) names db {db}; a cluster has only db 0: remove `/{db}`",
                    i + 1,
                    u.host,
                    u.port
                ),
            );
        }
        match &first {
            None => first = Some((i, u)),
            Some((j, f)) if (&f.user, &f.password) != (&u.user, &u.password) => cx.error(
                fi,
                span,
                format!(
                    "URLs {} ({}:{}) and {} ({}:{}) of {kind} target `{name}` have different users or passwords; every node is reached with the same credentials",
                    j + 1,
                    f.host,
                    f.port,
                    i + 1,
                    u.host,
                    u.port
                ),
            ),
            Some(_) => {}
        }
    }
}

/// A URL in a message, its password left out.
fn shown(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}…@{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_string(),
    }
}

const REDIS_KINDS: &[TargetKind] = &[
    TargetKind::Redis,
    TargetKind::RedisCluster,
    TargetKind::RedisSentinel,
];
const NET_KINDS: &[TargetKind] = &[
    TargetKind::Redis,
    TargetKind::RedisCluster,
    TargetKind::RedisSentinel,
    TargetKind::Mongo,
];

/// Every option and the kinds it applies to, in the order the docs list
/// them.
const OPTIONS: &[(&str, &[TargetKind])] = &[
    ("pool", NET_KINDS),
    ("timeout", NET_KINDS),
    ("connect_timeout", NET_KINDS),
    ("replicas", REDIS_KINDS),
    ("replica_timeout", REDIS_KINDS),
    ("split_transactions", &[TargetKind::RedisCluster]),
    (
        "merge_sets",
        &[TargetKind::Redis, TargetKind::RedisSentinel],
    ),
    ("master", &[TargetKind::RedisSentinel]),
    ("sentinel_user", &[TargetKind::RedisSentinel]),
    ("sentinel_password", &[TargetKind::RedisSentinel]),
    ("fsync", &[TargetKind::File]),
];

/// "redis, redis-cluster and mongo".
fn kinds_list(kinds: &[TargetKind]) -> String {
    let words: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

fn check_options(cx: &mut Ctx<'_>, fi: usize, t: &TargetDecl) -> TargetOptions {
    let mut o = TargetOptions::default();
    let mut seen = HashSet::new();
    let allowed: Vec<&str> = OPTIONS
        .iter()
        .filter(|(_, kinds)| kinds.contains(&t.kind))
        .map(|(n, _)| *n)
        .collect();
    let mut spans: HashMap<&str, Span> = HashMap::new();
    for opt in &t.options {
        let name = opt.name.node.as_str();
        if !seen.insert(name) {
            cx.error(fi, opt.name.span, format!("option `{name}` is given twice"));
            continue;
        }
        if !allowed.contains(&name) {
            let msg = match OPTIONS.iter().find(|(n, _)| *n == name) {
                Some((_, kinds)) => format!(
                    "option `{name}` does not apply to {} targets (only to {} targets)",
                    t.kind,
                    kinds_list(kinds)
                ),
                None => format!(
                    "unknown option `{name}` for a {} target{}; known: {}",
                    t.kind,
                    suggest(name, allowed.iter().copied()),
                    allowed.join(", ")
                ),
            };
            cx.error(fi, opt.name.span, msg);
            continue;
        }
        spans.insert(name, opt.value.span);
        let vspan = opt.value.span;
        let string = |v: &OptionValue| match v {
            OptionValue::Str(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        match (name, &opt.value.node) {
            ("pool", OptionValue::Number(n)) if (1..=1024).contains(n) => {
                o.pool = u32::try_from(*n).ok();
            }
            ("pool", _) => cx.error(fi, vspan, "`pool` must be a number from 1 to 1024".into()),
            ("timeout", OptionValue::Duration(d)) if !d.is_zero() => o.timeout = Some(*d),
            ("connect_timeout", OptionValue::Duration(d)) if !d.is_zero() => {
                o.connect_timeout = Some(*d)
            }
            ("replica_timeout", OptionValue::Duration(d)) if !d.is_zero() => {
                o.replica_timeout = Some(*d)
            }
            ("timeout" | "connect_timeout" | "replica_timeout", _) => cx.error(
                fi,
                vspan,
                format!("`{name}` must be a non-zero duration such as `500ms` or `2s`"),
            ),
            ("replicas", OptionValue::Number(n))
                if *n <= u64::from(TargetOptions::MAX_REPLICAS) =>
            {
                o.replicas = u32::try_from(*n).ok();
            }
            ("replicas", _) => cx.error(
                fi,
                vspan,
                format!(
                    "`replicas` must be a number from 0 to {} (the replicas each write waits for)",
                    TargetOptions::MAX_REPLICAS
                ),
            ),
            ("fsync" | "split_transactions" | "merge_sets", OptionValue::Bool(b)) => match name {
                "fsync" => o.fsync = Some(*b),
                "split_transactions" => o.split_transactions = Some(*b),
                _ => o.merge_sets = Some(*b),
            },
            ("fsync" | "split_transactions" | "merge_sets", _) => {
                cx.error(fi, vspan, format!("`{name}` must be `true` or `false`"))
            }
            ("master" | "sentinel_user" | "sentinel_password", v) => match (name, string(v)) {
                ("master", Some(s)) => o.master = Some(s),
                ("sentinel_user", Some(s)) => o.sentinel_user = Some(s),
                (_, Some(s)) => o.sentinel_password = Some(s),
                (_, None) => cx.error(
                    fi,
                    vspan,
                    format!("`{name}` must be a non-empty quoted string"),
                ),
            },
            _ => {}
        }
    }
    if t.kind == TargetKind::RedisSentinel && !seen.contains("master") {
        cx.error(
            fi,
            t.name.span,
            format!(
                "redis-sentinel target `{}` needs `master`, the name the sentinels monitor: `{{ master = \"mymaster\" }}`",
                t.name.node
            ),
        );
    }
    if let (Some(span), None) = (spans.get("sentinel_user"), &o.sentinel_password) {
        cx.error(
            fi,
            *span,
            "`sentinel_user` needs `sentinel_password` (without them the sentinels get the URLs' user and password)".into(),
        );
    }
    if t.kind.is_redis() {
        check_replica_timeout(cx, fi, t, &o, &spans);
    }
    o
}

/// `replica_timeout` (given, or its default when replicas are waited for)
/// must be below `timeout` (given, or the Redis default): a `WAIT` that
/// outlasts the reply timeout would be cut off as a dead connection.
fn check_replica_timeout(
    cx: &mut Ctx<'_>,
    fi: usize,
    t: &TargetDecl,
    o: &TargetOptions,
    spans: &HashMap<&str, Span>,
) {
    let replicas = o.replicas.unwrap_or_else(|| t.kind.default_replicas());
    if o.replica_timeout.is_none() && replicas == 0 {
        return;
    }
    let wait = o
        .replica_timeout
        .unwrap_or(TargetOptions::DEFAULT_REPLICA_TIMEOUT);
    let timeout = o.timeout.unwrap_or(TargetOptions::DEFAULT_REDIS_TIMEOUT);
    if wait < timeout {
        return;
    }
    let show = |d| humantime::format_duration(d).to_string();
    let (span, msg) = match spans.get("replica_timeout") {
        Some(span) => (
            *span,
            format!(
                "`replica_timeout` ({}) must be shorter than `timeout` ({})",
                show(wait),
                show(timeout)
            ),
        ),
        None => (
            spans.get("timeout").copied().unwrap_or(t.name.span),
            format!(
                "`timeout` ({}) must be longer than `replica_timeout` (default {}, since {} target `{}` waits for {replicas} replica{}): raise `timeout` or set a shorter `replica_timeout`",
                show(timeout),
                show(wait),
                t.kind,
                t.name.node,
                if replicas == 1 { "" } else { "s" }
            ),
        ),
    };
    cx.error(fi, span, msg);
}
