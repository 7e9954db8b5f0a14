//! The server's INI configuration (`sync_server <config.ini>`).
//!
//! ```ini
//! [server]
//! listen = 127.0.0.1:7379          ; address for proxies
//! rules = ../rules/default.sync    ; a rules file or a directory of *.sync
//! dead_letter = ../var/dead-letter.jsonl
//! max_frame = 64MiB                ; largest record accepted
//! metrics = 127.0.0.1:9740         ; Prometheus endpoint (optional)
//! target_backlog = 64MiB           ; records held in memory per stream and target
//!
//! [log]
//! level = info
//! ```
//! Relative paths are relative to the directory of the INI file. Unknown
//! sections and keys are errors, so a typo never passes for a setting.
//!
//! A file in the format of the system syncs replaces (`[listen]`, `[wl]`,
//! `[mongo]`, `[redisN]`; no `[server]`) is told apart by its sections and
//! run through [`crate::legacy`]: the server settings it means, and its
//! routes as rules ([`RulesSource::Original`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ini::Ini;
use syncs_dsl::{Diagnostic, RuleSet};

use crate::security::server::{ServerSecuritySettings, AUTH_KEYS, TLS_KEYS};
use crate::telemetry::parse_size;

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub rules: RulesSource,
    pub dead_letter: PathBuf,
    pub max_frame: u32,
    pub metrics: Option<SocketAddr>,
    pub log_level: String,
    /// `[transport]`: direct TCP (default) or NATS JetStream.
    pub transport: crate::nats::Transport,
    /// `[tls]`, `[auth]` and `[server] plaintext` (see `security::server`).
    pub security: ServerSecuritySettings,
    /// Proxy connections at once (`[server] max_connections`).
    pub max_connections: usize,
    /// Bytes of records one stream holds in memory for one target that
    /// lags (`[server] target_backlog`); past it the records are asked
    /// from the proxy again later.
    pub target_backlog: usize,
    /// The file was in the original system's format: what it said (the
    /// rules are [`RulesSource::Original`]).
    pub original: Option<crate::legacy::Original>,
}

/// The dead-letter file's name when `dead_letter` is not set: in
/// `$STATE_DIRECTORY` under systemd (the units' writable directory), else
/// beside the INI file.
pub const DEFAULT_DEAD_LETTER: &str = "dead-letter.jsonl";

/// `target_backlog` by default.
pub const DEFAULT_TARGET_BACKLOG: usize = 64 << 20;

/// Proxy connections at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

const SERVER_KEYS: [&str; 9] = [
    "listen",
    "rules",
    "dead_letter",
    "max_frame",
    "metrics",
    "plaintext",
    "allow",
    "max_connections",
    "target_backlog",
];
const LOG_KEYS: [&str; 1] = ["level"];

/// Where the rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesSource {
    /// `[server] rules`: a rules file or a directory of `*.sync` files.
    Path(PathBuf),
    /// A `rmt.ini` in the original system's format: its routes, translated
    /// into rules at each (re)load by [`crate::legacy::translate`].
    Original(PathBuf),
}

/// A rule set as loaded from its source.
#[derive(Debug)]
pub struct LoadedRules {
    pub rules: RuleSet,
    /// Warnings about the source beyond the rules' own
    /// ([`RuleSet::warnings`]): settings of an original file it ignores.
    pub warnings: Vec<Diagnostic>,
    /// For an original file: the server settings it translates to, so a
    /// reload can tell when `[listen]` or `[wl]` changed (they apply at
    /// the next start only).
    pub server_settings: Option<String>,
}

impl RulesSource {
    /// The file or directory to read (and watch).
    pub fn path(&self) -> &Path {
        match self {
            RulesSource::Path(p) | RulesSource::Original(p) => p,
        }
    }

    /// Reads, checks and compiles the rules; every problem on failure.
    pub fn load(&self) -> Result<LoadedRules, Vec<Diagnostic>> {
        match self {
            RulesSource::Path(p) => syncs_dsl::load_path(p).map(|rules| LoadedRules {
                rules,
                warnings: Vec::new(),
                server_settings: None,
            }),
            RulesSource::Original(p) => crate::legacy::load_rules(p),
        }
    }
}

impl std::fmt::Display for RulesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulesSource::Path(p) => write!(f, "{}", p.display()),
            RulesSource::Original(p) => write!(f, "{} (original format, translated)", p.display()),
        }
    }
}

/// systemd's `$STATE_DIRECTORY` (the first one), where the units let the
/// daemons write.
pub fn state_directory() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY").and_then(|d| std::env::split_paths(&d).next())
}

/// Refuses sections and keys an INI file may not have: `sections` lists
/// each known section with its keys; `expected` names the sections in the
/// error about an unknown one, `outside` is the error for keys before any
/// section.
pub(crate) fn check_keys(
    ini: &Ini,
    sections: &[(&str, &[&str])],
    expected: &str,
    outside: &str,
) -> anyhow::Result<()> {
    for (section, props) in ini.iter() {
        let allowed: &[&str] = match section {
            Some(name) => match sections.iter().find(|(s, _)| *s == name) {
                Some((_, keys)) => keys,
                None => bail!("unknown section [{name}] (expected {expected})"),
            },
            None if props.is_empty() => &[],
            None => bail!("{outside}"),
        };
        for (key, _) in props.iter() {
            if !allowed.contains(&key) {
                bail!(
                    "unknown key `{key}` in [{}] (expected one of: {})",
                    section.unwrap_or(""),
                    allowed.join(", ")
                );
            }
        }
    }
    Ok(())
}

