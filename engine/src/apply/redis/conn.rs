//! One connection to a Redis server: connect, authenticate, and send a
//! pipeline of commands and read its replies.
//!
//! The connection is a plain socket this module owns: no driver task, no
//! queue behind it. A request is in flight exactly while a
//! [`Conn::round_trip`] future is; dropping the `Conn` closes the socket.
//! Replies are read with [`crate::wire::reply`], which accepts any bytes
//! Redis sends (its error lines are not always UTF-8).
//!
//! The URL is parsed by the `redis` crate (`redis://`, `redis+unix://`,
//! `unix://`, user and password), so syncs accepts exactly the URLs Redis
//! users know.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::reply::{self, ExecReply, Reply, ReplyError};
use crate::wire::resp::encode_command;

/// Where and how to connect.
#[derive(Clone)]
pub(super) struct Endpoint {
    addr: Addr,
    username: Option<String>,
    password: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
}

/// Everything but the password, which shows as `***`: a target's `Debug`
/// may reach a log.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
enum Addr {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(host, port) => write!(f, "{host}:{port}"),
            Addr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a request did not complete. Each of these leaves the connection
/// unusable: the caller drops it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("Redis closed the connection")]
    Closed,
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error("authentication refused: {0}")]
    Auth(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// An open, authenticated connection.
pub(super) struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    /// `CLIENT ID` of this connection (`None`: the server would not say).
    id: Option<u64>,
    timeout: Duration,
    /// A request was written and not all of its replies were read (sent
    /// and not read yet, or a failed or dropped exchange).
    pending: bool,
}

/// The replies to a run ([`Conn::read_run`]).
#[derive(Debug)]
pub(super) struct RunReplies {
    /// `MULTI`'s.
    pub(super) multi: Reply,
    /// The replies to queued commands that were not `+QUEUED` (refused
    /// while queueing), by the command's position in the MULTI.
    pub(super) not_queued: Vec<(usize, Reply)>,
    pub(super) exec: ExecReply,
    /// The commands' after EXEC (WAIT).
    pub(super) after: Vec<Reply>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).finish()
    }
}

