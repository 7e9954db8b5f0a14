//! The server's side: `[tls]`, `[auth]` and `[server] plaintext` of its
//! INI file, the TLS accept, and the token check after HELLO.
//!
//! ```ini
//! [server]
//! listen = 0.0.0.0:7379
//! ; plaintext = yes      ; only to accept unencrypted proxies off loopback
//! allow = 10.1.0.0/16    ; optional: the addresses proxies may connect from
//!
//! [tls]
//! cert = /etc/syncs/tls/server.pem        ; certificate chain, leaf first
//! key = /etc/syncs/tls/server.key
//! client_ca = /etc/syncs/tls/ca.pem       ; proxies must show a certificate from this CA
//! require_client_cert = yes               ; default yes when client_ca is set
//!
//! [auth]
//! token_file = /etc/syncs/token           ; proxies must send this token
//! ```
//!
//! **Plaintext rule:** without `[tls]`, the server accepts plaintext only
//! when `listen` is a loopback address or `plaintext = yes` says so;
//! otherwise it refuses to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use ini::Ini;
use syncs_engine::stats;
use syncs_engine::wire::peer::{refuse, Message, PeerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Encoder, Framed};

use super::allow::Allowlist;
use super::{parse_bool, tls, BoxIo, SecurityError, Token};
use crate::log_throttle::LogThrottle;

/// Keys of `[tls]` and `[auth]` in the server's INI.
pub const TLS_KEYS: [&str; 4] = ["cert", "key", "client_ca", "require_client_cert"];
pub const AUTH_KEYS: [&str; 1] = ["token_file"];

/// How long a new connection has, from accept, to be authenticated: the TLS
/// handshake (or, in plaintext, its first bytes), HELLO and AUTH together.
/// One deadline for all of them, so a peer trickling bytes holds a
/// connection slot for this long at most.
pub const PRE_SESSION_DEADLINE: Duration = Duration::from_secs(10);

/// The server's TLS files.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

/// The server's security settings as written in its INI file (paths
/// resolved, nothing read yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSecuritySettings {
    pub tls: Option<ServerTls>,
    pub token_file: Option<PathBuf>,
    /// `[server] allow`: only proxies from these addresses (`None`: any).
    pub allow: Option<Allowlist>,
}

impl ServerSecuritySettings {
    /// Reads `[tls]`, `[auth]`, `[server] plaintext` and `[server] allow`,
    /// and applies the plaintext rule to `listen`.
    pub fn from_ini(
        ini: &Ini,
        listen: SocketAddr,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> anyhow::Result<Self> {
        let value = |section: &str, key: &str| {
            ini.section(Some(section))
                .and_then(|s| s.get(key))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let cert = value("tls", "cert").map(resolve);
        let key = value("tls", "key").map(resolve);
        let client_ca = value("tls", "client_ca").map(resolve);
        let require = value("tls", "require_client_cert")
            .map(|v| parse_bool("require_client_cert", v))
            .transpose()?;
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                if require == Some(true) && client_ca.is_none() {
                    bail!("[tls] require_client_cert = yes needs `client_ca`: the CA that signs the proxies' certificates");
                }
                Some(ServerTls {
                    cert,
                    key,
                    require_client_cert: client_ca.is_some() && require.unwrap_or(true),
                    client_ca,
                })
            }
            (None, None) if client_ca.is_none() && require.is_none() => None,
            _ => bail!("[tls] needs both `cert` and `key` (and then optionally `client_ca`)"),
        };
        let plaintext = value("server", "plaintext")
            .map(|v| parse_bool("plaintext", v))
            .transpose()?;
        match (&tls, plaintext) {
            (Some(_), Some(true)) => bail!(
                "`plaintext = yes` and [tls] together: a TLS server accepts no plaintext proxy; remove one of them"
            ),
            (None, Some(false)) => bail!(
                "`plaintext = no` but no [tls] `cert` and `key`: configure TLS (docs/operations.md, Security)"
            ),
            (None, None) if !listen.ip().is_loopback() => bail!(
                "listen = {listen} is reachable from other machines, and no TLS is configured: \
                 set [tls] cert and key (docs/operations.md, Security), \
                 or `plaintext = yes` in [server] to accept unencrypted proxies"
            ),
            _ => {}
        }
        let token_file = value("auth", "token_file").map(resolve);
        let allow = value("server", "allow")
            .map(|v| Allowlist::parse(v).map_err(|e| anyhow::anyhow!("`allow`: {e}")))
            .transpose()?;
        Ok(Self {
            tls,
            token_file,
            allow,
        })
    }
}

