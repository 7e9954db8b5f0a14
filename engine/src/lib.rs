//! The syncs engine: what an operation is, how it travels, where it goes and
//! how it is written.
//!
//! # Layout
//!
//! - [`op`]: the operation model. A Redis operation is one command or a
//!   transaction, with the port and db it came from; a Mongo operation is one
//!   write on a namespace.
//! - [`wire`]: every byte format syncs speaks. [`wire::client`] is the
//!   library → proxy frame (the seed's format), [`wire::resp`] the RESP
//!   commands inside it, [`wire::mongo`] the BSON write description, and
//!   [`wire::peer`] the proxy ↔ server protocol (batches, sequence numbers,
//!   acknowledgements).
//! - [`route`]: asks the compiled rules (`syncs-dsl`) what to do with an
//!   operation and produces the per-target operations.
//! - [`apply`]: the appliers that write routed operations into Redis, MongoDB
//!   and JSON-lines files, plus the dead-letter file.
//!
//! Everything except [`op`] and the codecs in [`wire`] sits behind the
//! `runtime` feature, so the client libraries link only what they use;
//! the `route` feature alone gives the router (the dsl's tests use it).
//!
//! **Architecture invariant:** the engine knows nothing of sockets it did not
//! open itself: daemons hand it decoded records and receive outcomes.

pub mod op;
pub mod wire;

#[cfg(feature = "runtime")]
pub mod apply;
#[cfg(feature = "route")]
pub mod route;
#[cfg(feature = "runtime")]
pub mod stats;

pub use op::{MongoOp, MongoUpdate, MongoWrite, Op, RedisCommand, RedisOp};
