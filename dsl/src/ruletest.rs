//! Tests written inside rules files (`test "name" { ... }` blocks), as plain
//! data. This crate only parses and checks them; the engine runs them (it
//! owns key extraction and the splitting of multi-key commands) and compares
//! what it would do with [`RuleTest::expect`]. [`TestInput::parse`] reads a
//! lone input line (`syncs-check --explain`) with the same grammar.

use std::path::PathBuf;

use crate::ast::TestInputAst;
use crate::matcher::{DropReason, MongoOpKind};
use crate::target::TargetId;

/// One `test "name" { ... }` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTest {
    /// The quoted name after `test`.
    pub name: String,
    /// The file and 1-based line of the `test` keyword.
    pub file: PathBuf,
    pub line: usize,
    /// The operation fed to the rules.
    pub input: TestInput,
    /// What must come out.
    pub expect: Expected,
}

/// The input line of a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestInput {
    /// `redis PORT DB COMMAND ARG...`, e.g. `redis 6379 1 SET session:7 x`.
    /// `args[0]` is the command name as written.
    Redis {
        port: u16,
        db: u32,
        args: Vec<Vec<u8>>,
    },
    /// `mongo DB COLL OP`, e.g. `mongo app users insert_one`.
    Mongo {
        db: String,
        coll: String,
        op: MongoOpKind,
    },
}

impl TestInput {
    /// Parses one input line on its own, e.g. `redis 6379 0 SET "a b" v` or
    /// `mongo app users insert_one`: the grammar of a `test` block's input
    /// line, quoting included.
    pub fn parse(line: &str) -> Result<TestInput, InputError> {
        TestInput::from_ast(&crate::parser::parse_input_line(line)?)
    }

    /// The input a parsed line describes; `Err` when its port or db is out
    /// of range.
    pub(crate) fn from_ast(ast: &TestInputAst) -> Result<TestInput, InputError> {
        Ok(match ast {
            TestInputAst::Redis { port, db, args } => TestInput::Redis {
                port: u16::try_from(*port).map_err(|_| InputError::Port(*port))?,
                db: u32::try_from(*db).map_err(|_| InputError::Db(*db))?,
                args: args.clone(),
            },
            TestInputAst::Mongo { db, coll, op } => TestInput::Mongo {
                db: db.clone(),
                coll: coll.clone(),
                op: *op,
            },
        })
    }
}

/// Why a lone input line ([`TestInput::parse`]) describes no operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not an input line: `message` says what was expected at column `col`
    /// (1-based), in the words of the rules files' syntax errors.
    #[error("{message} (column {col})")]
    Syntax { col: usize, message: String },
    #[error("port {0} is out of range (0 to 65535)")]
    Port(u64),
    #[error("db {0} is out of range (0 to {max})", max = u32::MAX)]
    Db(u64),
    /// The grammar matched but left nothing to read (not expected).
    #[error("the input line is empty")]
    Empty,
}

/// The `expect` lines of a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// One or more `expect TARGET ...` lines: the operation (or the parts it
    /// is split into) reaches exactly these targets with exactly this content.
    /// Kept in file order; runners should compare them as a multiset.
    Routed(Vec<ExpectedRoute>),
    /// `expect drop`, optionally with a reason: `expect drop rule`,
    /// `expect drop default`, `expect drop dangerous`. `None` accepts any
    /// reason.
    Drop(Option<DropReason>),
    /// `expect dead-letter`: the engine cannot apply the operation (for
    /// example a multi-key command whose keys go to different places and
    /// which cannot be split).
    DeadLetter,
}

/// One `expect TARGET ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRoute {
    /// The target, resolved (the check rejects unknown names).
    pub target: TargetId,
    pub target_name: String,
    /// 1-based line of this `expect`.
    pub line: usize,
    pub output: ExpectedOutput,
}

/// What is applied to the target. Parts left out in the file are filled in
/// from the input, meaning "unchanged": `expect replica` is
/// `expect replica db <input db>: <input args>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedOutput {
    /// `expect TARGET [db N] [: COMMAND ARG...]` for a redis input: the db
    /// written to and the full command after key rewriting.
    Redis { db: u32, args: Vec<Vec<u8>> },
    /// `expect TARGET [db NAME] [coll NAME]` for a mongo input: the namespace
    /// written to after renaming.
    Mongo { db: String, coll: String },
}
