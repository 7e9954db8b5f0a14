//! The syncs client core, shared by the C library (`bindings/c`) and the
//! Python library (`bindings/python`): build a frame, check it, write it
//! whole to the local proxy's unix socket.
//!
//! # Layout
//!
//! - [`frame`]: [`Frame`], a whole validated frame, built with the engine's
//!   encoders (`syncs_engine::wire`) and checked with its decoder;
//!   [`RedisFrame`], a Redis frame checked and sized but not encoded yet,
//!   which a buffering connection encodes (and checks) straight into its
//!   buffer ([`Connection::send_encoded`], through the [`Encode`] trait);
//!   [`RedisFrameBuilder`] for transactions built one command at a time;
//!   [`FrameAssembler`] to cut a raw byte stream (the C `intc_send`) into
//!   frames; helpers that read BSON parts given by callers.
//! - [`connection`]: [`Connection`], one socket path: lazy connect (fail
//!   fast, or wait for the proxy up to a timeout), whole frames under a
//!   mutex, optional buffering (several frames per write, flushed by size,
//!   linger, `flush`, `sync`, drop and [`flush_all`]), drop on error and
//!   reconnect on the next send, fork safety, send timeout, counters, and
//!   `sync`, whose answer is awaited without the mutex, so other threads
//!   keep sending meanwhile.
//! - [`registry`]: [`Registry`], connections by path for the bindings'
//!   "fetch by path" calls.
//! - [`error`]: [`ClientError`], what can go wrong.
//!
//! **Architecture invariant:** this crate never re-implements a wire format:
//! every byte it sends was produced by `syncs_engine::wire` and accepted by
//! `syncs_engine::wire::client::decode_payload`.
//!
//! **Architecture invariant:** the proxy answers nothing but SYNC control
//! frames on the socket, so a successful send means "written to the socket",
//! not "accepted" nor "applied"; only a successful `sync` says the frames
//! sent before it are in the proxy's spool.
//!
//! ```no_run
//! use intc_client::{Frame, Registry};
//!
//! let frame = Frame::redis(6379, 1, &[["set", "a", "b"]])?;
//! Registry::global().send("/tmp/us1", &frame)?;
//! # Ok::<(), intc_client::ClientError>(())
//! ```

pub mod connection;
pub mod error;
mod fork;
pub mod frame;
pub mod registry;

pub use connection::{
    flush_all, Buffering, Config, Connection, Stats, TryBuffer, DEFAULT_BUFFER_SIZE,
    DEFAULT_LINGER, DEFAULT_SEND_TIMEOUT, MAX_LINGER,
};
pub use error::ClientError;
pub use frame::{
    bson_document, bson_update, Encode, Frame, FrameAssembler, RedisFrame, RedisFrameBuilder,
};
pub use registry::Registry;

/// The operation types, for callers that build Mongo writes.
pub use syncs_engine::op::{MongoUpdate, MongoWrite};
/// The default largest payload (64 MiB), the proxy's default too.
pub use syncs_engine::wire::client::DEFAULT_MAX_FRAME;
