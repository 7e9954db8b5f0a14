//! The `rmt.ini` of the system syncs replaces ("the original format"), and
//! its translation into syncs' own server configuration and rules.
//!
//! ```ini
//! [listen]
//! port = 3392                                  ; every address, this port
//! [wl]
//! ip = 127.0.0.1,192.168.1.2                   ; the only proxies accepted
//! [mongo]
//! host = mongodb://192.168.1.7:27017           ; every Mongo write, same db and collection
//! [redis0]                                     ; any section whose name contains "redis"
//! host = redis://127.0.0.1:6379/1?pwd=secret   ; frames for (6379, 1) go to this host ...
//! map = 6379/3                                 ; ... at port 6379, db 3 (default: the URL's)
//! ```
//!
//! [`translate`] is the one translation. `sync_server` started with such a
//! file runs it through `translate` (the settings in
//! `ServerConfig::load`, the rules at every load and reload in
//! [`load_rules`]); `syncs-check --migrate` writes the same output as files
//! ([`migrate`]). So a server on the original file and one on the migrated
//! files route alike, and `--explain` and the rules' tests see the same
//! rules.
//!
//! What becomes what:
//! - `[listen] port` → `listen = 0.0.0.0:<port>`; `[wl] ip` → `allow`;
//!   `plaintext = yes`, as the original ran (its allowlist protected it).
//! - each route → `rule <section>: redis port P db D -> <target> db D'`,
//!   with one target per (host, port, password) routes send to; the
//!   password goes into the target's URL (`redis://:pwd@host:port`), so the
//!   applier sends AUTH as the original did.
//! - a (port, db) no section names → `default redis -> dead-letter "..."`
//!   (the original dropped it with a log line).
//! - `[mongo] host` → `default mongo -> mongo` (same db and collection).
//! - one test per route, one for the dead-letter default, one for a
//!   dangerous command, one for a Mongo drop (not replicated either) and
//!   one for Mongo, so `syncs-check` proves the translation.
//!
//! Settings the original ignored (other sections, other keys, a redis
//! section without `host`) are ignored here too, with a warning.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ini::{Ini, ParseOption};
use syncs_dsl::Diagnostic;

use crate::config::LoadedRules;
use crate::security::allow::Allowlist;

/// Where `--migrate` writes the rules, under its `--out` directory.
pub const RULES_DIR: &str = "rules";
/// The rules file it writes there.
pub const RULES_FILE: &str = "migrated.sync";
/// The server configuration it writes in `--out`.
pub const CONFIG_FILE: &str = "rmt.ini";

/// The reason written to the dead-letter file for a Redis operation whose
/// (port, db) no section names.
pub const UNROUTED_REASON: &str =
    "no [redis*] section of the original rmt.ini names this port and db";

/// An original-format `rmt.ini`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// `[listen] port`.
    pub port: u16,
    /// `[wl] ip`.
    pub allow: Allowlist,
    /// `[mongo] host`.
    pub mongo: Option<String>,
    /// The `[*redis*]` sections with a `host`, in file order.
    pub routes: Vec<Route>,
    /// What the original ignored, and the translation ignores too.
    pub warnings: Vec<String>,
}

/// One `[*redis*]` section: frames for (`port`, `db`) go to `host`, at
/// `to_port` and `to_db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub section: String,
    pub port: u16,
    pub db: u32,
    /// As written (an IPv6 address keeps its brackets).
    pub host: String,
    pub to_port: u16,
    pub to_db: u32,
    /// `?pwd=`; `None` when empty or absent (no AUTH).
    pub password: Option<String>,
}

/// Everything wrong with an original file, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError(pub Vec<String>);

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for TranslateError {}

/// An original file and what it means in syncs' terms.
#[derive(Debug, Clone)]
pub struct Translation {
    pub original: Original,
    /// The server INI (`[server]`, `[log]`), rules at `rules/`.
    pub config: String,
    /// The rules file.
    pub rules: String,
}

/// Parses INI text the way the original format is read: `;` and `#` start
/// comment lines, values are taken as written (no quotes, no escapes: a
/// password may hold both).
pub fn parse_ini(text: &str) -> Result<Ini, ini::ParseError> {
    Ini::load_from_str_opt(
        text,
        ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ParseOption::default()
        },
    )
}