/// The loaded security of a server: what `accept` and `authenticate` use.
#[derive(Clone)]
pub struct ServerSecurity {
    tls: Option<TlsAcceptor>,
    token: Option<Token>,
    allow: Option<Allowlist>,
    /// Paces the log lines about peers `allow` refuses.
    not_allowed_log: std::sync::Arc<LogThrottle>,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .field("allow", &self.allow)
            .finish()
    }
}

/// Why a connection was refused before its session started.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Refused {
    /// The `reason` label it was counted under (empty: not counted, the
    /// peer just went away).
    pub reason: &'static str,
    pub detail: String,
}

impl ServerSecurity {
    /// Reads the certificates, keys and token named by `settings`.
    pub fn load(settings: &ServerSecuritySettings) -> Result<Self, SecurityError> {
        let tls = settings
            .tls
            .as_ref()
            .map(|t| {
                tls::server_config(
                    &t.cert,
                    &t.key,
                    t.client_ca.as_deref(),
                    t.require_client_cert,
                )
            })
            .transpose()?
            .map(TlsAcceptor::from);
        let token = settings
            .token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()?;
        Ok(Self {
            tls,
            token,
            allow: settings.allow.clone(),
            not_allowed_log: Default::default(),
        })
    }

    pub fn describe(&self) -> &'static str {
        super::mode(self.tls.is_some(), self.token.is_some())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `[server] allow`, if set.
    pub fn allowlist(&self) -> Option<&Allowlist> {
        self.allow.as_ref()
    }

    /// Whether a new connection from `peer` may go on (to TLS, HELLO and
    /// the token). One `allow` refuses is counted
    /// (`reason="not_allowed"`) and logged, rate-limited: the caller closes
    /// it without reading from it.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        let Some(allow) = &self.allow else {
            return true;
        };
        if allow.allows(peer.ip()) {
            return true;
        }
        metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => "not_allowed").increment(1);
        if let Some(suppressed) = self.not_allowed_log.due() {
            tracing::warn!(
                %peer, reason = "not_allowed", more_since_last_line = suppressed,
                "proxy refused: {} is not in `allow` ({allow}); connection closed",
                peer.ip().to_canonical()
            );
        }
        false
    }

    /// Sets up the transport of a new connection: the TLS handshake, or
    /// plaintext. A plaintext peer on a TLS server gets a plaintext REFUSE
    /// (`TLS_REQUIRED`) so that it says why; a TLS peer on a plaintext
    /// server is closed. Failures are counted and logged here.
    pub async fn accept(
        &self,
        mut sock: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Result<BoxIo, Refused> {
        let result = async {
            let looks_tls = match tokio::time::timeout_at(deadline, sniff_tls(&sock)).await {
                Ok(Ok(Some(tls))) => tls,
                Ok(Ok(None)) => return Err(refused("", "closed before saying anything")),
                Ok(Err(e)) => return Err(refused("", format!("reading: {e}"))),
                Err(_) => return Err(refused("timeout", "sent nothing in time")),
            };
            match (&self.tls, looks_tls) {
                (Some(acceptor), true) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => Ok(Box::new(tls) as BoxIo),
                        Ok(Err(e)) => Err(refused(
                            tls::failure_reason(&e),
                            format!("TLS handshake failed: {e}"),
                        )),
                        Err(_) => Err(refused("timeout", "TLS handshake timed out")),
                    }
                }
                (Some(_), false) => {
                    refuse_plaintext(&mut sock).await;
                    Err(refused(
                        "plaintext",
                        "a plaintext proxy on a TLS server (refused with code 7; give the proxy [tls] ca)",
                    ))
                }
                (None, true) => Err(refused(
                    "unexpected_tls",
                    "a TLS proxy on a plaintext server (give the server [tls] cert and key, or the proxy --plaintext)",
                )),
                (None, false) => Ok(Box::new(sock) as BoxIo),
            }
        }
        .await;
        if let Err(r) = &result {
            if !r.reason.is_empty() {
                metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => r.reason).increment(1);
                tracing::warn!(%peer, reason = r.reason, "proxy refused: {}", r.detail);
            }
        }
        result
    }

    /// After HELLO: reads AUTH (version 2 and later) and checks the token
    /// when the server has one. On failure sends REFUSE, counts, logs, and
    /// returns an error: the session ends before any BATCH is read.
    pub async fn authenticate<S>(
        &self,
        framed: &mut Framed<S, PeerCodec>,
        version: u16,
        peer: SocketAddr,
        deadline: Instant,
    ) -> anyhow::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let failed = |reason: &'static str| {
            metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => reason).increment(1);
        };
        let offered = if version >= 2 {
            match tokio::time::timeout_at(deadline, framed.next()).await {
                Ok(Some(Ok(Message::Auth { token }))) => Some(token),
                Ok(Some(Ok(other))) => {
                    failed("bad_message");
                    let _ = framed
                        .send(Message::Refuse {
                            code: refuse::BAD_MESSAGE,
                            reason: "expected AUTH after a version 2 HELLO".into(),
                        })
                        .await;
                    bail!("{peer}: expected AUTH, got {other:?}");
                }
                Ok(Some(Err(e))) => {
                    failed("bad_message");
                    bail!("{peer}: bad AUTH: {e}")
                }
                Ok(None) => bail!("{peer}: closed before AUTH"),
                Err(_) => {
                    failed("auth_timeout");
                    bail!("{peer}: no AUTH within {PRE_SESSION_DEADLINE:?} of connecting")
                }
            }
        } else {
            None
        };
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let (reason, code, detail) = match offered.filter(|t| !t.is_empty()) {
            Some(t) if expected.matches(t.as_bytes()) => return Ok(()),
            Some(_) => (
                "bad_token",
                refuse::BAD_TOKEN,
                "the token does not match this server's",
            ),
            None => (
                "no_token",
                refuse::TOKEN_REQUIRED,
                "this server requires a token: set [auth] token_file (or --token-file) on the proxy",
            ),
        };
        metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => reason).increment(1);
        tracing::warn!(%peer, reason, "proxy refused: {detail}");
        let _ = framed
            .send(Message::Refuse {
                code,
                reason: detail.into(),
            })
            .await;
        bail!("{peer}: {detail}")
    }
}

