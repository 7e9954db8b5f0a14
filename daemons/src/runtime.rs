//! The async runtime the daemons run on.
//!
//! The proxy's worker threads are a setting (`--threads`) because more is
//! not faster on a small machine: on 2 cores shared with
//! the application and Redis, a proxy with two workers spent a third of
//! its CPU in the kernel handing tasks between them (wake-ups, task
//! switches), and an unbuffered client got 15–50 % more throughput from a
//! proxy with one (docs/benchmarks.md). The server showed no difference
//! and runs tokio's default, a worker per core. Blocking file IO never
//! runs on these threads (the spool has its own writer and syncer
//! threads).

use anyhow::Context;

/// A multi-threaded tokio runtime with `threads` workers (at least 1).
pub fn build(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A runtime of one worker thread, for tasks that must not queue behind
/// the main runtime's (the proxy's links). It runs by itself and ends when
/// dropped, also inside another runtime's task (where dropping a runtime
/// directly is refused).
#[derive(Debug)]
pub struct Dedicated {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Dedicated {
    /// Starts the thread, named `name`; `on_thread_start` runs first on
    /// it (and on each of the runtime's blocking threads).
    pub fn start(
        name: &str,
        on_thread_start: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .on_thread_start(on_thread_start)
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(Dedicated {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where to spawn its tasks.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
