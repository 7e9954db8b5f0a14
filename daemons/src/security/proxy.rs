//! The proxy's side: its settings from `/etc/syncs/proxy.ini` and flags,
//! the plaintext rule for its destinations, and the TLS connect.
//!
//! ```ini
//! [proxy]
//! ; plaintext = yes          ; send unencrypted to servers off this machine
//! socket_group = app         ; group of the unix socket (mode --socket-mode)
//! max_clients = 1024         ; client connections at once
//!
//! [tls]
//! ca = /etc/syncs/tls/ca.pem             ; the CA of the servers' certificates
//! cert = /etc/syncs/tls/proxy.pem        ; this proxy's certificate (mutual TLS)
//! key = /etc/syncs/tls/proxy.key
//! server_name = syncs-server.example     ; name to verify (default: the -d host)
//!
//! [auth]
//! token_file = /etc/syncs/token
//! ```
//!
//! A flag wins over the same setting in the file. The file is
//! `--config <file>`, or `/etc/syncs/proxy.ini` when it exists, so that
//! `proxy -u <socket> -d <host>` stays the whole command line.
//!
//! **Plaintext rule:** without `[tls] ca` the proxy speaks plaintext, which
//! it does only to loopback destinations (127.0.0.0/8, ::1, `localhost`)
//! unless `--plaintext` or `plaintext = yes` says so; otherwise it refuses
//! to start, before connecting anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use ini::Ini;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{host_of, is_loopback_host, parse_bool, tls, BoxIo, SecurityError, Token};

/// Where the proxy looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/syncs/proxy.ini";
/// Client connections at once, by default.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

const PROXY_KEYS: [&str; 3] = ["plaintext", "socket_group", "max_clients"];
const TLS_KEYS: [&str; 4] = ["ca", "cert", "key", "server_name"];
const AUTH_KEYS: [&str; 1] = ["token_file"];

/// The security flags of the command line (each `None`/`false` when not
/// given); each wins over the same setting of the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyFlags {
    /// Security settings file ([proxy], [tls], [auth]); default
    /// /etc/syncs/proxy.ini when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// CA certificate(s) (PEM) that the servers' certificates must chain
    /// to; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This proxy's certificate chain (PEM), for servers that require
    /// client certificates.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Name the server certificate must carry (default: the -d host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// File holding the shared token the servers require (never the token
    /// itself on the command line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow unencrypted connections to servers off this machine (loopback
    /// destinations are always allowed plaintext).
    #[arg(long)]
    pub plaintext: bool,
    /// Group that owns the unix socket (a name or a number), so that its
    /// members may write to it under --socket-mode.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Client connections at once; more are accepted and closed at once,
    /// counted in syncs_proxy_clients_refused_total [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_clients: Option<usize>,
}

/// The proxy's TLS files.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyTls {
    pub ca: PathBuf,
    /// Certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub server_name: Option<String>,
}

/// The merged settings: file, then flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// The file read, if any (named in messages).
    pub file: Option<PathBuf>,
    pub tls: Option<ProxyTls>,
    pub token_file: Option<PathBuf>,
    /// Plaintext to destinations off this machine is allowed.
    pub plaintext: bool,
    pub socket_group: Option<String>,
    pub max_clients: usize,
}

impl ProxySettings {
    /// Reads the file (`--config`, or the default one when it exists) and
    /// lays the flags over it.
    pub fn resolve(flags: &ProxyFlags) -> anyhow::Result<Self> {
        let path = match &flags.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let ini = match &path {
            Some(p) => Some(
                Ini::load_from_file(p)
                    .with_context(|| format!("reading config {}", p.display()))?,
            ),
            None => None,
        };
        let base = path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        Self::from_parts(ini.as_ref(), base, path.clone(), flags).with_context(|| match &path {
            Some(p) => format!("in config {} and the flags", p.display()),
            None => "in the flags".to_owned(),
        })
    }

