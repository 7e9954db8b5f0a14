//! Finding the master of a Sentinel-managed Redis: the resolver behind a
//! `redis-sentinel` target.
//!
//! Follows the Sentinel client guidelines
//! (<https://redis.io/docs/latest/develop/reference/sentinel-clients/>):
//! the sentinels are asked in order, and the one whose answer led to the
//! master moves to the front of the list; `SENTINEL get-master-addr-by-name`
//! gives `[ip, port]`; the server found there is asked `ROLE` and used only
//! if it says `master`. When it cannot be reached or is not the master, the
//! next sentinel's answer is tried (a sentinel cut off from the others
//! may name a master long gone). When a server named master is a replica
//! (a failover under way) the sentinels are asked again after a short
//! pause, a bounded number of times.
//!
//! The resolver keeps no connection and no cached address: the applier asks
//! it on every (re)connect, and drops its connection on anything that may
//! mean a failover (the connection closed, READONLY, a WAIT error or
//! shortfall), so the next attempt finds the new master.

use std::sync::Mutex;
use std::time::Duration;

use super::conn::{Conn, Endpoint};
use crate::wire::reply::{escape, Reply};

/// How often a server a sentinel named is found not to be the master
/// before the attempt is given up (the caller retries later).
const ROLE_ATTEMPTS: u32 = 10;
/// The pause before the sentinels are asked again after that.
const ROLE_PAUSE: Duration = Duration::from_millis(100);

/// The sentinels of one master, and how to reach the master they name.
#[derive(Debug)]
pub(super) struct Resolver {
    /// In the order to ask them; the last to answer is first.
    sentinels: Mutex<Vec<Endpoint>>,
    master: String,
    /// Credentials and timeouts for the data nodes (its address is unused).
    data: Endpoint,
}

impl Resolver {
    /// `sentinels` carry the credentials to use with the sentinels, `data`
    /// those for the master (and the timeouts of both).
    pub(super) fn new(
        sentinels: Vec<Endpoint>,
        master: String,
        data: Endpoint,
    ) -> Result<Self, String> {
        if sentinels.is_empty() {
            return Err("a sentinel target needs at least one sentinel URL".into());
        }
        if master.is_empty() {
            return Err("a sentinel target needs the master's name".into());
        }
        Ok(Self {
            sentinels: Mutex::new(sentinels),
            master,
            data,
        })
    }

    /// Finds the master and connects to it; the connection has been
    /// checked to be a master's.
    pub(super) async fn connect(&self) -> Result<(Endpoint, Conn), String> {
        let mut failures = Vec::new();
        let mut named_any = false;
        for attempt in 0..ROLE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(ROLE_PAUSE).await;
            }
            failures.clear();
            let mut failing_over = false;
            let sentinels = self
                .sentinels
                .lock()
                .map_err(|_| "the sentinel list was poisoned".to_owned())?
                .clone();
            let mut tried: Vec<(String, u16)> = Vec::new();
            for (i, sentinel) in sentinels.iter().enumerate() {
                let from = sentinel.address();
                let (host, port) = match self.ask_one(sentinel).await {
                    Ok(Some(addr)) => addr,
                    Ok(None) => {
                        failures.push(format!("{from}: does not know it"));
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{from}: {e}"));
                        continue;
                    }
                };
                named_any = true;
                if tried.contains(&(host.clone(), port)) {
                    continue;
                }
                tried.push((host.clone(), port));
                match self.open_master(&host, port).await {
                    Ok(found) => {
                        if i > 0 {
                            if let Ok(mut list) = self.sentinels.lock() {
                                move_to_front(&mut list, &from);
                            }
                        }
                        return Ok(found);
                    }
                    Err(Opened::NotMaster(role)) => {
                        failing_over = true;
                        failures.push(format!(
                            "{from} names {host}:{port}, which is a {role} (a failover in progress?)"
                        ));
                    }
                    Err(Opened::Failed(e)) => {
                        failures.push(format!("{from} names {host}:{port}: {e}"));
                    }
                }
            }
            // A replica named master is a failover under way: it settles
            // within moments, so ask again soon. Anything else is the
            // caller's to retry with its backoff.
            if !failing_over {
                break;
            }
            tracing::debug!(master = %self.master, "{}; asking the sentinels again", failures.join("; "));
        }
        if named_any {
            Err(format!("master `{}`: {}", self.master, failures.join("; ")))
        } else {
            Err(format!(
                "no sentinel knows master `{}` ({})",
                self.master,
                failures.join("; ")
            ))
        }
    }

    /// Connects to `host:port` with the data credentials; the connection
    /// only if the server says it is a master.
    async fn open_master(&self, host: &str, port: u16) -> Result<(Endpoint, Conn), Opened> {
        let endpoint = self.data.at(host, port);
        let mut conn = endpoint
            .connect()
            .await
            .map_err(|e| Opened::Failed(e.to_string()))?;
        let role = conn
            .command(&[&b"ROLE"[..]])
            .await
            .map_err(|e| Opened::Failed(format!("ROLE: {e}")))?;
        match role_name(&role) {
            Ok(b"master") => Ok((endpoint, conn)),
            Ok(role) => Err(Opened::NotMaster(escape(role))),
            Err(e) => Err(Opened::Failed(format!("ROLE: {e}"))),
        }
    }

    async fn ask_one(&self, sentinel: &Endpoint) -> Result<Option<(String, u16)>, String> {
        let mut conn = sentinel.connect().await.map_err(|e| e.to_string())?;
        let reply = conn
            .command(&[
                &b"SENTINEL"[..],
                b"get-master-addr-by-name",
                self.master.as_bytes(),
            ])
            .await
            .map_err(|e| e.to_string())?;
        parse_master_addr(&reply)
    }
}