/// Whether `ini` is in the original format: no `[server]`, and a
/// `[listen]`, `[wl]`, `[mongo]` or a section whose name contains `redis`.
/// Both kinds of sections in one file is an error.
pub fn is_original(ini: &Ini) -> anyhow::Result<bool> {
    let mut syncs = false;
    let mut original = Vec::new();
    for name in ini.sections().flatten() {
        if name == "server" {
            syncs = true;
        } else if matches!(name, "listen" | "wl" | "mongo") || name.contains("redis") {
            original.push(format!("[{name}]"));
        }
    }
    if syncs && !original.is_empty() {
        bail!(
            "this file mixes syncs' [server] with sections of the original format ({}): \
             keep one format (`syncs-check --migrate` translates an original file)",
            original.join(", ")
        );
    }
    Ok(!syncs && !original.is_empty())
}

/// Validates an original file, collecting every error.
pub fn parse(ini: &Ini) -> Result<Original, TranslateError> {
    let mut errors: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut port = None;
    let mut allow = None;
    let mut mongo = None;
    let mut routes: Vec<Route> = Vec::new();
    for (name, props) in ini.iter() {
        let Some(name) = name else {
            if !props.is_empty() {
                warnings.push("settings before the first section are ignored".to_owned());
            }
            continue;
        };
        if seen.contains(&name) {
            errors.push(format!("[{name}] is written twice"));
            continue;
        }
        seen.push(name);
        let known: &[&str] = match name {
            "listen" => &["port"],
            "wl" => &["ip"],
            "mongo" => &["host"],
            n if n.contains("redis") => &["host", "map"],
            _ => {
                warnings.push(format!(
                    "[{name}] is not a section of the original format; ignored"
                ));
                continue;
            }
        };
        for (key, _) in props.iter() {
            if !known.contains(&key) {
                warnings.push(format!(
                    "[{name}] `{key}` is not a setting of the original format; ignored"
                ));
            }
        }
        let get = |k: &str| props.get(k).map(str::trim).filter(|v| !v.is_empty());
        match name {
            "listen" => match get("port") {
                Some(v) => match parse_port(v) {
                    Some(p) => port = Some(p),
                    None => errors.push(format!(
                        "[listen] port = {v}: not a port number (1 to 65535)"
                    )),
                },
                None => errors.push("[listen] needs `port`".to_owned()),
            },
            "wl" => match get("ip") {
                Some(v) => match Allowlist::parse(v) {
                    Ok(a) => allow = Some(a),
                    Err(e) => errors.push(format!("[wl] ip: {e}")),
                },
                None => errors.push(
                    "[wl] needs `ip`: the addresses of the proxies allowed to connect".to_owned(),
                ),
            },
            "mongo" => match get("host") {
                Some(v) if v.starts_with("mongodb://") || v.starts_with("mongodb+srv://") => {
                    mongo = Some(v.to_owned())
                }
                Some(v) => errors.push(format!(
                    "[mongo] host = {}: expected a mongodb:// URL",
                    redact(v)
                )),
                None => warnings
                    .push("[mongo] has no `host`: Mongo writes will be dead-lettered".to_owned()),
            },
            _ => match get("host") {
                None => warnings.push(format!(
                    "[{name}] has no `host`, so it is not a route; ignored"
                )),
                Some(host) => match parse_route(name, host, get("map")) {
                    Ok(r) => {
                        if let Some(first) =
                            routes.iter().find(|o| (o.port, o.db) == (r.port, r.db))
                        {
                            errors.push(format!(
                                "[{}] and [{name}] both name port {} db {}: only one section may route them",
                                first.section, r.port, r.db
                            ));
                        }
                        routes.push(r);
                    }
                    Err(e) => errors.push(format!("[{name}] {e}")),
                },
            },
        }
    }
    if !seen.contains(&"listen") {
        errors.push("no [listen] section: it gives the `port` the server listens on".to_owned());
    }
    if !seen.contains(&"wl") {
        errors.push(
            "no [wl] section: the original accepted only the proxies its `ip` lists; \
             list them (`[wl]` then `ip = 10.0.0.5, 10.0.0.6`)"
                .to_owned(),
        );
    }
    if routes.is_empty() && mongo.is_none() && errors.is_empty() {
        warnings.push(
            "no [redis*] section with a `host` and no [mongo] host: every operation will be dead-lettered"
                .to_owned(),
        );
    }
    match (port, allow) {
        (Some(port), Some(allow)) if errors.is_empty() => Ok(Original {
            port,
            allow,
            mongo,
            routes,
            warnings,
        }),
        _ => Err(TranslateError(errors)),
    }
}

fn parse_port(v: &str) -> Option<u16> {
    v.parse::<u16>().ok().filter(|&p| p > 0)
}

const URL_FORM: &str = "redis://HOST:PORT/DB?pwd=PASSWORD";