impl Endpoint {
    pub(super) fn parse(
        url: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("bad Redis URL: {e}"))?;
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return Err("bad Redis URL: TLS (rediss://) is not supported".into()),
        };
        let settings = info.redis_settings();
        Ok(Self {
            addr,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            connect_timeout,
            timeout,
        })
    }

    /// The same credentials and timeouts, another TCP address: a master a
    /// sentinel named, a node a redirect named.
    pub(super) fn at(&self, host: &str, port: u16) -> Self {
        Self {
            addr: Addr::Tcp(host.to_owned(), port),
            ..self.clone()
        }
    }

    /// The same address and timeouts, other credentials (`None` password:
    /// no AUTH).
    pub(super) fn with_credentials(
        &self,
        username: Option<String>,
        password: Option<String>,
    ) -> Self {
        Self {
            username,
            password,
            ..self.clone()
        }
    }

    /// The same, with other waits (a short one to reach a server that may
    /// be gone).
    pub(super) fn with_timeouts(&self, connect_timeout: Duration, timeout: Duration) -> Self {
        Self {
            connect_timeout,
            timeout,
            ..self.clone()
        }
    }

    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `host:port` or the socket path, for messages and to tell servers
    /// apart.
    pub(super) fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Connects, authenticates and asks for the connection's id.
    pub(super) async fn connect(&self) -> Result<Conn, ConnError> {
        let connect = async {
            let io: Box<dyn Io> = match &self.addr {
                Addr::Tcp(host, port) => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Addr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(io)
        };
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => {
                return Err(ConnError::Connect {
                    addr: self.addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(ConnError::Connect {
                    addr: self.addr.to_string(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        };
        let mut conn = Conn {
            io,
            rbuf: BytesMut::with_capacity(16 * 1024),
            id: None,
            timeout: self.timeout,
            pending: false,
        };
        let mut packed = Vec::new();
        let mut n = 1;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => encode_command(
                    &mut packed,
                    &[&b"AUTH"[..], user.as_bytes(), password.as_bytes()],
                ),
                None => encode_command(&mut packed, &[&b"AUTH"[..], password.as_bytes()]),
            }
            n += 1;
        }
        encode_command(&mut packed, &[&b"CLIENT"[..], b"ID"]);
        let replies = conn.round_trip(&packed, n).await?;
        if let Some(Reply::Error(e)) = replies.first().filter(|_| n == 2) {
            return Err(ConnError::Auth(reply::escape(e)));
        }
        if let Some(Reply::Int(id)) = replies.last() {
            conn.id = u64::try_from(*id).ok();
        }
        Ok(conn)
    }
}

impl Conn {
    /// This connection's `CLIENT ID`, when the server told it.
    pub(super) fn id(&self) -> Option<u64> {
        self.id
    }

    /// Sends `packed` (`n` commands in RESP) and reads their `n` replies,
    /// all within the response timeout. Not cancellation safe in the sense
    /// that matters here: a dropped future may leave the commands sent and
    /// unanswered, so the caller drops the connection with it.
    pub(super) async fn round_trip(
        &mut self,
        packed: &[u8],
        n: usize,
    ) -> Result<Vec<Reply>, ConnError> {
        let (io, rbuf, pending, timeout) = self.split();
        answered(timeout, pending, async move {
            io.write_all(packed).await?;
            let mut replies = Vec::with_capacity(n);
            while replies.len() < n {
                replies.push(next(io, rbuf, reply::take_reply).await?);
            }
            Ok(replies)
        })
        .await
    }

    /// Writes `packed` within the response timeout; its replies are read
    /// by the calls after ([`Conn::read_run`]). The connection counts as
    /// busy until they are read.
    pub(super) async fn send(&mut self, packed: &[u8]) -> Result<(), ConnError> {
        let (io, _, pending, timeout) = self.split();
        answered(timeout, pending, async move {
            io.write_all(packed).await?;
            Ok(())
        })
        .await?;
        self.pending = true;
        Ok(())
    }

    /// Reads the replies to a run sent with [`Conn::send`]: `MULTI`,
    /// `queued` commands, `EXEC`, then `after` more commands. The
    /// `+QUEUED` replies are counted and the EXEC's results read for their
    /// errors only ([`reply::take_exec`]): what the target answers by the
    /// thousand is never built, so the next run goes sooner. Replies to
    /// anything sent after the run stay unread.
    pub(super) async fn read_run(
        &mut self,
        queued: usize,
        after: usize,
    ) -> Result<RunReplies, ConnError> {
        let (io, rbuf, pending, timeout) = self.split();
        answered(timeout, pending, async move {
            let multi = next(io, rbuf, reply::take_reply).await?;
            let mut not_queued = Vec::new();
            let mut i = 0;
            while i < queued {
                i += reply::skip_queued(rbuf, queued - i);
                if i < queued {
                    // Something else, or a `+QUEUED` not all read yet.
                    let r = next(io, rbuf, reply::take_reply).await?;
                    if !matches!(&r, Reply::Status(s) if s.as_ref() == b"QUEUED") {
                        not_queued.push((i, r));
                    }
                    i += 1;
                }
            }
            let exec = next(io, rbuf, reply::take_exec).await?;
            let mut rest = Vec::with_capacity(after);
            for _ in 0..after {
                rest.push(next(io, rbuf, reply::take_reply).await?);
            }
            Ok(RunReplies {
                multi,
                not_queued,
                exec,
                after: rest,
            })
        })
        .await
    }

    /// The parts a request needs, borrowed apart: the socket, the read
    /// buffer, the pending flag, and the response timeout.
    fn split(&mut self) -> (&mut Box<dyn Io>, &mut BytesMut, &mut bool, Duration) {
        (
            &mut self.io,
            &mut self.rbuf,
            &mut self.pending,
            self.timeout,
        )
    }

    /// Whether every request sent has been answered: false after a round
    /// trip failed or was dropped part-way, when commands may still be
    /// waiting in the server.
    pub(super) fn is_idle(&self) -> bool {
        !self.pending
    }

    /// One command, one reply.
    pub(super) async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, ConnError> {
        let mut packed = Vec::new();
        encode_command(&mut packed, args);
        let mut replies = self.round_trip(&packed, 1).await?;
        replies.pop().ok_or(ConnError::Closed)
    }
}

/// `exchange`, which sends a request and reads its replies, within
/// `timeout`; `pending` is set while it runs and stays set if it fails or
/// is dropped part-way (see [`Conn::is_idle`]).
async fn answered<T>(
    timeout: Duration,
    pending: &mut bool,
    exchange: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    *pending = true;
    let result = match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Timeout(timeout)),
    };
    *pending = result.is_err();
    result
}

/// The next reply `take` reads from `rbuf`, reading from `io` until it is
/// complete.
async fn next<T>(
    io: &mut Box<dyn Io>,
    rbuf: &mut BytesMut,
    take: impl Fn(&mut BytesMut) -> Result<Option<T>, ReplyError>,
) -> Result<T, ConnError> {
    loop {
        if let Some(r) = take(rbuf)? {
            return Ok(r);
        }
        if io.read_buf(rbuf).await? == 0 {
            return Err(ConnError::Closed);
        }
    }
}