    fn from_parts(
        ini: Option<&Ini>,
        base: &Path,
        file: Option<PathBuf>,
        flags: &ProxyFlags,
    ) -> anyhow::Result<Self> {
        if let Some(ini) = ini {
            check_keys(ini)?;
        }
        let value = |section: &str, key: &str| {
            ini.and_then(|i| i.section(Some(section)))
                .and_then(|s| s.get(key))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let path = |section: &str, key: &str| {
            value(section, key).map(|p| {
                let p = PathBuf::from(p);
                if p.is_absolute() {
                    p
                } else {
                    base.join(p)
                }
            })
        };
        let cli_tls = flags.tls_ca.is_some()
            || flags.tls_cert.is_some()
            || flags.tls_key.is_some()
            || flags.tls_server_name.is_some();
        if flags.plaintext && cli_tls {
            bail!("--plaintext and --tls-* flags together: choose one");
        }
        let file_plaintext = value("proxy", "plaintext")
            .map(|v| parse_bool("plaintext", &v))
            .transpose()?;
        let file_tls = value("tls", "ca").is_some()
            || value("tls", "cert").is_some()
            || value("tls", "key").is_some()
            || value("tls", "server_name").is_some();
        if file_plaintext == Some(true) && file_tls {
            bail!("`plaintext = yes` and [tls] together: remove one of them");
        }
        let tls = if flags.plaintext {
            if file_tls {
                tracing::warn!("--plaintext: the [tls] settings of the config file are not used");
            }
            None
        } else {
            let ca = flags.tls_ca.clone().or_else(|| path("tls", "ca"));
            let cert = flags.tls_cert.clone().or_else(|| path("tls", "cert"));
            let key = flags.tls_key.clone().or_else(|| path("tls", "key"));
            let server_name = flags
                .tls_server_name
                .clone()
                .or_else(|| value("tls", "server_name"));
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => bail!(
                    "a client certificate needs both `cert` and `key` (--tls-cert and --tls-key)"
                ),
            };
            match ca {
                Some(ca) => Some(ProxyTls {
                    ca,
                    identity,
                    server_name,
                }),
                None if identity.is_some() || server_name.is_some() => bail!(
                    "TLS settings without `ca` (--tls-ca): name the CA that signs the servers' certificates"
                ),
                None => None,
            }
        };
        let plaintext = flags.plaintext || (tls.is_none() && file_plaintext == Some(true));
        let token_file = flags
            .token_file
            .clone()
            .or_else(|| path("auth", "token_file"));
        let socket_group = flags
            .socket_group
            .clone()
            .or_else(|| value("proxy", "socket_group"));
        let max_clients = match flags.max_clients {
            Some(n) => n,
            None => value("proxy", "max_clients")
                .map(|v| v.parse::<usize>().context("`max_clients` must be a number"))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_CLIENTS),
        };
        if max_clients == 0 {
            bail!("max_clients must be at least 1");
        }
        Ok(Self {
            file,
            tls,
            token_file,
            plaintext,
            socket_group,
            max_clients,
        })
    }

    /// The plaintext rule: without TLS, every destination must be on this
    /// machine unless plaintext was asked for.
    pub fn check_destinations(&self, destinations: &[String]) -> anyhow::Result<()> {
        if self.tls.is_some() {
            return Ok(());
        }
        let remote: Vec<&String> = destinations
            .iter()
            .filter(|d| !is_loopback_host(host_of(d)))
            .collect();
        let Some(first) = remote.first() else {
            return Ok(());
        };
        if !self.plaintext {
            let file = self
                .file
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_CONFIG))
                .display()
                .to_string();
            bail!(
                "destination {first} is not on this machine and no TLS is configured: \
                 set [tls] ca (the CA of the server's certificate) in {file} or pass --tls-ca <file>; \
                 or pass --plaintext (or `plaintext = yes` in [proxy]) to send unencrypted"
            );
        }
        tracing::warn!(destinations = ?remote, "sending unencrypted to servers off this machine (plaintext)");
        if self.token_file.is_some() {
            tracing::warn!("the token travels unencrypted to {first}: configure TLS");
        }
        Ok(())
    }
}

fn check_keys(ini: &Ini) -> anyhow::Result<()> {
    crate::config::check_keys(
        ini,
        &[
            ("proxy", &PROXY_KEYS),
            ("tls", &TLS_KEYS),
            ("auth", &AUTH_KEYS),
        ],
        "[proxy], [tls] or [auth]",
        "settings must sit in a [proxy], [tls] or [auth] section",
    )
}