/// One `[*redis*]` section's `host` and `map`.
fn parse_route(section: &str, url: &str, map: Option<&str>) -> Result<Route, String> {
    let bad = |why: &str| format!("host = {}: {why} (expected {URL_FORM})", redact(url));
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| bad("not a redis:// URL"))?;
    // The password is everything after `?pwd=`, as the original read it.
    let (main, password) = match rest.split_once('?') {
        None => (rest, None),
        Some((main, query)) => match query.strip_prefix("pwd=") {
            Some("") => (main, None),
            Some(p) => (main, Some(p.to_owned())),
            None => return Err(bad("the only query the original format knows is `?pwd=`")),
        },
    };
    let (authority, db) = main
        .split_once('/')
        .ok_or_else(|| bad("no /DB after the port"))?;
    if authority.contains('@') {
        return Err(bad("give the password as ?pwd=, not before the host"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("no :PORT after the host"))?;
    if !valid_host(host) {
        return Err(bad(&format!("`{host}` is not a host name or IP address")));
    }
    let port = parse_port(port).ok_or_else(|| bad(&format!("port `{port}` is not 1 to 65535")))?;
    let db = db
        .parse::<u32>()
        .map_err(|_| bad(&format!("db `{db}` is not a number")))?;
    let (to_port, to_db) = match map {
        None => (port, db),
        Some(m) => {
            let parsed = m
                .split_once('/')
                .and_then(|(p, d)| Some((parse_port(p.trim())?, d.trim().parse::<u32>().ok()?)));
            parsed.ok_or_else(|| format!("map = {m}: expected PORT/DB, e.g. 6379/3"))?
        }
    };
    Ok(Route {
        section: section.to_owned(),
        port,
        db,
        host: host.to_owned(),
        to_port,
        to_db,
        password,
    })
}

/// `host:port` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') {
        let end = s.find("]:")?;
        return Some((&s[..=end], &s[end + 2..]));
    }
    s.rsplit_once(':').filter(|(h, _)| !h.is_empty())
}

fn valid_host(h: &str) -> bool {
    match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    }
}

/// A URL for messages and logs: the password replaced by `***`.
fn redact(url: &str) -> String {
    if let Some(i) = url.find("pwd=") {
        if i + 4 < url.len() {
            return format!("{}***", &url[..i + 4]);
        }
    }
    // user:password@ in a mongodb:// URL.
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}

/// Percent-encodes everything but the URL's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A rules-language string literal.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A rules-language name made from `s`: letters, digits and `_`, not
/// starting with a digit.
fn ident(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// `base`, or `base_2`, `base_3`... whichever `taken` does not hold yet.
fn unique(base: String, taken: &mut Vec<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

impl Route {
    /// `[redis0] port 6379 db 1 → 127.0.0.1:6379 db 3, with AUTH`
    pub fn describe(&self) -> String {
        format!(
            "[{}] port {} db {} -> {}:{} db {}{}",
            self.section,
            self.port,
            self.db,
            self.host,
            self.to_port,
            self.to_db,
            if self.password.is_some() {
                ", with AUTH"
            } else {
                ""
            }
        )
    }
}

impl Original {
    /// What the file means, a line each: the listener, the routes, Mongo,
    /// the rest.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "listen on 0.0.0.0:{} in plaintext; only proxies from {} ([wl])",
            self.port, self.allow
        )];
        lines.extend(self.routes.iter().map(Route::describe));
        lines.push("any other port and db -> the dead-letter file".to_owned());
        lines.push(match &self.mongo {
            Some(url) => format!(
                "[mongo] every Mongo write -> {}, same db and collection",
                redact(url)
            ),
            None => "no [mongo]: Mongo writes -> the dead-letter file".to_owned(),
        });
        lines
    }
}

/// Translates an original file (already told apart by [`is_original`]);
/// `source` names it in the comments of the output.
pub fn translate(ini: &Ini, source: &Path) -> Result<Translation, TranslateError> {
    let original = parse(ini)?;
    let config = config_text(&original, source);
    let rules = rules_text(&original, source);
    Ok(Translation {
        original,
        config,
        rules,
    })
}

