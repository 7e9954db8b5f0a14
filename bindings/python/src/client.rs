//! `IncClient`: the seed's Python client.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use intc_client::{
    Buffering, Config, Frame, RedisFrame, Registry, Stats, TryBuffer, DEFAULT_BUFFER_SIZE,
    DEFAULT_LINGER, DEFAULT_SEND_TIMEOUT,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use crate::args;
use crate::error::{invalid, to_py};

/// Where a client's connections live.
#[derive(Debug)]
enum Connections {
    /// The process-wide connections (default send timeout).
    Shared,
    /// Connections of this client alone (another send timeout).
    Own(Registry),
}

/// A client of the local syncs proxy.
///
/// Every call names the proxy's unix socket path; one connection per path
/// is opened on first use, reopened after errors and after `os.fork()`, and
/// shared by the threads of the process (frames are written whole, never
/// interleaved). Calls release the GIL while writing.
///
/// `send_timeout` (seconds, default 1.0): a call fails with
/// `ProxyUnavailable` when the proxy takes no bytes for that long; `None`
/// waits forever.
///
/// `connect_timeout` (seconds, default `None`): `None` fails fast when the
/// proxy is down; a number waits up to that long for it to come up
/// (retrying with a short backoff), then raises `ProxyUnavailable`.
///
/// `buffer` (default `False`): `True` (64 KiB) or a size in bytes gathers
/// frames and writes several at once: when the buffer is full, when its
/// oldest frame has waited `linger` seconds (default 0.001), on `flush()`,
/// before `sync()`, and at interpreter exit. A call then returns once its
/// frame is buffered.
///
/// Clients with the default settings share the process-wide connections;
/// any other settings give the client connections of its own.
#[pyclass(module = "intc", name = "IncClient", frozen)]
#[derive(Debug)]
pub struct IncClient {
    connections: Connections,
    /// Buffering on: try the buffer with the GIL held first.
    buffering: bool,
}

impl IncClient {
    fn registry(&self) -> &Registry {
        match &self.connections {
            Connections::Shared => Registry::global(),
            Connections::Own(registry) => registry,
        }
    }

    /// Sends a frame built with the GIL held (arguments are borrowed from
    /// their Python objects). Unbuffered: written without the GIL.
    /// Buffered: copied into the buffer with the GIL held when that needs
    /// no I/O and no waiting; the GIL is released only when the call must
    /// write or connect.
    fn send(
        &self,
        py: Python<'_>,
        path: &Path,
        frame: Result<Frame, intc_client::ClientError>,
    ) -> PyResult<()> {
        let frame = frame.map_err(to_py)?;
        let registry = self.registry();
        if !self.buffering {
            return py.detach(|| registry.send(path, &frame)).map_err(to_py);
        }
        let conn = registry.get(path).map_err(to_py)?;
        match conn.try_buffer(&frame) {
            TryBuffer::Buffered => Ok(()),
            TryBuffer::NeedsSend => py.detach(|| conn.send(&frame)).map_err(to_py),
        }
    }
}

impl IncClient {
    /// Sends a Redis frame. Buffered, it is encoded straight into the
    /// connection's buffer (and checked there) with the GIL held when that
    /// needs no I/O; otherwise, and unbuffered, as [`Self::send`]. The same
    /// errors in the same order as building the frame first.
    fn send_redis<C, A>(
        &self,
        py: Python<'_>,
        path: &Path,
        port: u16,
        db: u32,
        commands: &[C],
    ) -> PyResult<()>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let frame = RedisFrame::new(port, db, commands).map_err(to_py)?;
        if !self.buffering {
            return self.send(py, path, Frame::encoded(&frame));
        }
        let conn = match self.registry().get(path) {
            Ok(conn) => conn,
            // A bad frame is reported before a bad path, as when the frame
            // is built first.
            Err(e) => return Err(to_py(Frame::encoded(&frame).err().unwrap_or(e))),
        };
        match conn.try_buffer_encoded(&frame).map_err(to_py)? {
            TryBuffer::Buffered => Ok(()),
            TryBuffer::NeedsSend => {
                let frame = Frame::encoded(&frame).map_err(to_py)?;
                py.detach(|| conn.send(&frame)).map_err(to_py)
            }
        }
    }
}