/// The loaded security of a proxy: its TLS connector and token.
#[derive(Clone)]
pub struct ProxySecurity {
    tls: Option<(TlsConnector, Option<String>)>,
    token: Option<Token>,
}

impl std::fmt::Debug for ProxySecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySecurity")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// How long the TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

impl ProxySecurity {
    /// Plaintext, no token: what tests and loopback use.
    pub fn plaintext() -> Self {
        Self {
            tls: None,
            token: None,
        }
    }

    /// Reads the CA, certificate, key and token named by `settings`.
    pub fn load(settings: &ProxySettings) -> Result<Self, SecurityError> {
        let tls = settings
            .tls
            .as_ref()
            .map(|t| {
                let identity = t.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
                tls::client_config(&t.ca, identity)
                    .map(|c| (TlsConnector::from(c), t.server_name.clone()))
            })
            .transpose()?;
        let token = settings
            .token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()?;
        Ok(Self { tls, token })
    }

    pub fn describe(&self) -> &'static str {
        super::mode(self.tls.is_some(), self.token.is_some())
    }

    /// The token for AUTH (empty: none).
    pub fn token(&self) -> Bytes {
        self.token
            .as_ref()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .unwrap_or_default()
    }

    /// Puts TLS over a connection to `addr` (`host:port`) when configured,
    /// verifying the server's certificate for the configured server name,
    /// or else the host of `addr`.
    pub async fn secure(&self, sock: TcpStream, addr: &str) -> anyhow::Result<BoxIo> {
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(sock));
        };
        let host = match name {
            Some(n) => n.clone(),
            None => {
                let h = host_of(addr);
                h.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h)
                    .to_owned()
            }
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("`{host}` is not a valid TLS server name"))?;
        let tls = tokio::time::timeout(TLS_TIMEOUT, connector.connect(server_name, sock))
            .await
            .map_err(|_| anyhow!("TLS handshake timed out"))?
            .with_context(|| format!("TLS handshake (verifying the server as `{host}`)"))?;
        Ok(Box::new(tls))
    }
}

/// What the proxy's accept loop and links need from this module.
#[derive(Debug, Clone)]
pub struct SecurityOptions {
    pub security: Arc<ProxySecurity>,
    /// Group of the socket file (`--socket-group`), resolved to an id.
    pub socket_group: Option<u32>,
    /// Client connections at once (`--max-clients`).
    pub max_clients: usize,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            security: Arc::new(ProxySecurity::plaintext()),
            socket_group: None,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

impl SecurityOptions {
    /// Loads everything `settings` names and checks the plaintext rule
    /// against `destinations`: the proxy refuses to start on any error.
    pub fn load(settings: &ProxySettings, destinations: &[String]) -> anyhow::Result<Self> {
        settings.check_destinations(destinations)?;
        let security = ProxySecurity::load(settings)?;
        tracing::info!(
            security = security.describe(),
            config = ?settings.file,
            max_clients = settings.max_clients,
            "towards the servers"
        );
        let socket_group = settings
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        Ok(Self {
            security: Arc::new(security),
            socket_group,
            max_clients: settings.max_clients,
        })
    }
}

/// The group id of `--socket-group`: a group name or a number.
pub fn resolve_group(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("socket group `{group}` does not exist"),
        Err(e) => bail!("looking up socket group `{group}`: {e}"),
    }
}

