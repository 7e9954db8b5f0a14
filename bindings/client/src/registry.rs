//! Connections by socket path, for the bindings' "fetch by path" style
//! (`intc_fetch(path)`, `IncClient.redis_one(path, ...)`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::connection::{Config, Connection, Stats};
use crate::error::ClientError;
use crate::frame::Frame;

/// One [`Connection`] per socket path, shared by every thread of the
/// process.
///
/// The map belongs to the process that filled it: after `fork()` the child
/// starts an empty map at its first call, so it never even locks a
/// connection that another thread of the parent may have held at the moment
/// of the fork. The map's own lock is held only for a lookup, never during
/// I/O.
#[derive(Debug)]
pub struct Registry {
    config: Config,
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    pid: u32,
    by_path: HashMap<PathBuf, Arc<Connection>>,
    /// The connection `get` returned last: a caller naming the same path
    /// byte for byte again (the usual case) skips hashing the path, which
    /// `Path` does component by component.
    last: Option<Arc<Connection>>,
}

impl Registry {
    /// An empty registry whose connections use `config`.
    pub fn new(config: Config) -> Result<Self, ClientError> {
        config.validate()?;
        Ok(Registry {
            config,
            conns: Mutex::new(Conns::default()),
        })
    }

    /// The process-wide registry with the default [`Config`].
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| Registry {
            config: Config::default(),
            conns: Mutex::new(Conns::default()),
        })
    }

    /// The settings of new connections.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection for `path`, created (not yet connected) on first use.
    pub fn get(&self, path: impl AsRef<Path>) -> Result<Arc<Connection>, ClientError> {
        let path = path.as_ref();
        let mut conns = self.lock();
        if let Some(last) = &conns.last {
            if last.path().as_os_str() == path.as_os_str() {
                return Ok(Arc::clone(last));
            }
        }
        let conn = match conns.by_path.get(path) {
            Some(conn) => Arc::clone(conn),
            None => {
                let conn = Arc::new(Connection::new(path, self.config.clone())?);
                conns.by_path.insert(path.to_owned(), Arc::clone(&conn));
                conn
            }
        };
        conns.last = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends `frame` on the connection for `path`.
    pub fn send(&self, path: impl AsRef<Path>, frame: &Frame) -> Result<(), ClientError> {
        self.get(path)?.send(frame)
    }

    /// Writes the buffered frames of `path`'s connection, or of every
    /// connection when `path` is `None` (returns the first error; every
    /// connection is tried).
    pub fn flush(&self, path: Option<&Path>) -> Result<(), ClientError> {
        let conns: Vec<_> = match path {
            Some(path) => self.lock().by_path.get(path).cloned().into_iter().collect(),
            None => self.lock().by_path.values().cloned().collect(),
        };
        let mut first = None;
        for conn in conns {
            if let Err(e) = conn.flush() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The counters of `path`'s connection, if it was ever used.
    pub fn stats_for(&self, path: impl AsRef<Path>) -> Option<Stats> {
        self.lock().by_path.get(path.as_ref()).map(|c| c.stats())
    }

    /// The counters summed over every connection of this process.
    pub fn stats(&self) -> Stats {
        let conns: Vec<_> = self.lock().by_path.values().cloned().collect();
        let mut total = Stats::default();
        for conn in conns {
            total += conn.stats();
        }
        total
    }

    /// Forgets every connection; each one closes once no caller holds it.
    pub fn clear(&self) {
        let mut conns = self.lock();
        let old = (std::mem::take(&mut conns.by_path), conns.last.take());
        drop(conns);
        drop(old);
    }

    /// The map, emptied first if it was filled by another process (we are a
    /// fork child). A poisoned map is still a consistent map: no I/O or
    /// partial update happens under this lock.
    fn lock(&self) -> MutexGuard<'_, Conns> {
        let mut conns = self.conns.lock().unwrap_or_else(|poisoned| {
            self.conns.clear_poison();
            poisoned.into_inner()
        });
        let pid = crate::fork::pid();
        if conns.pid != pid {
            conns.pid = pid;
            conns.by_path.clear();
            conns.last = None;
        }
        conns
    }
}
