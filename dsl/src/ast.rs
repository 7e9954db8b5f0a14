//! Plain data for a parsed rules file. Every node that a diagnostic may point
//! at carries a [`Span`]. Values are kept as written (numbers as `u64`,
//! patterns as source text); range and validity checks happen in
//! [`crate::check`].

use std::path::PathBuf;
use std::time::Duration;

use crate::matcher::{DropReason, MongoOpKind};
use crate::pattern::PatternSrc;
use crate::target::TargetKind;

/// A 1-based position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

/// One parsed file.
#[derive(Clone, Debug)]
pub struct File {
    pub path: PathBuf,
    pub source: String,
    pub items: Vec<Item>,
}

impl File {
    /// The text of a 1-based line, without its line break; empty if out of
    /// range.
    pub fn line_text(&self, line: usize) -> &str {
        line.checked_sub(1)
            .and_then(|i| self.source.lines().nth(i))
            .unwrap_or("")
    }
}

#[derive(Clone, Debug)]
pub enum Item {
    Target(TargetDecl),
    Rule(RuleDecl),
    Default(DefaultDecl),
    Test(TestDecl),
}

/// `target NAME = KIND "URL" { OPTION = VALUE, ... }`
#[derive(Clone, Debug)]
pub struct TargetDecl {
    pub name: Spanned<String>,
    pub kind: TargetKind,
    pub url: Spanned<String>,
    pub options: Vec<OptionDecl>,
}

#[derive(Clone, Debug)]
pub struct OptionDecl {
    pub name: Spanned<String>,
    pub value: Spanned<OptionValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionValue {
    Number(u64),
    Duration(Duration),
    Bool(bool),
    Str(String),
}

/// Redis or Mongo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Redis,
    Mongo,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Redis => "redis",
            Protocol::Mongo => "mongo",
        }
    }
}

/// `rule NAME: redis|mongo CONDITIONS -> OUTCOME`
#[derive(Clone, Debug)]
pub struct RuleDecl {
    pub name: Spanned<String>,
    /// Position of the `rule` keyword.
    pub span: Span,
    pub conds: Conditions,
    pub outcome: Spanned<OutcomeAst>,
}

impl RuleDecl {
    pub fn protocol(&self) -> Protocol {
        match self.conds {
            Conditions::Redis(_) => Protocol::Redis,
            Conditions::Mongo(_) => Protocol::Mongo,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Conditions {
    Redis(RedisConds),
    Mongo(MongoConds),
}

/// An inclusive range `lo..hi`; a single value has `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumRange {
    pub lo: u64,
    pub hi: u64,
}

/// A `cmd` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdItem {
    /// A command name, upper-cased.
    Name(String),
    /// `@group`, without the `@`, as written.
    Group(String),
}

/// Each field is `None` when the rule has no such condition (matches any).
/// A repeated condition (`port 1 port 2`) is kept in `repeated` for the
/// checker to report.
#[derive(Clone, Debug, Default)]
pub struct RedisConds {
    pub ports: Option<Vec<Spanned<NumRange>>>,
    pub dbs: Option<Vec<Spanned<NumRange>>>,
    pub cmds: Option<Vec<Spanned<CmdItem>>>,
    pub keys: Option<Vec<Spanned<PatternSrc>>>,
    pub repeated: Vec<Spanned<&'static str>>,
}

#[derive(Clone, Debug, Default)]
pub struct MongoConds {
    pub dbs: Option<Vec<Spanned<PatternSrc>>>,
    pub colls: Option<Vec<Spanned<PatternSrc>>>,
    pub ops: Option<Vec<Spanned<OpItem>>>,
    pub repeated: Vec<Spanned<&'static str>>,
}

impl MongoConds {
    /// The kinds the rule's conditions match, a bit per [`MongoOpKind`]:
    /// every kind when there is no `op` condition.
    pub fn op_bits(&self) -> u8 {
        match &self.ops {
            None => MongoOpKind::ALL.iter().fold(0, |m, k| m | k.bit()),
            Some(items) => items
                .iter()
                .flat_map(|i| i.node.kinds())
                .fold(0, |m, k| m | k.bit()),
        }
    }

    /// The `op` condition names `drop`, which a rule must to route one.
    pub fn names_drop(&self) -> bool {
        self.ops
            .iter()
            .flatten()
            .any(|i| i.node == OpItem::Exact(MongoOpKind::Drop))
    }
}

/// An `op` item: one kind, or a family (`insert` = `insert_one` and
/// `insert_many`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpItem {
    Insert,
    Update,
    Replace,
    Delete,
    Exact(MongoOpKind),
}

impl OpItem {
    pub fn kinds(self) -> &'static [MongoOpKind] {
        use MongoOpKind::*;
        match self {
            OpItem::Insert => &[InsertOne, InsertMany],
            OpItem::Update => &[UpdateOne, UpdateMany],
            OpItem::Replace => &[ReplaceOne],
            OpItem::Delete => &[DeleteOne, DeleteMany],
            OpItem::Exact(InsertOne) => &[InsertOne],
            OpItem::Exact(InsertMany) => &[InsertMany],
            OpItem::Exact(UpdateOne) => &[UpdateOne],
            OpItem::Exact(UpdateMany) => &[UpdateMany],
            OpItem::Exact(ReplaceOne) => &[ReplaceOne],
            OpItem::Exact(DeleteOne) => &[DeleteOne],
            OpItem::Exact(DeleteMany) => &[DeleteMany],
            OpItem::Exact(Drop) => &[Drop],
        }
    }
}

#[derive(Clone, Debug)]
pub enum OutcomeAst {
    Drop,
    /// `dead-letter ["reason"]`.
    DeadLetter(Option<String>),
    Route(Vec<ActionAst>),
}

/// `TARGET [db N|"name"] [key "template"] [prefix "p"] [coll "template"]`
#[derive(Clone, Debug)]
pub struct ActionAst {
    pub target: Spanned<String>,
    pub db: Option<Spanned<DbValue>>,
    pub key: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub coll: Option<Spanned<String>>,
    pub repeated: Vec<Spanned<&'static str>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbValue {
    /// `db 2` (Redis).
    Number(u64),
    /// `db "app_copy"` (Mongo, a template).
    Name(String),
}

/// `default redis|mongo -> OUTCOME`
#[derive(Clone, Debug)]
pub struct DefaultDecl {
    pub protocol: Protocol,
    pub span: Span,
    pub outcome: Spanned<OutcomeAst>,
}

/// `test "name" { INPUT EXPECT... }`
#[derive(Clone, Debug)]
pub struct TestDecl {
    pub name: String,
    pub span: Span,
    pub input: Spanned<TestInputAst>,
    pub expects: Vec<Spanned<ExpectAst>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestInputAst {
    Redis {
        port: u64,
        db: u64,
        args: Vec<Vec<u8>>,
    },
    Mongo {
        db: String,
        coll: String,
        op: MongoOpKind,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectAst {
    Drop(Option<DropReason>),
    DeadLetter,
    Route {
        target: Spanned<String>,
        db: Option<Spanned<String>>,
        coll: Option<Spanned<String>>,
        args: Option<Vec<Vec<u8>>>,
    },
}