fn config_text(o: &Original, source: &Path) -> String {
    format!(
        "; sync_server configuration, translated by `syncs-check --migrate` from\n\
         ; {source} (the original system's format). sync_server started with that\n\
         ; file runs this same translation. docs/migrating.md explains each line.\n\
         \n\
         [server]\n\
         ; [listen] port: every address, as the original listened.\n\
         listen = 0.0.0.0:{port}\n\
         ; [wl] ip: only proxies from these addresses are accepted; others are\n\
         ; closed at once and counted (syncs_server_auth_failures_total{{reason=\"not_allowed\"}}).\n\
         allow = {allow}\n\
         ; Unencrypted, as the original ran: the allowlist is the only protection.\n\
         ; Configure [tls] (docs/operations.md, Security) and remove this line.\n\
         plaintext = yes\n\
         ; The rules: one per [redis*] section of the original, with tests.\n\
         rules = {RULES_DIR}\n\
         ; dead_letter is not set: $STATE_DIRECTORY/dead-letter.jsonl under systemd,\n\
         ; else dead-letter.jsonl beside this file.\n\
         ; Prometheus metrics (or `sync_server --metrics HOST:PORT`):\n\
         ; metrics = 127.0.0.1:9740\n\
         \n\
         [log]\n\
         level = info\n",
        source = source.display(),
        port = o.port,
        allow = o.allow,
    )
}

/// What makes a Redis target: host, port, password.
type TargetKey<'a> = (&'a str, u16, Option<&'a str>);

fn rules_text(o: &Original, source: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Rules translated by `syncs-check --migrate` from {} (the original\n\
         # system's format); sync_server started with that file runs the same\n\
         # translation. One rule per [redis*] section: frames carrying the port and\n\
         # db of the section's URL go to its host, at the port and db of `map` when\n\
         # given. Dangerous commands (FLUSHALL, FLUSHDB, ...) are not replicated\n\
         # unless a rule names them (docs/rules.md, Dangerous commands).\n",
        source.display()
    );
    // One target per (host, port, password) the routes send to.
    let mut target_names: Vec<String> = Vec::new();
    let mut targets: Vec<(TargetKey<'_>, String)> = Vec::new();
    for r in &o.routes {
        let key = (r.host.as_str(), r.to_port, r.password.as_deref());
        if targets.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let host = r.host.trim_start_matches('[').trim_end_matches(']');
        let name = unique(
            ident(&format!("redis_{host}_{}", r.to_port)),
            &mut target_names,
        );
        let auth = r
            .password
            .as_deref()
            .map(|p| format!(":{}@", percent_encode(p)))
            .unwrap_or_default();
        let url = format!("redis://{auth}{}:{}", r.host, r.to_port);
        let _ = writeln!(out, "target {name} = redis {}", quoted(&url));
        targets.push((key, name));
    }
    if let Some(url) = &o.mongo {
        let _ = writeln!(out, "target mongo = mongo {}", quoted(url));
    }
    let target_of = |r: &Route| -> &str {
        let key = (r.host.as_str(), r.to_port, r.password.as_deref());
        targets
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| n.as_str())
            .unwrap_or_default()
    };
    let mut rule_names: Vec<String> = Vec::new();
    for r in &o.routes {
        let name = unique(ident(&r.section), &mut rule_names);
        let _ = writeln!(out, "\n# {}", r.describe());
        let _ = writeln!(
            out,
            "rule {name}: redis port {} db {} -> {} db {}",
            r.port,
            r.db,
            target_of(r),
            r.to_db
        );
    }
    let _ = writeln!(
        out,
        "\n# A port and db no section names: the original dropped the frame with a\n\
         # log line; syncs writes it to the dead-letter file with this reason.\n\
         default redis -> dead-letter {}",
        quoted(UNROUTED_REASON)
    );
    match &o.mongo {
        Some(_) => {
            let _ = writeln!(
                out,
                "# [mongo] host: every Mongo write, same db and collection.\n\
                 default mongo -> mongo"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# No [mongo] host: Mongo writes go to the dead-letter file.\n\
                 default mongo -> dead-letter {}",
                quoted("the original rmt.ini has no [mongo] host")
            );
        }
    }

    // The tests: what each route does, then the rest.
    for r in &o.routes {
        let _ = writeln!(
            out,
            "\ntest {} {{\n    redis {} {} SET migrated:probe x\n    expect {} db {}\n}}",
            quoted(&r.describe()),
            r.port,
            r.db,
            target_of(r),
            r.to_db
        );
    }
    let port = o.routes.first().map_or(6379, |r| r.port);
    let free_db = (0..=u32::MAX)
        .find(|d| !o.routes.iter().any(|r| (r.port, r.db) == (port, *d)))
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\ntest {} {{\n    redis {port} {free_db} SET migrated:probe x\n    expect dead-letter\n}}",
        quoted(&format!(
            "port {port} db {free_db}: no section names it, dead-lettered"
        ))
    );
    if let Some(r) = o.routes.first() {
        let _ = writeln!(
            out,
            "\ntest {} {{\n    redis {} {} FLUSHDB\n    expect drop dangerous\n}}",
            quoted(&format!(
                "[{}]: FLUSHDB is not replicated (dangerous)",
                r.section
            )),
            r.port,
            r.db
        );
    }
    if o.mongo.is_some() {
        let _ = writeln!(
            out,
            "\ntest {} {{\n    mongo app users drop\n    expect drop dangerous\n}}",
            quoted("[mongo]: a collection drop (mg_drop) is not replicated (dangerous)")
        );
    }
    let _ = writeln!(
        out,
        "\ntest {} {{\n    mongo app users insert_one\n    expect {}\n}}",
        quoted(if o.mongo.is_some() {
            "[mongo]: writes keep their db and collection"
        } else {
            "no [mongo]: Mongo writes are dead-lettered"
        }),
        if o.mongo.is_some() {
            "mongo"
        } else {
            "dead-letter"
        }
    );
    out
}

