//! Every byte format syncs speaks. `docs/protocol.md` is the prose twin of
//! this module; a change here is a change there.

pub mod client;
pub mod mongo;
pub mod mongo_json;
pub mod resp;

#[cfg(feature = "runtime")]
pub mod reply;

#[cfg(feature = "runtime")]
pub mod peer;
