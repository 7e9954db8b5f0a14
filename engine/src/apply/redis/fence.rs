//! The fence: a connection dropped with a request in flight is killed
//! (`CLIENT KILL ID`) before the next connection of its slot is used, so
//! that an EXEC still queued on it cannot run after the marker is read
//! again.
//!
//! A client id names a connection only on the server that gave it, and a
//! restarted server hands out the same low ids again. So the fence keeps the
//! server with the id: its address and its `run_id` (from `INFO server`,
//! new on every start). The kill goes over the new connection when that
//! reaches the same server. When the master moved (a failover), the old
//! master may still be alive with the old connection on it: the kill is
//! tried there, over a short-lived connection with short waits; if that
//! server cannot be reached it is logged and the fence given up. A run
//! still queued on a demoted master gets READONLY there, and one on a
//! master cut off from the others is dropped when it rejoins as a replica:
//! neither can reach the new master, whose marker is what counts.

use std::sync::Arc;
use std::time::Duration;

use super::conn::{Conn, ConnError, Endpoint};
use crate::wire::reply::{escape, Reply};

/// How long the kill on a server other than the current one may take, to
/// connect and then to answer (it may be dead or cut off).
const ELSEWHERE_WAIT: Duration = Duration::from_secs(1);

/// The server a connection reached.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) endpoint: Endpoint,
    /// `run_id` from `INFO server` (`None`: not answered).
    pub(super) run_id: Option<String>,
}

/// A connection to kill before the next one of its slot is used.
#[derive(Debug, Clone)]
pub(super) struct Fence {
    pub(super) id: u64,
    pub(super) server: Arc<Server>,
}

/// What became of a fenced connection (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Killed,
    /// Closed already, or its server restarted since.
    Gone,
    /// The server would not kill it (an ACL, say).
    Refused,
    /// Its server, not the current one, could not be reached.
    Unreachable,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Outcome::Killed => "killed",
            Outcome::Gone => "gone",
            Outcome::Refused => "refused",
            Outcome::Unreachable => "unreachable",
        }
    }
}

impl Server {
    /// The server `conn` (opened to `endpoint`) reached: asks its run id.
    pub(super) async fn identify(endpoint: Endpoint, conn: &mut Conn) -> Result<Self, ConnError> {
        let run_id = match conn.command(&[&b"INFO"[..], b"server"]).await? {
            Reply::Bulk(Some(info)) => parse_run_id(&info),
            _ => None,
        };
        Ok(Self { endpoint, run_id })
    }
}

/// The `run_id:` line of an `INFO` reply.
fn parse_run_id(info: &[u8]) -> Option<String> {
    info.split(|&b| b == b'\n').find_map(|line| {
        let value = line.strip_prefix(b"run_id:")?;
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        (!value.is_empty()).then(|| escape(value))
    })
}

/// Where the fenced connection is, seen from the new connection's server.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Here,
    /// Same address, another run: the server restarted and the
    /// connection died with it.
    Restarted,
    Elsewhere,
}

fn place(old: &Server, new: &Server) -> Place {
    let same_address = old.endpoint.address() == new.endpoint.address();
    match (&old.run_id, &new.run_id) {
        (Some(a), Some(b)) if a == b => Place::Here,
        (Some(_), Some(_)) if same_address => Place::Restarted,
        (Some(_), Some(_)) => Place::Elsewhere,
        _ if same_address => Place::Here,
        _ => Place::Elsewhere,
    }
}

impl Fence {
    /// Kills the fenced connection. `conn` is the slot's new connection, to
    /// `new`; an error is one of `conn`'s (it is unusable then).
    pub(super) async fn settle(
        &self,
        target: &str,
        new: &Server,
        conn: &mut Conn,
    ) -> Result<Outcome, ConnError> {
        let old = &self.server;
        match place(old, new) {
            Place::Here => kill(target, conn, self.id).await,
            Place::Restarted => {
                tracing::info!(target, server = %old.endpoint.address(), "the server restarted since a connection was dropped mid-run: nothing to fence");
                Ok(Outcome::Gone)
            }
            Place::Elsewhere => Ok(self.settle_elsewhere(target, new).await),
        }
    }

    /// The kill on the old server, which is not the current one.
    async fn settle_elsewhere(&self, target: &str, new: &Server) -> Outcome {
        let old = &self.server;
        let from = old.endpoint.address();
        let to = new.endpoint.address();
        let wait = ELSEWHERE_WAIT.min(old.endpoint.connect_timeout());
        let endpoint = old.endpoint.with_timeouts(wait, wait);
        let attempt = async {
            let mut conn = endpoint.connect().await?;
            let there = Server::identify(endpoint.clone(), &mut conn).await?;
            if place(old, &there) == Place::Restarted {
                return Ok(Outcome::Gone);
            }
            kill(target, &mut conn, self.id).await
        };
        match attempt.await {
            Ok(outcome) => {
                tracing::info!(target, %from, %to, outcome = outcome.label(), "the server changed since a connection was dropped mid-run; fenced it on the old server");
                outcome
            }
            Err(e) => {
                tracing::warn!(target, %from, %to, "the server changed since a connection was dropped mid-run and the old one cannot be reached to kill it ({e}); a run still queued there cannot reach {to}");
                Outcome::Unreachable
            }
        }
    }
}

/// `CLIENT KILL ID <id>` on `conn`.
async fn kill(target: &str, conn: &mut Conn, id: u64) -> Result<Outcome, ConnError> {
    let id_text = id.to_string();
    Ok(
        match conn
            .command(&[&b"CLIENT"[..], b"KILL", b"ID", id_text.as_bytes()])
            .await?
        {
            Reply::Int(1) => Outcome::Killed,
            Reply::Int(_) => Outcome::Gone,
            Reply::Error(e) if e.starts_with(b"ERR No such client") => Outcome::Gone,
            other => {
                tracing::warn!(target, old = id, "could not kill the connection dropped mid-run ({other:?}); a run still queued on it may apply twice");
                Outcome::Refused
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(addr: &str, run_id: Option<&str>) -> Server {
        let endpoint = Endpoint::parse(
            &format!("redis://{addr}"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("a URL");
        Server {
            endpoint,
            run_id: run_id.map(str::to_owned),
        }
    }

    #[test]
    fn run_id_from_info() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nrun_id:0f3c9e\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info).as_deref(), Some("0f3c9e"));
        assert_eq!(parse_run_id(b"# Server\r\nrun_id:\r\n"), None);
        assert_eq!(parse_run_id(b""), None);
    }

    #[test]
    fn where_the_old_connection_is() {
        let a = server("127.0.0.1:7000", Some("r1"));
        assert_eq!(
            place(&a, &server("127.0.0.1:7000", Some("r1"))),
            Place::Here
        );
        // The run id wins over the address: one server, two names.
        assert_eq!(
            place(&a, &server("localhost:7000", Some("r1"))),
            Place::Here
        );
        assert_eq!(
            place(&a, &server("127.0.0.1:7000", Some("r2"))),
            Place::Restarted
        );
        assert_eq!(
            place(&a, &server("127.0.0.1:7001", Some("r2"))),
            Place::Elsewhere
        );
        // Without run ids, the address decides.
        let unknown = server("127.0.0.1:7000", None);
        assert_eq!(
            place(&unknown, &server("127.0.0.1:7000", Some("r1"))),
            Place::Here
        );
        assert_eq!(
            place(&unknown, &server("127.0.0.1:7001", None)),
            Place::Elsewhere
        );
    }
}