/// The name the translated rules carry in diagnostics and test locations.
fn translated_name(path: &Path) -> PathBuf {
    PathBuf::from(format!("{} (translated)", path.display()))
}

/// Reads an original file and compiles its routes: the server's rules for
/// it, at start and at every reload.
pub fn load_rules(path: &Path) -> Result<LoadedRules, Vec<Diagnostic>> {
    let error = |message: String| vec![Diagnostic::error(path, 0, 0, message, "")];
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
    let ini = parse_ini(&text).map_err(|e| error(format!("{}: {e}", path.display())))?;
    match is_original(&ini) {
        Ok(true) => {}
        Ok(false) => {
            return Err(error(format!(
            "{} is no longer in the original format: restart sync_server to load it as it is now",
            path.display()
        )))
        }
        Err(e) => return Err(error(format!("{e:#}"))),
    }
    let t = translate(&ini, path).map_err(|e| {
        e.0.into_iter()
            .map(|m| Diagnostic::error(path, 0, 0, m, ""))
            .collect::<Vec<_>>()
    })?;
    let rules = syncs_dsl::parse_sources(&[(translated_name(path), t.rules)])?;
    Ok(LoadedRules {
        rules,
        warnings: t
            .original
            .warnings
            .iter()
            .map(|w| Diagnostic::warning(path, 0, 0, w.clone(), ""))
            .collect(),
        server_settings: Some(t.config),
    })
}

/// What [`migrate`] wrote.
#[derive(Debug)]
pub struct Migrated {
    pub translation: Translation,
    pub config: PathBuf,
    pub rules_dir: PathBuf,
    pub rules_file: PathBuf,
}