fn refused(reason: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// Waits for the first bytes and tells whether they open a TLS handshake
/// record (`0x16 0x03 0x01..=0x04`). A syncs HELLO never does: its first
/// four bytes are a length below 2^17, so its third byte is 0 or 1 only
/// when its second is not 3. `None`: the peer closed.
async fn sniff_tls(sock: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; 3];
    loop {
        let n = sock.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[0] != 0x16 || (n >= 2 && buf[1] != 0x03) {
            return Ok(Some(false));
        }
        if n >= 3 {
            return Ok(Some((1..=4).contains(&buf[2])));
        }
        // Fewer bytes than needed so far: wait for more.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tells a plaintext peer, in plaintext, that TLS is required; reads what
/// it sent first, so that closing does not reset the connection before it
/// reads the REFUSE.
async fn refuse_plaintext(sock: &mut TcpStream) {
    let mut scratch = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut scratch)).await;
    let mut out = BytesMut::new();
    let msg = Message::Refuse {
        code: refuse::TLS_REQUIRED,
        reason: "this server accepts TLS only: set [tls] ca (or --tls-ca) on the proxy".into(),
    };
    if PeerCodec::new(1 << 16).encode(msg, &mut out).is_ok() {
        let _ = sock.write_all(&out).await;
    }
    let _ = sock.shutdown().await;
    // Let the peer read the REFUSE and close first.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(sock.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use std::path::Path;

    fn parse(text: &str) -> anyhow::Result<ServerSecuritySettings> {
        let ini = Ini::load_from_str(text)?;
        let listen = ini
            .section(Some("server"))
            .and_then(|s| s.get("listen"))
            .unwrap_or("127.0.0.1:7379")
            .parse()
            .context("listen")?;
        ServerSecuritySettings::from_ini(&ini, listen, &|p| Path::new("/etc/syncs").join(p))
    }

    #[test]
    fn shipped_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c = crate::config::ServerConfig::load(&root.join("configs/rmt.ini"))
            .expect("configs/rmt.ini is valid");
        assert!(c.listen.ip().is_loopback() && c.security.tls.is_none());
        let flags = crate::security::proxy::ProxyFlags {
            config: Some(root.join("configs/proxy.ini")),
            ..Default::default()
        };
        let p = crate::security::proxy::ProxySettings::resolve(&flags)
            .expect("configs/proxy.ini is valid");
        assert!(p.tls.is_none() && !p.plaintext);
        assert_eq!(p.max_clients, 1024);
    }

    #[test]
    fn loopback_plaintext_is_the_default() {
        let s = parse("[server]\nlisten = 127.0.0.1:7379\n").expect("valid");
        assert_eq!(s, ServerSecuritySettings::default());
        let s = parse("[server]\nlisten = [::1]:7379\n").expect("valid");
        assert!(s.tls.is_none());
    }

    #[test]
    fn plaintext_off_loopback_needs_saying_so() {
        let err = parse("[server]\nlisten = 0.0.0.0:7379\n").expect_err("refused");
        let err = err.to_string();
        assert!(
            err.contains("[tls] cert and key") && err.contains("plaintext = yes"),
            "{err}"
        );
        let s = parse("[server]\nlisten = 0.0.0.0:7379\nplaintext = yes\n").expect("explicit");
        assert!(s.tls.is_none());
        assert!(parse("[server]\nplaintext = no\n").is_err());
    }

    #[test]
    fn allow_is_a_list_of_addresses_with_any_security() {
        let s = parse("[server]\nallow = 10.0.0.0/8, 127.0.0.1\n").expect("valid");
        let allow = s.allow.expect("allow");
        assert!(allow.allows("10.9.8.7".parse().expect("ip")));
        assert!(!allow.allows("192.168.0.1".parse().expect("ip")));
        let s = parse(
            "[server]\nlisten = 0.0.0.0:7379\nallow = 192.168.1.2\n[tls]\ncert = s.pem\nkey = s.key\n[auth]\ntoken_file = t\n",
        )
        .expect("with TLS and a token");
        assert!(s.allow.is_some() && s.tls.is_some() && s.token_file.is_some());
        let err = parse("[server]\nallow = 10.0.0.1, proxy-a\n").expect_err("a name");
        assert!(
            format!("{err:#}").contains("`allow`: `proxy-a` is not an IP address"),
            "{err:#}"
        );
        // `allow` alone does not open plaintext off loopback.
        assert!(parse("[server]\nlisten = 0.0.0.0:7379\nallow = 10.0.0.1\n").is_err());
    }

    #[test]
    fn tls_and_client_certificates() {
        let s = parse("[server]\nlisten = 0.0.0.0:7379\n[tls]\ncert = s.pem\nkey = /k/s.key\n")
            .expect("tls");
        let tls = s.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/syncs/s.pem"));
        assert_eq!(tls.key, Path::new("/k/s.key"));
        assert!(tls.client_ca.is_none() && !tls.require_client_cert);

        let s = parse(
            "[tls]\ncert = s.pem\nkey = s.key\nclient_ca = ca.pem\n[auth]\ntoken_file = token\n",
        )
        .expect("mtls");
        let tls = s.tls.expect("tls");
        assert!(
            tls.require_client_cert,
            "client_ca alone requires certificates"
        );
        assert_eq!(s.token_file.as_deref(), Some(Path::new("/etc/syncs/token")));

        let s = parse(
            "[tls]\ncert = s.pem\nkey = s.key\nclient_ca = ca.pem\nrequire_client_cert = no\n",
        )
        .expect("optional");
        assert!(!s.tls.expect("tls").require_client_cert);

        for bad in [
            "[tls]\ncert = s.pem\n",
            "[tls]\nkey = s.key\n",
            "[tls]\nclient_ca = ca.pem\n",
            "[tls]\ncert = s.pem\nkey = s.key\nrequire_client_cert = yes\n",
            "[tls]\ncert = s.pem\nkey = s.key\nrequire_client_cert = perhaps\n",
            "[server]\nplaintext = yes\n[tls]\ncert = s.pem\nkey = s.key\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
