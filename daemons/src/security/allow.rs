//! `[server] allow`: the addresses proxies may connect from.
//!
//! ```ini
//! [server]
//! allow = 127.0.0.1, 10.1.0.0/16, ::1
//! ```
//!
//! Entries are IP addresses or networks in CIDR form, separated by commas;
//! names are not resolved (no DNS at accept). A peer whose address is in
//! none of them is closed at accept, before anything is read from it,
//! logged (rate-limited) and counted as
//! `syncs_server_auth_failures_total{reason="not_allowed"}`. It is checked
//! before TLS and the token, and works with both. An IPv4 peer reaching an
//! IPv6 socket (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The networks proxies may connect from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// Parses `a, b/n, ...`. Every bad entry is named in the error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        let mut bad = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = if item.contains('/') {
                item.parse::<IpNet>().ok().map(|n| n.trunc())
            } else {
                item.parse::<IpAddr>().ok().map(IpNet::from)
            };
            match net {
                Some(n) => nets.push(n),
                None => bad.push(format!("`{item}`")),
            }
        }
        if !bad.is_empty() {
            return Err(format!(
                "{} {} not an IP address or network (write e.g. 192.168.1.2 or 10.0.0.0/8; names are not resolved)",
                bad.join(", "),
                if bad.len() == 1 { "is" } else { "are" }
            ));
        }
        if nets.is_empty() {
            return Err("lists no address: it would refuse every proxy".into());
        }
        Ok(Self { nets })
    }

    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl fmt::Display for Allowlist {
    /// `127.0.0.1, 10.0.0.0/8`: a single address without its `/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if n.prefix_len() == n.max_prefix_len() {
                write!(f, "{}", n.addr())?;
            } else {
                write!(f, "{n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn addresses_and_networks() {
        let a =
            Allowlist::parse(" 127.0.0.1,192.168.1.2 , 10.0.0.0/8, ::1, fd00::/8,").expect("valid");
        assert_eq!(a.len(), 5);
        for yes in [
            "127.0.0.1",
            "192.168.1.2",
            "10.200.3.4",
            "::1",
            "fd12::5",
            "::ffff:10.1.1.1",
        ] {
            assert!(a.allows(ip(yes)), "{yes}");
        }
        for no in [
            "127.0.0.2",
            "192.168.1.3",
            "11.0.0.1",
            "::2",
            "::ffff:127.0.0.2",
        ] {
            assert!(!a.allows(ip(no)), "{no}");
        }
        assert_eq!(
            a.to_string(),
            "127.0.0.1, 192.168.1.2, 10.0.0.0/8, ::1, fd00::/8"
        );
        // Host bits of a network are dropped.
        assert_eq!(
            Allowlist::parse("10.1.2.3/8").expect("valid").to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn bad_entries_are_all_named() {
        let err =
            Allowlist::parse("127.0.0.1, proxy.example, 10.0.0.300, 10.0.0.0/33").expect_err("bad");
        assert!(
            err.contains("`proxy.example`, `10.0.0.300`, `10.0.0.0/33` are not an IP address"),
            "{err}"
        );
        let err = Allowlist::parse(" , ").expect_err("empty");
        assert!(err.contains("lists no address"), "{err}");
    }
}
