//! Operations as JSON, for the `file` target and the dead-letter file.
//!
//! Redis arguments are JSON strings when they are UTF-8 and
//! `{"base64": "..."}` otherwise, so every byte survives. Mongo writes are
//! canonical Extended JSON, which keeps int32, int64, double, Decimal128,
//! ObjectId and dates apart.

use base64::Engine as _;
use bson::Bson;
use serde_json::{json, Value};

use crate::op::Op;
use crate::wire::mongo::to_document;

/// The JSON form of `op`.
pub fn op_json(op: &Op) -> Value {
    match op {
        Op::Redis(r) => json!({
            "kind": "redis",
            "port": r.port,
            "db": r.db,
            "commands": r.commands.iter().map(|c| {
                c.args().iter().map(arg_json).collect::<Vec<_>>()
            }).collect::<Vec<_>>(),
        }),
        Op::Mongo(m) => json!({
            "kind": "mongo",
            "db": m.db,
            "coll": m.coll,
            "write": Bson::Document(to_document(&m.write)).into_canonical_extjson(),
        }),
    }
}

/// One Redis argument as JSON.
pub fn arg_json(arg: &[u8]) -> Value {
    match std::str::from_utf8(arg) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(arg) }),
    }
}
