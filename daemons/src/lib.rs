//! The syncs daemons: what runs `sync_server`, `proxy` and `syncs-check`.
//! The binaries in `src/bin/` only parse flags and call in here.
//!
//! # Layout
//!
//! - [`server`]: the remote side. Accepts proxies over TCP, reads their
//!   batches in order, routes every record through the live rule set and
//!   applies it with the engine's appliers, then acknowledges.
//!   [`server::rules`] keeps the live rule set and hot-reloads it.
//! - [`proxy`]: the local side. Accepts client libraries on a unix socket,
//!   validates and queues their frames, and forwards them to one or more
//!   servers with sequence numbers, resending what was not acknowledged.
//! - [`check`]: `syncs-check`, the rules linter and explainer, and
//!   `--migrate`.
//! - [`status`]: `syncs-status`, health and lag from the metrics endpoints.
//! - [`config`]: the server's INI file.
//! - [`legacy`]: the original system's `rmt.ini`, translated into a server
//!   configuration and rules (run as is, or written out by `--migrate`).
//! - [`security`]: TLS, the shared token, the plaintext rule, the address
//!   allowlist, connection limits.
//! - [`telemetry`]: logging and the Prometheus endpoint.
//! - [`runtime`]: the async runtime and its number of worker threads.
//! - [`sched`]: the proxy's CPU scheduling policy (`SCHED_BATCH`).
//! - [`log_throttle`]: the one pace for log lines of an event that may
//!   repeat fast.
//! - [`shutdown`]: the signal that tells every task to finish.
//! - [`spacing`]: the least time between two events of one kind (the
//!   spool's fsyncs, a link's batches), what comes due meanwhile gathered.
//!
//! **Architecture invariant:** nothing here parses a wire format or a rule:
//! codecs live in `syncs-engine`, the language in `syncs-dsl`.

pub mod backoff;
pub mod check;
pub mod config;
pub mod legacy;
pub mod log_throttle;
pub mod nats;
pub mod proxy;
pub mod runtime;
pub mod sched;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod spacing;
pub mod status;
pub mod telemetry;
