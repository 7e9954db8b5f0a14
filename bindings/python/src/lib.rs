//! `intc._native`: the compiled part of the Python library.
//!
//! # Layout
//!
//! - [`client`]: `IncClient` (`redis_one`, `redis_many`, `mongo_exec`,
//!   `sync`, `flush`, `stats`) and the module-level `stats()` and
//!   `flush_all()` (run at exit).
//! - [`args`]: Python arguments to Redis arguments, ports and db numbers.
//! - [`error`]: client errors to the exceptions of `intc/_errors.py`.
//!
//! The pure-Python parts live in `python/`: `intc/__init__.py` re-exports
//! this module, `intc_mg` builds Mongo write descriptions with pymongo's
//! `bson`. All frame building, checking and sending is `intc-client`'s.
#![deny(unsafe_code)]

mod args;
mod client;
mod error;

use pyo3::prelude::*;

/// The compiled core of the `intc` package (use `intc`, not this module).
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::IncClient>()?;
    m.add_function(wrap_pyfunction!(client::stats, m)?)?;
    m.add_function(wrap_pyfunction!(client::flush_all, m)?)?;
    m.add("DEFAULT_BUFFER_SIZE", intc_client::DEFAULT_BUFFER_SIZE)?;
    m.add("DEFAULT_LINGER", intc_client::DEFAULT_LINGER.as_secs_f64())?;
    m.add(
        "DEFAULT_SEND_TIMEOUT",
        intc_client::DEFAULT_SEND_TIMEOUT.as_secs_f64(),
    )?;
    m.add("MAX_FRAME", intc_client::DEFAULT_MAX_FRAME)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