impl ServerConfig {
    /// Loads a syncs server INI, or an original-format `rmt.ini` (told
    /// apart by its sections), which then means what the original server
    /// did with it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let raw = crate::legacy::parse_ini(&text)
            .with_context(|| format!("reading config {}", path.display()))?;
        if crate::legacy::is_original(&raw)
            .with_context(|| format!("in config {}", path.display()))?
        {
            let translation = crate::legacy::translate(&raw, path)
                .with_context(|| format!("in {} (the original system's format)", path.display()))?;
            let ini = Ini::load_from_str(&translation.config)
                .context("reading the translated configuration")?;
            let mut config = Self::from_ini(&ini, base)
                .with_context(|| format!("in {} (the original system's format)", path.display()))?;
            config.rules = RulesSource::Original(path.to_owned());
            config.original = Some(translation.original);
            return Ok(config);
        }
        let ini = Ini::load_from_str(&text)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_ini(&ini, base).with_context(|| format!("in config {}", path.display()))
    }

    fn from_ini(ini: &Ini, base: &Path) -> anyhow::Result<Self> {
        check_keys(
            ini,
            &[
                ("server", &SERVER_KEYS),
                ("log", &LOG_KEYS),
                ("transport", &crate::nats::TRANSPORT_KEYS),
                ("tls", &TLS_KEYS),
                ("auth", &AUTH_KEYS),
            ],
            "[server], [log], [tls] or [auth]",
            "settings must sit in a [server] or [log] section",
        )?;
        let server = ini
            .section(Some("server"))
            .ok_or_else(|| anyhow!("missing [server] section"))?;
        let get = |k: &str| server.get(k).map(str::trim).filter(|v| !v.is_empty());
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let listen = get("listen")
            .unwrap_or("127.0.0.1:7379")
            .parse()
            .context("`listen` must be host:port, e.g. 127.0.0.1:7379")?;
        let rules = RulesSource::Path(resolve(
            get("rules").ok_or_else(|| anyhow!("[server] needs `rules`"))?,
        ));
        let dead_letter = match get("dead_letter") {
            Some(p) => resolve(p),
            None => state_directory()
                .unwrap_or_else(|| base.to_owned())
                .join(DEFAULT_DEAD_LETTER),
        };
        let max_frame = match get("max_frame") {
            Some(v) => {
                let n = parse_size(v).map_err(|e| anyhow!("`max_frame`: {e}"))?;
                u32::try_from(n).map_err(|_| anyhow!("`max_frame` must be below 4GiB"))?
            }
            None => syncs_engine::wire::client::DEFAULT_MAX_FRAME,
        };
        let metrics = get("metrics")
            .map(|v| v.parse().context("`metrics` must be host:port"))
            .transpose()?;
        let security = ServerSecuritySettings::from_ini(ini, listen, &resolve)?;
        let max_connections = match get("max_connections") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow!("`max_connections` must be a number above 0"))?,
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let target_backlog = match get("target_backlog") {
            Some(v) => {
                let n = parse_size(v).map_err(|e| anyhow!("`target_backlog`: {e}"))?;
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| anyhow!("`target_backlog` must be above 0"))?
            }
            None => DEFAULT_TARGET_BACKLOG,
        };
        let transport = crate::nats::parse_transport(ini.section(Some("transport")))
            .context("in [transport]")?;
        let log_level = ini
            .section(Some("log"))
            .and_then(|s| s.get("level"))
            .unwrap_or("info")
            .to_owned();
        Ok(Self {
            listen,
            rules,
            dead_letter,
            max_frame,
            metrics,
            log_level,
            transport,
            security,
            max_connections,
            target_backlog,
            original: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ServerConfig> {
        let ini = Ini::load_from_str(text)?;
        ServerConfig::from_ini(&ini, Path::new("/etc/syncs"))
    }

    #[test]
    fn full_config_resolves_relative_paths() {
        let c = parse(
            "[server]\nlisten = 0.0.0.0:7000\nplaintext = yes\nrules = rules\ndead_letter = /var/lib/dl.jsonl\nmax_frame = 1MiB\nmetrics = 127.0.0.1:9740\n[log]\nlevel = debug\n",
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.rules, RulesSource::Path("/etc/syncs/rules".into()));
        assert_eq!(c.dead_letter, Path::new("/var/lib/dl.jsonl"));
        assert_eq!(c.max_frame, 1 << 20);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn typos_are_errors() {
        let err = parse("[server]\nrules = r\nlisten_addr = x\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown key `listen_addr`"),
            "{err}"
        );
        let err = parse("[sever]\nrules = r\n").unwrap_err();
        assert!(err.to_string().contains("unknown section [sever]"), "{err}");
        let err = parse("[server]\nlisten = 1.2.3.4\nrules = r\n").unwrap_err();
        assert!(format!("{err:#}").contains("host:port"), "{err:#}");
    }

    #[test]
    fn security_sections_and_limits() {
        let c = parse("[server]\nrules = r\n").expect("seed config");
        assert!(c.security.tls.is_none() && c.security.token_file.is_none());
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        let c = parse(
            "[server]\nlisten = 0.0.0.0:7379\nrules = r\nmax_connections = 10\n[tls]\ncert = tls/s.pem\nkey = tls/s.key\n[auth]\ntoken_file = token\n",
        )
        .expect("tls config");
        assert_eq!(c.max_connections, 10);
        let tls = c.security.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/syncs/tls/s.pem"));
        assert_eq!(
            c.security.token_file.as_deref(),
            Some(Path::new("/etc/syncs/token"))
        );
        let err = parse("[server]\nlisten = 0.0.0.0:7379\nrules = r\n").unwrap_err();
        assert!(format!("{err:#}").contains("plaintext = yes"), "{err:#}");
        assert!(parse("[server]\nrules = r\nmax_connections = 0\n").is_err());
        assert!(parse("[server]\nrules = r\n[tls]\ncertificate = x\n").is_err());
    }
}
