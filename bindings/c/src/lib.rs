//! libintc: the syncs C client library.
//!
//! Applications hand Redis commands and MongoDB writes to the local proxy
//! over its unix socket; the proxy forwards them to the remote
//! `sync_server`. The header `include/intc_cli.h` is generated from this
//! crate by cbindgen (`bindings/c/gen-header.sh`) and committed.
//!
//! # Layout
//!
//! - [`error`]: `intc_result`, `intc_strerror`, `intc_last_error`, and the
//!   panic boundary (`call`) every exported function runs its body in.
//! - [`client`]: handles: `intc_fetch` / `intc_dispose` (the seed's
//!   per-thread cache by path), `intc_cli_new` / `intc_cli_free`, the raw
//!   stream write `intc_send`, send timeout and counters.
//! - [`redis`]: `intc_redis_command` and the transaction builder `intc_tx_*`.
//! - [`mongo`]: `intc_mongo_write` and the builders `intc_mongo_*`.
//! - `args`: turning C pointers into checked slices and strings.
//!
//! All the work (frames, connection, reconnects, fork safety) is done by
//! `intc-client`; this crate only converts arguments and errors.
//!
//! **API boundary:** every `extern "C"` function is C ABI and follows these
//! rules: no panic crosses it (`INTC_ERR_PANIC` instead), a NULL pointer is
//! an `INTC_ERR_ARG`, never a crash, and the calling thread's last error
//! message says what failed.

mod args;
pub mod client;
pub mod error;
pub mod mongo;
pub mod redis;

pub use client::{IntcCli, IntcStats};
pub use error::intc_result;
pub use redis::IntcTx;

use std::ffi::{c_char, CStr};

/// The library version (`"0.1.0"`), a static NUL-terminated string (never
/// free it). Thread-safe.
#[no_mangle]
pub extern "C" fn intc_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the crate version contains a NUL byte"),
        };
    VERSION.as_ptr()
}
