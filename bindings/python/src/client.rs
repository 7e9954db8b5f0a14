//! `IncClient`: the seed's Python client.

use std::path::PathBuf;
use std::time::Duration;

use intc_client::{Config, Frame, Registry, Stats, DEFAULT_SEND_TIMEOUT};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyDict;

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
/// waits forever. Clients with the default timeout share the process-wide
/// connections; any other value gives the client connections of its own.
#[pyclass(module = "intc", name = "IncClient", frozen)]
#[derive(Debug)]
pub struct IncClient {
    connections: Connections,
}

impl IncClient {
    fn registry(&self) -> &Registry {
        match &self.connections {
            Connections::Shared => Registry::global(),
            Connections::Own(registry) => registry,
        }
    }

    /// Sends a frame built from owned arguments, without the GIL.
    fn send(
        &self,
        py: Python<'_>,
        path: PathBuf,
        build: impl FnOnce() -> Result<Frame, intc_client::ClientError> + Send,
    ) -> PyResult<()> {
        let registry = self.registry();
        py.detach(|| registry.send(&path, &build()?)).map_err(to_py)
    }
}

fn path_arg(path: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    path.extract::<PathBuf>().map_err(|_| {
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
    Ok(dict)
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
    #[pyo3(signature = (send_timeout = Some(DEFAULT_SEND_TIMEOUT.as_secs_f64())))]
    fn new(send_timeout: Option<f64>) -> PyResult<Self> {
        let timeout = match send_timeout {
            None => None,
            Some(secs) => Some(
                Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(format!(
                            "send_timeout must be a positive number of seconds or None, not {secs}"
                        ))
                    })?,
            ),
        };
        let connections = if timeout == Some(DEFAULT_SEND_TIMEOUT) {
            Connections::Shared
        } else {
            let config = Config {
                send_timeout: timeout,
                ..Config::default()
            };
            Connections::Own(Registry::new(config).map_err(to_py)?)
        };
        Ok(IncClient { connections })
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
        let cmd = args::command(cmd, "cmd")?;
        self.send(py, path, move || Frame::redis(port, db, &[cmd]))
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
        let cmds = args::commands(cmds, "cmds")?;
        self.send(py, path, move || Frame::redis(port, db, &cmds))
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
        // Borrowed, so that `op` (a Python object) is released with the GIL
        // held, after the send.
        let bytes: &[u8] = &op;
        self.send(py, path, move || Frame::mongo(&db, &coll, bytes))
    }

    /// Counters of this client's connections, as a dict: `frames` and
    /// `bytes` written, `errors`, `connects`, `reconnects`. With `path`,
    /// those of that socket only (zeros if never used).
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
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(invalid("timeout must be a positive number of seconds"));
        }
        let timeout = std::time::Duration::from_secs_f64(timeout);
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

    fn __repr__(&self) -> String {
        match self.send_timeout() {
            Some(secs) => format!("IncClient(send_timeout={secs:?})"),
            None => "IncClient(send_timeout=None)".to_owned(),
        }
    }
}

/// Counters of the process-wide connections (those of every `IncClient`
/// with the default send timeout), as `IncClient.stats`.
#[pyfunction]
#[pyo3(signature = (path = None))]
pub fn stats<'py>(
    py: Python<'py>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    registry_stats(py, Registry::global(), path)
}