/// Why a server named master was not used.
enum Opened {
    /// It answered `ROLE` with this.
    NotMaster(String),
    Failed(String),
}

/// Puts the endpoint at `address` first, keeping the others' order.
fn move_to_front(list: &mut [Endpoint], address: &str) {
    if let Some(i) = list.iter().position(|e| e.address() == address) {
        list[..=i].rotate_right(1);
    }
}

/// `[ip, port]`, or `None` for nil (the sentinel does not know the name).
fn parse_master_addr(reply: &Reply) -> Result<Option<(String, u16)>, String> {
    match reply {
        Reply::Array(None) | Reply::Bulk(None) => Ok(None),
        Reply::Array(Some(parts)) => match parts.as_slice() {
            [Reply::Bulk(Some(ip)), Reply::Bulk(Some(port))] => {
                let ip = std::str::from_utf8(ip)
                    .map_err(|_| format!("a master address that is not text: {}", escape(ip)))?;
                let port = std::str::from_utf8(port)
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("a master port that is not one: {}", escape(port)))?;
                Ok(Some((ip.to_owned(), port)))
            }
            _ => Err(format!(
                "unexpected get-master-addr-by-name reply {reply:?}"
            )),
        },
        Reply::Error(e) => Err(escape(e)),
        other => Err(format!(
            "unexpected get-master-addr-by-name reply {other:?}"
        )),
    }
}

/// The first element of a `ROLE` reply: `master`, `slave` or `sentinel`.
fn role_name(reply: &Reply) -> Result<&[u8], String> {
    match reply {
        Reply::Array(Some(parts)) => match parts.first() {
            Some(Reply::Bulk(Some(role))) => Ok(role),
            _ => Err(format!("unexpected ROLE reply {reply:?}")),
        },
        Reply::Error(e) => Err(escape(e)),
        other => Err(format!("unexpected ROLE reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    fn endpoint(addr: &str) -> Endpoint {
        Endpoint::parse(
            &format!("redis://{addr}"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("a URL")
    }

    #[test]
    fn master_address() {
        let reply = Reply::Array(Some(vec![bulk("10.0.0.7"), bulk("6380")]));
        assert_eq!(
            parse_master_addr(&reply),
            Ok(Some(("10.0.0.7".to_owned(), 6380)))
        );
        assert_eq!(parse_master_addr(&Reply::Array(None)), Ok(None));
        assert_eq!(parse_master_addr(&Reply::Bulk(None)), Ok(None));
        let bad_port = Reply::Array(Some(vec![bulk("h"), bulk("99999")]));
        assert!(parse_master_addr(&bad_port).is_err());
        let error = Reply::Error(Bytes::from_static(b"ERR unknown command"));
        assert_eq!(
            parse_master_addr(&error),
            Err("ERR unknown command".to_owned())
        );
    }

    #[test]
    fn role() {
        let master = Reply::Array(Some(vec![bulk("master"), Reply::Int(0)]));
        assert_eq!(role_name(&master), Ok(&b"master"[..]));
        let replica = Reply::Array(Some(vec![bulk("slave"), bulk("127.0.0.1")]));
        assert_eq!(role_name(&replica), Ok(&b"slave"[..]));
        assert!(role_name(&Reply::Int(1)).is_err());
    }

    #[test]
    fn the_answering_sentinel_goes_first() {
        let mut list = vec![endpoint("a:1"), endpoint("b:2"), endpoint("c:3")];
        move_to_front(&mut list, "c:3");
        let order: Vec<String> = list.iter().map(Endpoint::address).collect();
        assert_eq!(order, ["c:3", "a:1", "b:2"]);
        move_to_front(&mut list, "nowhere:9");
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn needs_sentinels_and_a_name() {
        let data = endpoint("x:1");
        assert!(Resolver::new(Vec::new(), "m".into(), data.clone()).is_err());
        assert!(Resolver::new(vec![endpoint("a:1")], String::new(), data).is_err());
    }
}