/// Gives the socket file to `gid` (its mode is set separately).
pub fn chown_socket(path: &Path, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))
        .with_context(|| format!("giving {} to group {gid}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: &str, flags: &ProxyFlags) -> anyhow::Result<ProxySettings> {
        let ini = Ini::load_from_str(file)?;
        ProxySettings::from_parts(
            Some(&ini),
            Path::new("/etc/syncs"),
            Some(PathBuf::from("/etc/syncs/proxy.ini")),
            flags,
        )
    }

    fn dests(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn no_file_no_flags_is_loopback_plaintext() {
        let s = ProxySettings::from_parts(None, Path::new("."), None, &ProxyFlags::default())
            .expect("defaults");
        assert!(s.tls.is_none() && !s.plaintext && s.token_file.is_none());
        assert_eq!(s.max_clients, DEFAULT_MAX_CLIENTS);
        s.check_destinations(&dests(&["127.0.0.1:7379", "localhost", "[::1]:7000"]))
            .expect("loopback is fine");
        let err = s
            .check_destinations(&dests(&["127.0.0.1", "10.1.2.3:7379"]))
            .expect_err("remote needs TLS")
            .to_string();
        assert!(err.contains("10.1.2.3:7379"), "{err}");
        assert!(
            err.contains("--tls-ca") && err.contains("--plaintext"),
            "{err}"
        );
        assert!(err.contains("/etc/syncs/proxy.ini"), "{err}");
    }

    #[test]
    fn plaintext_flag_or_key_allows_remote() {
        let flags = ProxyFlags {
            plaintext: true,
            ..ProxyFlags::default()
        };
        let s = settings("", &flags).expect("flag");
        s.check_destinations(&dests(&["db.example:7379"]))
            .expect("explicit plaintext");
        let s = settings("[proxy]\nplaintext = yes\n", &ProxyFlags::default()).expect("key");
        s.check_destinations(&dests(&["db.example"]))
            .expect("explicit plaintext");
    }

    #[test]
    fn file_settings_resolve_and_flags_win() {
        let file = "[proxy]\nsocket_group = app\nmax_clients = 8\n[tls]\nca = tls/ca.pem\ncert = /x/p.pem\nkey = p.key\nserver_name = srv\n[auth]\ntoken_file = token\n";
        let s = settings(file, &ProxyFlags::default()).expect("valid");
        let tls = s.tls.clone().expect("tls");
        assert_eq!(tls.ca, Path::new("/etc/syncs/tls/ca.pem"));
        assert_eq!(
            tls.identity,
            Some((PathBuf::from("/x/p.pem"), PathBuf::from("/etc/syncs/p.key")))
        );
        assert_eq!(tls.server_name.as_deref(), Some("srv"));
        assert_eq!(s.token_file.as_deref(), Some(Path::new("/etc/syncs/token")));
        assert_eq!(s.socket_group.as_deref(), Some("app"));
        assert_eq!(s.max_clients, 8);
        s.check_destinations(&dests(&["10.0.0.5"]))
            .expect("TLS anywhere");

        let flags = ProxyFlags {
            tls_ca: Some(PathBuf::from("/other/ca.pem")),
            token_file: Some(PathBuf::from("/run/t")),
            max_clients: Some(3),
            socket_group: Some("web".into()),
            ..ProxyFlags::default()
        };
        let s = settings(file, &flags).expect("valid");
        assert_eq!(s.tls.expect("tls").ca, Path::new("/other/ca.pem"));
        assert_eq!(s.token_file.as_deref(), Some(Path::new("/run/t")));
        assert_eq!(s.max_clients, 3);
        assert_eq!(s.socket_group.as_deref(), Some("web"));

        // --plaintext turns the file's TLS off.
        let flags = ProxyFlags {
            plaintext: true,
            ..ProxyFlags::default()
        };
        let s = settings(file, &flags).expect("valid");
        assert!(s.tls.is_none() && s.plaintext);
    }

    #[test]
    fn contradictions_and_typos_are_errors() {
        let both = ProxyFlags {
            plaintext: true,
            tls_ca: Some(PathBuf::from("ca.pem")),
            ..ProxyFlags::default()
        };
        assert!(settings("", &both).is_err());
        for bad in [
            "[proxy]\nplaintext = yes\n[tls]\nca = ca.pem\n",
            "[tls]\ncert = c.pem\nkey = k.pem\n",
            "[tls]\nca = ca.pem\ncert = c.pem\n",
            "[tls]\nca_file = ca.pem\n",
            "[proxi]\nplaintext = yes\n",
            "[proxy]\nmax_clients = many\n",
            "[proxy]\nmax_clients = 0\n",
            "[proxy]\nplaintext = sure\n",
        ] {
            assert!(settings(bad, &ProxyFlags::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(resolve_group("0").expect("number"), 0);
        assert_eq!(resolve_group("root").expect("root exists"), 0);
        assert!(resolve_group("no-such-group-syncs").is_err());
    }
}