/// The proxy's socket path: a `str` is read in place (every call names
/// it), anything else goes through `os.fspath` (a `str` that is not UTF-8,
/// from `surrogateescape`, too).
fn path_arg<'a>(path: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, Path>> {
    if let Some(text) = path.cast::<PyString>().ok().and_then(|s| s.to_str().ok()) {
        return Ok(Cow::Borrowed(Path::new(text)));
    }
    path.extract::<PathBuf>().map(Cow::Owned).map_err(|_| {
        invalid(format!(
            "path must be a str or os.PathLike naming the proxy's unix socket, not {}",
            path.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

fn name_arg(name: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    name.extract::<String>()
        .map_err(|_| invalid(format!("{what} must be a str")))
}

fn stats_dict<'py>(py: Python<'py>, stats: Stats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("frames", stats.frames)?;
    dict.set_item("bytes", stats.bytes)?;
    dict.set_item("errors", stats.errors)?;
    dict.set_item("connects", stats.connects)?;
    dict.set_item("reconnects", stats.reconnects)?;
    dict.set_item("buffered", stats.buffered)?;
    dict.set_item("pending", stats.pending)?;
    dict.set_item("flushes", stats.flushes)?;
    dict.set_item("dropped", stats.dropped)?;
    Ok(dict)
}

/// Seconds as a positive duration; `what` names the argument in errors.
fn seconds(secs: f64, what: &str, none: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(format!(
                "{what} must be a positive number of seconds{none}, not {secs}"
            ))
        })
}

/// `buffer=`: False/0 off, True the default size, an int that size.
fn buffer_size(buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(flag) = buffer.cast::<PyBool>() {
        return Ok(if flag.is_true() {
            DEFAULT_BUFFER_SIZE
        } else {
            0
        });
    }
    if buffer.is_instance_of::<PyInt>() {
        if let Ok(size) = buffer.extract::<usize>() {
            return Ok(size);
        }
    }
    Err(invalid(format!(
        "buffer must be a bool or a size in bytes (an int >= 0), not {buffer}"
    )))
}

fn registry_stats<'py>(
    py: Python<'py>,
    registry: &Registry,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let stats = match path {
        None => registry.stats(),
        Some(path) => registry.stats_for(path_arg(path)?).unwrap_or_default(),
    };
    stats_dict(py, stats)
}

