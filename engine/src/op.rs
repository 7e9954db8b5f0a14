//! The operation model: what one client frame asks syncs to replicate.

use bson::{Bson, Document};
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::wire::resp;

/// One decoded client frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Redis(RedisOp),
    /// Boxed: a Mongo write is several times the size of a Redis one, and
    /// operations are moved (into batches, queues, runs) by value.
    Mongo(Box<MongoOp>),
}

impl From<MongoOp> for Op {
    fn from(op: MongoOp) -> Self {
        Op::Mongo(Box::new(op))
    }
}

/// One Redis command: its arguments, the command name first.
///
/// Kept as the command's RESP bytes in canonical form (as
/// [`resp::encode_command`] writes them), and nothing else: a decoded command
/// shares the frame's buffer (decoding copies no key or value), the
/// applier writes the bytes as they came (one copy, no re-encoding) unless
/// a rule rewrote a key, and an operation stays small as it moves through
/// batches, lanes and runs. Arguments are read from the bytes when asked
/// for (a few headers to skip).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCommand {
    resp: Bytes,
}

impl RedisCommand {
    /// Builds a command; `None` when `args` is empty (a command needs a name).
    pub fn new<A: AsRef<[u8]>>(args: &[A]) -> Option<Self> {
        if args.is_empty() {
            return None;
        }
        Some(Self::encoded(args))
    }

    /// `args` (at least one) encoded into a buffer of their own.
    fn encoded<A: AsRef<[u8]>>(args: &[A]) -> Self {
        let mut out = BytesMut::with_capacity(resp::encoded_len(args));
        resp::encode_command(&mut out, args);
        Self { resp: out.freeze() }
    }

    /// A command from bytes the decoder checked are one command in
    /// canonical RESP.
    pub(crate) fn from_canonical(resp: Bytes) -> Self {
        Self { resp }
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        self.arg(0)
    }

    /// Argument `i` (0: the name). Panics past the last, as slice indexing.
    pub fn arg(&self, i: usize) -> &[u8] {
        self.args().at(i)
    }

    /// All arguments, the command name first. Each `get` or index reads
    /// from the start: to look at many by position, take
    /// [`RedisCommand::arg_list`] once.
    pub fn args(&self) -> Args<'_> {
        Args { resp: &self.resp }
    }

    /// Every argument, read in one pass, for access by position (a command
    /// with thousands of keys is looked at key by key).
    pub fn arg_list(&self) -> ArgList<'_> {
        self.args().iter().collect()
    }

    /// The command in RESP, ready to send.
    pub fn resp(&self) -> &[u8] {
        &self.resp
    }

    /// The same command with the arguments at the given positions replaced
    /// (key rewriting); the name stays first.
    pub fn with_args_replaced(&self, replaced: &[(usize, Vec<u8>)]) -> Self {
        let mut args = self.arg_list();
        for (p, new) in replaced {
            if let Some(slot) = args.get_mut(*p) {
                *slot = new;
            }
        }
        Self::encoded(&args)
    }

    /// True when the name equals `upper` ignoring ASCII case.
    pub fn is(&self, upper: &str) -> bool {
        self.name().eq_ignore_ascii_case(upper.as_bytes())
    }
}

impl std::fmt::Debug for RedisCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.args().fmt(f)
    }
}

/// A command's arguments collected for access by position
/// ([`RedisCommand::arg_list`]): inline up to four.
pub type ArgList<'a> = SmallVec<[&'a [u8]; 4]>;

/// The arguments of a [`RedisCommand`], the name first.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    resp: &'a [u8],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.iter().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.iter().nth(i)
    }

    /// Argument `i`; panics past the last, as slice indexing.
    pub fn at(&self, i: usize) -> &'a [u8] {
        match self.get(i) {
            Some(arg) => arg,
            None => panic!("argument {i} of a command of {}", self.len()),
        }
    }

    pub fn iter(&self) -> resp::CanonicalArgs<'a> {
        resp::canonical_args(self.resp)
    }

    pub fn to_vec(&self) -> Vec<&'a [u8]> {
        self.iter().collect()
    }
}

impl std::fmt::Debug for Args<'_> {
    /// As a list of byte strings (`b"SET"`, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(Bytes::copy_from_slice))
            .finish()
    }
}

impl std::ops::Index<usize> for Args<'_> {
    type Output = [u8];

    /// Panics past the last argument, as slice indexing.
    fn index(&self, i: usize) -> &[u8] {
        self.at(i)
    }
}

/// The commands of a [`RedisOp`]: one kept inline (most operations are one
/// command), more on the heap.
pub type Commands = SmallVec<[RedisCommand; 1]>;

/// A Redis operation: one command, or several applied as one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOp {
    /// The port of the Redis server the application wrote to (the source).
    pub port: u16,
    /// The db number at the source.
    pub db: u32,
    /// At least one command; more than one means MULTI/EXEC at the target.
    pub commands: Commands,
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
