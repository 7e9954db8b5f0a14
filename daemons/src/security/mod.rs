//! Who may talk to whom: TLS between proxy and server, the shared token,
//! the plaintext rule, and connection limits.
//!
//! - [`tls`]: certificates and keys from PEM files, rustls configurations.
//! - [`server`]: the server's `[tls]` / `[auth]` settings, the TLS accept
//!   (with plaintext and TLS-mismatch detection) and the token check.
//! - [`proxy`]: the proxy's settings (`/etc/syncs/proxy.ini` and flags),
//!   the plaintext rule for its destinations, and the TLS connect.
//! - [`limits`]: at most N connections at once, the rest accepted and
//!   closed, counted and logged (rate-limited).
//! - [`allow`]: `[server] allow`, the addresses proxies may connect from;
//!   any other peer is closed at accept and counted.
//!
//! A peer that fails authentication is refused before any record is read:
//! a TLS failure ends the connection at the handshake, a missing or wrong
//! token gets REFUSE before WELCOME. Every refusal is logged with the
//! peer's address and counted in `syncs_server_auth_failures_total{reason}`.

pub mod allow;
pub mod limits;
pub mod proxy;
pub mod server;
pub mod tls;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use syncs_engine::wire::peer::MAX_TOKEN;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a peer: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection to a peer, whichever transport security it has.
pub type BoxIo = Box<dyn Io>;

/// The shortest token accepted: a guessable token protects nothing.
pub const MIN_TOKEN: usize = 16;

/// A problem with a security setting or file.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("reading the token file {path}: {source}")]
    TokenRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token in {path} is {len} bytes; it must be {MIN_TOKEN} to {MAX_TOKEN} bytes \
         (make one with `openssl rand -hex 32 > {path}`)"
    )]
    TokenLength { path: PathBuf, len: usize },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The shared secret between proxies and a server, read from a file (never
/// from the command line, where `ps` would show it).
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

impl Token {
    /// Reads the token: the file's content without surrounding whitespace
    /// (so `echo`'s newline does not count). Warns when the file is
    /// readable by every user.
    pub fn from_file(path: &Path) -> Result<Self, SecurityError> {
        let read_err = |source| SecurityError::TokenRead {
            path: path.to_owned(),
            source,
        };
        let raw = std::fs::read(path).map_err(read_err)?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the token file is readable by every user; `chmod 640` it"
                );
            }
        }
        let token = raw.trim_ascii();
        if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len()) {
            return Err(SecurityError::TokenLength {
                path: path.to_owned(),
                len: token.len(),
            });
        }
        Ok(Self(token.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Compares in constant time: neither how many leading bytes match nor
    /// the token's length shows in the time taken (both sides are padded
    /// to the longest token allowed before comparing).
    pub fn matches(&self, offered: &[u8]) -> bool {
        if offered.len() > MAX_TOKEN || self.0.len() > MAX_TOKEN {
            return false;
        }
        let mut mine = [0u8; MAX_TOKEN];
        let mut theirs = [0u8; MAX_TOKEN];
        mine[..self.0.len()].copy_from_slice(&self.0);
        theirs[..offered.len()].copy_from_slice(offered);
        let same_len = (self.0.len() as u64).ct_eq(&(offered.len() as u64));
        bool::from(mine.ct_eq(&theirs) & same_len)
    }
}

/// Whether `host` (an IP address, `[v6]`, or a name) is this machine for
/// certain. Names other than `localhost` are not resolved: a name is taken
/// as remote, so the plaintext rule never depends on DNS.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host:port` (brackets of an IPv6 address kept).
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    }
}

/// Parses an INI yes/no value.
pub fn parse_bool(key: &str, value: &str) -> anyhow::Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        other => anyhow::bail!("`{key}` must be yes or no, not `{other}`"),
    }
}

/// How a link is secured, for log lines: `tls`, `plaintext`, either with
/// `+token`.
pub fn mode(tls: bool, token: bool) -> &'static str {
    match (tls, token) {
        (true, true) => "tls+token",
        (true, false) => "tls",
        (false, true) => "plaintext+token",
        (false, false) => "plaintext",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.3.4.5",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "0.0.0.0",
            "myhost",
            "[::]",
            "example.com",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert_eq!(host_of("10.0.0.1:7379"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7379"), "[::1]");
        assert_eq!(host_of("server.example"), "server.example");
    }

    #[test]
    fn token_file_is_trimmed_bounded_and_compared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        let t = Token::from_file(&path).expect("valid token");
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef0124"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b""));
        assert!(
            !t.matches(b"0123456789abcdef0123\0"),
            "padding does not match"
        );
        assert!(!t.matches(&[b'x'; MAX_TOKEN + 1]));
        assert!(!format!("{t:?}").contains("0123"));

        std::fs::write(&path, "short\n").expect("write");
        let err = Token::from_file(&path).expect_err("too short").to_string();
        assert!(
            err.contains("5 bytes") && err.contains("openssl rand"),
            "{err}"
        );
        let err = Token::from_file(&dir.path().join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn yes_and_no() {
        assert!(parse_bool("k", "Yes").expect("yes"));
        assert!(!parse_bool("k", "off").expect("off"));
        assert!(parse_bool("k", "maybe").is_err());
    }
}