#[pymethods]
impl IncClient {
    #[new]
    #[pyo3(signature = (
        send_timeout = Some(DEFAULT_SEND_TIMEOUT.as_secs_f64()),
        *,
        connect_timeout = None,
        buffer = None,
        linger = DEFAULT_LINGER.as_secs_f64(),
    ))]
    fn new(
        send_timeout: Option<f64>,
        connect_timeout: Option<f64>,
        buffer: Option<&Bound<'_, PyAny>>,
        linger: f64,
    ) -> PyResult<Self> {
        let send_timeout = send_timeout
            .map(|s| seconds(s, "send_timeout", " or None"))
            .transpose()?;
        let connect_timeout = connect_timeout
            .map(|s| seconds(s, "connect_timeout", " or None"))
            .transpose()?;
        let linger = seconds(linger, "linger", "")?;
        let size = buffer.map(buffer_size).transpose()?.unwrap_or(0);
        let config = Config {
            send_timeout,
            connect_timeout,
            buffering: (size > 0).then_some(Buffering { size, linger }),
            ..Config::default()
        };
        config.validate().map_err(to_py)?;
        let buffering = config.buffering.is_some();
        let connections = if config == Config::default() {
            Connections::Shared
        } else {
            Connections::Own(Registry::new(config).map_err(to_py)?)
        };
        Ok(IncClient {
            connections,
            buffering,
        })
    }

    /// Sends one Redis command run on the Redis server at `port`, db `db`.
    ///
    /// `cmd` is a tuple or list: the command name, then its arguments, each
    /// a str (sent as UTF-8), bytes, bytearray, memoryview, int or float
    /// (sent as its decimal text). Raises `InvalidOperation` for a bad
    /// argument or a refused command (MULTI, EXEC, SELECT, WATCH...),
    /// `FrameTooLarge`, or `ProxyUnavailable` when the proxy cannot be
    /// reached (the command is then not sent).
    #[pyo3(signature = (path, port, db, cmd))]
    fn redis_one(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        db: &Bound<'_, PyAny>,
        cmd: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let path = path_arg(path)?;
        let (port, db) = (args::port(port)?, args::db(db)?);
        let cmd = args::command(cmd, args::Name::Whole("cmd"))?;
        self.send_redis(py, &path, port, db, &[cmd])
    }

    /// Sends several Redis commands as one transaction (applied with
    /// MULTI/EXEC at the target); `cmds` is a tuple or list of commands as
    /// for `redis_one`. Raises as `redis_one`.
    #[pyo3(signature = (path, port, db, cmds))]
    fn redis_many(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        db: &Bound<'_, PyAny>,
        cmds: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let path = path_arg(path)?;
        let (port, db) = (args::port(port)?, args::db(db)?);
        let objects = args::command_objects(cmds, "cmds")?;
        let cmds = objects
            .iter()
            .enumerate()
            .map(|(i, cmd)| args::command(cmd, args::Name::Item("cmds", i)))
            .collect::<PyResult<Vec<_>>>()?;
        self.send_redis(py, &path, port, db, &cmds)
    }

    /// Sends a MongoDB write on collection `coll` of database `db`; `op` is
    /// the bytes returned by an `intc_mg.mg_*` function. The write is
    /// decoded and checked before it is sent: a bad one raises
    /// `InvalidOperation`. Raises `FrameTooLarge` and `ProxyUnavailable` as
    /// `redis_one`.
    #[pyo3(signature = (path, db, coll, op))]
    fn mongo_exec(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        db: &Bound<'_, PyAny>,
        coll: &Bound<'_, PyAny>,
        op: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let path = path_arg(path)?;
        let db = name_arg(db, "db")?;
        let coll = name_arg(coll, "coll")?;
        let op: PyBackedBytes = op.extract().map_err(|_| {
            invalid(format!(
                "op must be the bytes of a write description (from intc_mg.mg_*), not {}",
                op.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        self.send(py, &path, Frame::mongo(&db, &coll, &op))
    }

    /// Writes the frames buffered for `path` now (every path of this
    /// client when `path` is None); a no-op without buffering. Raises
    /// `ProxyUnavailable` when the write fails (those frames are dropped),
    /// or when a background flush failed since the last call.
    #[pyo3(signature = (path = None))]
    fn flush(&self, py: Python<'_>, path: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let path = path.map(path_arg).transpose()?;
        let registry = self.registry();
        py.detach(|| registry.flush(path.as_deref())).map_err(to_py)
    }

    /// Counters of this client's connections, as a dict: `frames` and
    /// `bytes` written, `errors`, `connects`, `reconnects`, and for
    /// buffering `buffered` (frames that went into the buffer), `pending`
    /// (in it now), `flushes` (writes of the buffer), `dropped` (buffered
    /// frames lost to a failed write). With `path`, those of that socket
    /// only (zeros if never used).
    #[pyo3(signature = (path = None))]
    fn stats<'py>(
        &self,
        py: Python<'py>,
        path: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        registry_stats(py, self.registry(), path)
    }

    /// Waits until the proxy at `path` confirms that every frame this
    /// process sent it is in its spool (durable per the proxy's `--fsync`),
    /// and returns how many of those frames it refused (bad frames, spool
    /// full); 0 means all were accepted. Raises `ProxyUnavailable` when the
    /// proxy cannot be reached, gives no answer within `timeout` seconds, or
    /// when frames went out on a connection that broke before they were
    /// confirmed (they may or may not have arrived).
    #[pyo3(signature = (path, timeout = 5.0))]
    fn sync(&self, py: Python<'_>, path: &Bound<'_, PyAny>, timeout: f64) -> PyResult<u32> {
        let path = path_arg(path)?;
        // One check for every seconds argument: NaN, negative, zero and
        // values too large for a duration (1e30) are refused, not a panic.
        let timeout = seconds(timeout, "timeout", "")?;
        let registry = self.registry();
        py.detach(|| registry.get(&path)?.sync(timeout))
            .map_err(to_py)
    }

    /// The send timeout in seconds (`None`: waits forever).
    #[getter]
    fn send_timeout(&self) -> Option<f64> {
        self.registry()
            .config()
            .send_timeout
            .map(|d| d.as_secs_f64())
    }

    /// The connect timeout in seconds (`None`: fail fast).
    #[getter]
    fn connect_timeout(&self) -> Option<f64> {
        self.registry()
            .config()
            .connect_timeout
            .map(|d| d.as_secs_f64())
    }

    /// The buffer size in bytes (0: no buffering).
    #[getter]
    fn buffer(&self) -> usize {
        self.registry().config().buffering.map_or(0, |b| b.size)
    }

    /// The linger in seconds (`None`: no buffering).
    #[getter]
    fn linger(&self) -> Option<f64> {
        self.registry()
            .config()
            .buffering
            .map(|b| b.linger.as_secs_f64())
    }

    fn __repr__(&self) -> String {
        let secs = |s: Option<f64>| s.map_or_else(|| "None".to_owned(), |s| format!("{s:?}"));
        let mut out = format!("IncClient(send_timeout={}", secs(self.send_timeout()));
        if let Some(t) = self.connect_timeout() {
            out += &format!(", connect_timeout={t:?}");
        }
        if let Some(linger) = self.linger() {
            out += &format!(", buffer={}, linger={linger:?}", self.buffer());
        }
        out + ")"
    }
}

/// Writes the buffered frames of every buffering client of this process
/// (registered with `atexit` by `intc`). Frames a parent process buffered
/// before `os.fork()` are never written by the child. Raises the first
/// error after trying every connection.
#[pyfunction]
pub fn flush_all(py: Python<'_>) -> PyResult<()> {
    py.detach(intc_client::flush_all).map_err(to_py)
}

/// Counters of the process-wide connections (those of every `IncClient`
/// with the default settings), as `IncClient.stats`.
#[pyfunction]
#[pyo3(signature = (path = None))]
pub fn stats<'py>(
    py: Python<'py>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    registry_stats(py, Registry::global(), path)
}
