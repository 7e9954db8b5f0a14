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
