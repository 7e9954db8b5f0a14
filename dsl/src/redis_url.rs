//! The parts of a `redis://` / `rediss://` URL the checker compares across
//! the seed list of a `redis-cluster` or `redis-sentinel` target.
//!
//! The form is Redis' own (and the `redis` crate's, which the engine uses
//! to connect): `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?...]`,
//! user and password percent-encoded, an IPv6 host in brackets. This is a
//! check, not a connection: the query is not looked at.

/// One URL of a list, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisUrl {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Percent-decoded; `None` when not given (an empty user is `None`).
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// The `/DB` path, when there is one.
    pub(crate) db: Option<u64>,
}

/// Takes `url` apart; the error says what is wrong, in words that fit after
/// "`URL`: ".
pub(crate) fn parse(url: &str) -> Result<RedisUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else {
        return Err("must start with redis:// or rediss://".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, password) = match u.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (u, None),
            };
            let user = Some(decode(user)?).filter(|s| !s.is_empty());
            let password = password.map(decode).transpose()?;
            (user, password)
        }
    };
    let (host, port) = split_host_port(hostport)?;
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let db = match path.trim_start_matches('/') {
        "" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| format!("`/{n}` is not a db number"))?,
        ),
    };
    Ok(RedisUrl {
        tls,
        host,
        port,
        user,
        password,
        db,
    })
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| "unclosed `[` in the host".to_string())?;
        let after = &v6[close + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{p}` after the host"))?,
            ),
        };
        (&v6[..close], port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{p}` is not a port (1 to 65535)"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding, as URLs encode user names and passwords.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad `%` escape in the user or password".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user or password is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> RedisUrl {
        match parse(url) {
            Ok(u) => u,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn parts() {
        let u = ok("redis://127.0.0.1:7000");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 7000));
        assert_eq!((u.user, u.password, u.db), (None, None, None));
        let u = ok("rediss://app:p%40ss@[::1]:7001/3?protocol=resp3");
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 7001));
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.db, Some(3));
        let u = ok("redis://:secret@h");
        assert_eq!(
            (u.user, u.password.as_deref(), u.port),
            (None, Some("secret"), 6379)
        );
        assert_eq!(ok("redis://h/").db, None);
    }

    #[test]
    fn mistakes() {
        for (url, words) in [
            ("http://h", "must start with"),
            ("redis://", "has no host"),
            ("redis://:7000", "has no host"),
            ("redis://h:x", "`x` is not a port"),
            ("redis://h:0", "`0` is not a port"),
            ("redis://h/db1", "`/db1` is not a db number"),
            ("redis://[::1", "unclosed `[`"),
            ("redis://a:%zz@h", "bad `%` escape"),
        ] {
            match parse(url) {
                Ok(u) => panic!("{url} parsed: {u:?}"),
                Err(e) => assert!(e.contains(words), "{url}: {e}"),
            }
        }
    }
}
