//! The operation model: what one client frame asks syncs to replicate.

use bson::{Bson, Document};
use bytes::Bytes;

/// One decoded client frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Redis(RedisOp),
    Mongo(MongoOp),
}

/// One Redis command: its arguments, the command name first.
///
/// The arguments share the frame's buffer (`Bytes`), so decoding copies no
/// key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisCommand {
    args: Vec<Bytes>,
}

impl RedisCommand {
    /// Builds a command; `None` when `args` is empty (a command needs a name).
    pub fn new(args: Vec<Bytes>) -> Option<Self> {
        if args.is_empty() {
            None
        } else {
            Some(Self { args })
        }
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        &self.args[0]
    }

    /// The name as a shared buffer (cheap to clone).
    pub fn name_bytes(&self) -> Bytes {
        self.args[0].clone()
    }

    /// All arguments, the command name first.
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// Mutable access for key rewriting; the name stays first.
    pub fn args_mut(&mut self) -> &mut [Bytes] {
        &mut self.args
    }

    pub fn into_args(self) -> Vec<Bytes> {
        self.args
    }

    /// True when the name equals `upper` ignoring ASCII case.
    pub fn is(&self, upper: &str) -> bool {
        self.name().eq_ignore_ascii_case(upper.as_bytes())
    }
}

/// A Redis operation: one command, or several applied as one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOp {
    /// The port of the Redis server the application wrote to (the source).
    pub port: u16,
    /// The db number at the source.
    pub db: u32,
    /// At least one command; more than one means MULTI/EXEC at the target.
    pub commands: Vec<RedisCommand>,
}

impl RedisOp {
    pub fn is_transaction(&self) -> bool {
        self.commands.len() > 1
    }
}

/// A MongoDB write on one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct MongoOp {
    pub db: String,
    pub coll: String,
    pub write: MongoWrite,
}

/// The update part of an update operation: operators or a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum MongoUpdate {
    Document(Document),
    Pipeline(Vec<Document>),
}

impl MongoUpdate {
    /// The value of an `update` field: a document or an array of stages.
    pub fn to_bson(&self) -> Bson {
        match self {
            MongoUpdate::Document(d) => Bson::Document(d.clone()),
            MongoUpdate::Pipeline(p) => {
                Bson::Array(p.iter().cloned().map(Bson::Document).collect())
            }
        }
    }
}

/// One write, as the MongoDB CRUD specification names them.
#[derive(Clone, Debug, PartialEq)]
pub enum MongoWrite {
    InsertOne {
        document: Document,
    },
    InsertMany {
        documents: Vec<Document>,
    },
    UpdateOne {
        filter: Document,
        update: MongoUpdate,
        upsert: bool,
    },
    UpdateMany {
        filter: Document,
        update: MongoUpdate,
        upsert: bool,
    },
    ReplaceOne {
        filter: Document,
        replacement: Document,
        upsert: bool,
    },
    DeleteOne {
        filter: Document,
    },
    DeleteMany {
        filter: Document,
    },
    /// Drop the whole collection. Destructive: the rules route it only
    /// where a rule names it (`op drop`), as they do dangerous Redis
    /// commands. A collection that does not exist counts as dropped.
    Drop,
}

impl MongoWrite {
    /// The `op` name used on the wire and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            MongoWrite::InsertOne { .. } => "insert_one",
            MongoWrite::InsertMany { .. } => "insert_many",
            MongoWrite::UpdateOne { .. } => "update_one",
            MongoWrite::UpdateMany { .. } => "update_many",
            MongoWrite::ReplaceOne { .. } => "replace_one",
            MongoWrite::DeleteOne { .. } => "delete_one",
            MongoWrite::DeleteMany { .. } => "delete_many",
            MongoWrite::Drop => "drop",
        }
    }
}