/// `syncs-check --migrate`: translates the original file `source` and
/// writes `out/rmt.ini` and `out/rules/migrated.sync` (with the original's
/// permissions: both hold its passwords). Existing files are not
/// overwritten.
pub fn migrate(source: &Path, out: &Path) -> anyhow::Result<Migrated> {
    let text =
        std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let ini = parse_ini(&text).with_context(|| format!("reading {}", source.display()))?;
    if !is_original(&ini).with_context(|| format!("in {}", source.display()))? {
        bail!(
            "{} is not in the original format (it has no [listen], [wl], [mongo] or [redis*] section); \
             nothing to migrate",
            source.display()
        );
    }
    let translation =
        translate(&ini, source).with_context(|| format!("in {}", source.display()))?;
    let rules_name = Path::new(RULES_DIR).join(RULES_FILE);
    if let Err(diags) = syncs_dsl::parse_sources(&[(rules_name.clone(), translation.rules.clone())])
    {
        bail!(
            "the translated rules do not load (a bug in the translation; please report it):\n{}",
            syncs_dsl::render(&diags)
        );
    }
    let config = out.join(CONFIG_FILE);
    let rules_dir = out.join(RULES_DIR);
    let rules_file = out.join(&rules_name);
    for p in [&config, &rules_file] {
        if p.exists() {
            bail!(
                "{} exists already; remove it or choose another --out",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(&rules_dir)
        .with_context(|| format!("creating {}", rules_dir.display()))?;
    let permissions = std::fs::metadata(source)
        .with_context(|| format!("reading {}", source.display()))?
        .permissions();
    for (path, content) in [
        (&config, &translation.config),
        (&rules_file, &translation.rules),
    ] {
        std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(path, permissions.clone())
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    Ok(Migrated {
        translation,
        config,
        rules_dir,
        rules_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::IntoConnectionInfo;

    /// The issue's example, with comments of both kinds.
    const EXAMPLE: &str = "\
[listen]
port = 3392
[wl]
# allowed proxy addresses, comma separated
ip = 127.0.0.1,192.168.1.2
[mongo]
host = mongodb://192.168.1.7:27017
[redis0]
host = redis://127.0.0.1:6379/1?pwd=your_password
; optional: where frames for (6379, 1) really go
map = 6379/3
[redis1]
host = redis://127.0.0.1:6379/2?pwd=your_password
map = 6379/4
";

    fn ini(text: &str) -> Ini {
        parse_ini(text).expect("INI syntax")
    }

    fn original(text: &str) -> Original {
        parse(&ini(text)).expect("valid original file")
    }

    fn errors(text: &str) -> String {
        parse(&ini(text)).expect_err("invalid").to_string()
    }

    fn translation(text: &str) -> Translation {
        translate(&ini(text), Path::new("/etc/syncs/rmt.ini")).expect("translates")
    }

    #[test]
    fn tells_the_formats_apart() {
        assert!(is_original(&ini(EXAMPLE)).expect("ok"));
        assert!(is_original(&ini("[redis_cache]\nhost = redis://h:1/0\n")).expect("ok"));
        assert!(!is_original(&ini("[server]\nrules = r\n")).expect("ok"));
        assert!(!is_original(&ini("[log]\nlevel = info\n")).expect("ok"));
        let err =
            is_original(&ini("[server]\nrules = r\n[wl]\nip = 127.0.0.1\n")).expect_err("mixed");
        assert!(err.to_string().contains("mixes syncs' [server]"), "{err}");
        // The shipped configuration is syncs' own.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/rmt.ini");
        let text = std::fs::read_to_string(shipped).expect("configs/rmt.ini");
        assert!(!is_original(&ini(&text)).expect("ok"));
    }

    #[test]
    fn parses_sections_comments_map_and_pwd() {
        let o = original(EXAMPLE);
        assert_eq!(o.port, 3392);
        assert_eq!(o.allow.to_string(), "127.0.0.1, 192.168.1.2");
        assert_eq!(o.mongo.as_deref(), Some("mongodb://192.168.1.7:27017"));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        assert_eq!(
            o.routes,
            vec![
                Route {
                    section: "redis0".into(),
                    port: 6379,
                    db: 1,
                    host: "127.0.0.1".into(),
                    to_port: 6379,
                    to_db: 3,
                    password: Some("your_password".into()),
                },
                Route {
                    section: "redis1".into(),
                    port: 6379,
                    db: 2,
                    host: "127.0.0.1".into(),
                    to_port: 6379,
                    to_db: 4,
                    password: Some("your_password".into()),
                },
            ]
        );
    }

    #[test]
    fn unmapped_routes_keep_the_urls_port_and_db_and_empty_pwd_means_no_auth() {
        let o = original(
            "[listen]\nport = 1\n[wl]\nip = 10.0.0.0/8\n\
             [redis_a]\nhost = redis://10.0.0.7:6380/12?pwd=\n\
             [b_redis]\nhost = redis://[::1]:6379/0\n",
        );
        assert_eq!(
            (
                o.routes[0].to_port,
                o.routes[0].to_db,
                &o.routes[0].password
            ),
            (6380, 12, &None)
        );
        assert_eq!(o.routes[1].host, "[::1]");
        assert!(o.mongo.is_none());
    }

    #[test]
    fn the_rules_name_one_target_per_host_port_and_password() {
        let t = translation(
            "[listen]\nport = 3392\n[wl]\nip = 127.0.0.1\n\
             [redis0]\nhost = redis://127.0.0.1:6379/1?pwd=a b@c/d%\nmap = 7000/3\n\
             [redis1]\nhost = redis://127.0.0.1:6379/2?pwd=a b@c/d%\nmap = 7000/4\n\
             [redis2]\nhost = redis://127.0.0.1:6379/5?pwd=other\nmap = 7000/5\n\
             [redis-3]\nhost = redis://127.0.0.1:6379/6\n",
        );
        let rules = &t.rules;
        assert!(
            rules.contains(
                r#"target redis_127_0_0_1_7000 = redis "redis://:a%20b%40c%2Fd%25@127.0.0.1:7000""#
            ),
            "{rules}"
        );
        assert!(
            rules.contains(
                r#"target redis_127_0_0_1_7000_2 = redis "redis://:other@127.0.0.1:7000""#
            ),
            "{rules}"
        );
        assert!(rules.contains(r#"target redis_127_0_0_1_6379 = redis "redis://127.0.0.1:6379""#));
        assert!(rules.contains("rule redis0: redis port 6379 db 1 -> redis_127_0_0_1_7000 db 3"));
        assert!(rules.contains("rule redis1: redis port 6379 db 2 -> redis_127_0_0_1_7000 db 4"));
        assert!(rules.contains("rule redis2: redis port 6379 db 5 -> redis_127_0_0_1_7000_2 db 5"));
        assert!(rules.contains("rule redis_3: redis port 6379 db 6 -> redis_127_0_0_1_6379 db 6"));
        assert!(rules.contains(&format!(
            "default redis -> dead-letter \"{UNROUTED_REASON}\""
        )));
        assert!(rules.contains("default mongo -> dead-letter"));
        // The password in the URL is the one AUTH sends.
        let info = "redis://:a%20b%40c%2Fd%25@127.0.0.1:7000"
            .into_connection_info()
            .expect("a URL the redis crate reads");
        assert_eq!(info.redis_settings().password(), Some("a b@c/d%"));
        // The rules load; the config is syncs' own format.
        syncs_dsl::parse_sources(&[("t.sync".into(), t.rules.clone())]).expect("rules load");
        let cfg = Ini::load_from_str(&t.config).expect("INI");
        assert!(!is_original(&cfg).expect("ok"));
    }

    #[test]
    fn the_generated_tests_pass_and_explain_sees_the_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("rmt.ini");
        std::fs::write(&source, EXAMPLE).expect("write");
        let out = dir.path().join("new");
        let m = migrate(&source, &out).expect("migrates");
        assert_eq!(m.rules_file, out.join("rules/migrated.sync"));
        let report = crate::check::run(&m.rules_dir, Some("redis 6379 1 SET a bcd0"));
        assert!(report.ok(), "{}", report.render(crate::check::Format::Text));
        // One test per route, plus unrouted, dangerous, mongo drop and mongo.
        assert_eq!(report.tests.len(), 6);
        let explain = report.explain.unwrap_or_default();
        assert!(
            explain.contains("rule `redis0`") && explain.contains("db 3: SET a bcd0"),
            "{explain}"
        );
        // The original file itself checks the same way.
        let report = crate::check::run(&source, Some("redis 6379 9 SET a b"));
        assert!(report.ok(), "{}", report.render(crate::check::Format::Text));
        assert_eq!(report.tests.len(), 6);
        let note = report.note.clone().unwrap_or_default();
        assert!(note.contains("syncs-check --migrate"), "{note}");
        let explain = report.explain.unwrap_or_default();
        assert!(
            explain.contains("dead-letter") && explain.contains(UNROUTED_REASON),
            "{explain}"
        );
        // Not again over existing files.
        let err = migrate(&source, &out).expect_err("exists").to_string();
        assert!(err.contains("exists already"), "{err}");
    }

    #[test]
    fn the_server_reads_the_original_as_the_migrated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("rmt.ini");
        std::fs::write(&source, EXAMPLE).expect("write");
        let before = ServerConfigView::of(
            &crate::config::ServerConfig::load(&source).expect("original loads"),
        );
        let m = migrate(&source, &dir.path().join("new")).expect("migrates");
        let after = ServerConfigView::of(
            &crate::config::ServerConfig::load(&m.config).expect("migrated loads"),
        );
        assert_eq!(before.listen, "0.0.0.0:3392".parse().expect("addr"));
        assert_eq!(before.listen, after.listen);
        assert_eq!(before.security, after.security);
        assert_eq!(
            before
                .security
                .allow
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("127.0.0.1, 192.168.1.2")
        );
        assert_eq!(
            before.rules,
            crate::config::RulesSource::Original(source.clone())
        );
        assert_eq!(
            after.rules,
            crate::config::RulesSource::Path(m.rules_dir.clone())
        );
        // Both compile to the same rules text.
        let a = before.rules.load().expect("original rules");
        let b = after.rules.load().expect("migrated rules");
        assert_eq!(a.rules.rule_count(), b.rules.rule_count());
        let urls = |r: &syncs_dsl::RuleSet| {
            r.targets()
                .iter()
                .map(|t| (t.name.clone(), t.url.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(urls(&a.rules), urls(&b.rules));
        assert_eq!(
            std::fs::read_to_string(&m.rules_file).ok(),
            Some(m.translation.rules)
        );
    }

    /// The parts of a ServerConfig the translation decides.
    struct ServerConfigView {
        listen: std::net::SocketAddr,
        security: crate::security::server::ServerSecuritySettings,
        rules: crate::config::RulesSource,
    }

    impl ServerConfigView {
        fn of(c: &crate::config::ServerConfig) -> Self {
            Self {
                listen: c.listen,
                security: c.security.clone(),
                rules: c.rules.clone(),
            }
        }
    }

    #[test]
    fn ignored_settings_are_warnings() {
        let o = original(
            "stray = 1\n[listen]\nport = 1\nhost = 0.0.0.0\n[wl]\nip = 127.0.0.1\n\
             [log]\nlevel = debug\n[redis9]\nmap = 6379/1\n",
        );
        let w = o.warnings.join("\n");
        for want in [
            "settings before the first section are ignored",
            "[listen] `host` is not a setting of the original format",
            "[log] is not a section of the original format",
            "[redis9] has no `host`",
            "every operation will be dead-lettered",
        ] {
            assert!(w.contains(want), "{want} in {w}");
        }
    }

    #[test]
    fn bad_input_gives_every_error_clearly() {
        let e = errors("[redis0]\nhost = redis://h:6379/1\n");
        assert!(
            e.contains("no [listen] section") && e.contains("no [wl] section"),
            "{e}"
        );
        let base = "[listen]\nport = 3392\n[wl]\nip = 127.0.0.1\n";
        for (body, want) in [
            (
                "[listen]\nport = 0\n[wl]\nip = 127.0.0.1\n",
                "[listen] port = 0: not a port number",
            ),
            (
                "[listen]\nport = x\n[wl]\nip = 1.2.3.4, nope\n",
                "[wl] ip: `nope` is not an IP address",
            ),
            ("[listen]\n[wl]\nip = \n", "[listen] needs `port`"),
        ] {
            let e = errors(body);
            assert!(e.contains(want), "{want} in {e}");
        }
        for (section, want) in [
            (
                "[redis0]\nhost = http://h:1/0\n",
                "[redis0] host = http://h:1/0: not a redis:// URL",
            ),
            ("[redis0]\nhost = redis://h:6379\n", "no /DB after the port"),
            ("[redis0]\nhost = redis://h/1\n", "no :PORT after the host"),
            (
                "[redis0]\nhost = redis://h:99999/1\n",
                "port `99999` is not 1 to 65535",
            ),
            (
                "[redis0]\nhost = redis://h:6379/one\n",
                "db `one` is not a number",
            ),
            (
                "[redis0]\nhost = redis://h h:6379/1\n",
                "`h h` is not a host name",
            ),
            (
                "[redis0]\nhost = redis://:pw@h:6379/1\n",
                "give the password as ?pwd=",
            ),
            (
                "[redis0]\nhost = redis://h:6379/1?password=x\n",
                "the only query the original format knows is `?pwd=`",
            ),
            (
                "[redis0]\nhost = redis://h:6379/1\nmap = 3\n",
                "[redis0] map = 3: expected PORT/DB",
            ),
            (
                "[mongo]\nhost = 10.0.0.1:27017\n",
                "[mongo] host = 10.0.0.1:27017: expected a mongodb:// URL",
            ),
            (
                "[redis0]\nhost = redis://h:6379/1\n[redis1]\nhost = redis://other:6379/1\n",
                "[redis0] and [redis1] both name port 6379 db 1",
            ),
        ] {
            let e = errors(&format!("{base}{section}"));
            assert!(e.contains(want), "{want} in {e}");
        }
        // Passwords stay out of messages.
        let e = errors(&format!(
            "{base}[redis0]\nhost = redis://h:6379/x?pwd=secret\n"
        ));
        assert!(e.contains("pwd=***") && !e.contains("secret"), "{e}");
        // All errors at once.
        let e = errors("[listen]\nport = 0\n[wl]\nip = x\n[redis0]\nhost = redis://h/1\n");
        assert_eq!(e.lines().count(), 3, "{e}");
    }

    #[test]
    fn duplicate_sections_are_refused() {
        let e = errors("[listen]\nport = 1\n[wl]\nip = 127.0.0.1\n[listen]\nport = 2\n");
        assert!(e.contains("[listen] is written twice"), "{e}");
    }

    #[test]
    fn helpers() {
        assert_eq!(ident("redis-0"), "redis_0");
        assert_eq!(ident("9redis"), "_9redis");
        let mut taken = vec![];
        assert_eq!(unique("a".into(), &mut taken), "a");
        assert_eq!(unique("a".into(), &mut taken), "a_2");
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(redact("mongodb://u:p@h:1/x"), "mongodb://u:***@h:1/x");
        assert_eq!(redact("redis://h:1/0?pwd="), "redis://h:1/0?pwd=");
    }
}
