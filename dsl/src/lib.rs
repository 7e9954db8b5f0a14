//! The syncs rules language: which replicated operation goes where.
//!
//! # Layout
//!
//! - `rules.pest`, [`parser`]: the grammar and the AST builder (one function
//!   per grammar rule); syntax errors come from pest, renamed into plain
//!   words.
//! - [`ast`]: plain data for a parsed file, with positions.
//! - [`check`]: semantic checks over all files at once (unknown or duplicate
//!   names, bad patterns, shadowed rules, unused targets, ...); it collects
//!   every problem instead of stopping at the first.
//! - [`compile`]: AST to [`RuleSet`]: patterns to matchers, templates,
//!   bitset indexes.
//! - [`matcher`]: [`RuleSet`] and the hot path, [`RuleSet::decide_redis`] /
//!   [`RuleSet::decide_mongo`].
//! - [`action`]: [`Action`], what a matched rule does (target, db, key
//!   rewrite, namespace rename).
//! - [`commands`]: the Redis command table, its groups and the dangerous
//!   commands.
//! - [`pattern`], [`template`]: globs/regexes and `{1}` / `{db}` templates.
//! - [`ruletest`]: `test` blocks as plain data, run by the engine.
//! - [`target`]: [`Target`], its kind and options; `redis_url` takes the
//!   seed URLs of `redis-cluster` / `redis-sentinel` targets apart for the
//!   checker.
//! - [`diagnostic`]: [`Diagnostic`], rendered like rustc, serializable.
//!
//! **Architecture invariant:** this crate does no network IO and keeps no
//! state; [`load_path`] is the only function that touches the disk, and
//! deciding never allocates.
//!
//! # Semantics in brief
//!
//! Rules are tried in file order, files in lexical order of their names;
//! the first matching rule wins. Nothing matched: the `default` for the
//! protocol decides, and a file set without one drops. A dangerous command
//! (see [`commands`]) is only routed by a rule that names it, by name or by
//! `@dangerous`; other routing rules and the default pass over it, and if
//! nothing else takes it the decision is `Drop` with
//! [`DropReason::Dangerous`]. Multi-key commands: the engine asks once per
//! key; if the keys disagree it splits the command where the command allows,
//! else dead-letters it. The full reference is `docs/rules.md`.

pub mod action;
pub mod ast;
pub mod check;
pub mod commands;
pub mod compile;
pub mod diagnostic;
pub mod duration;
pub mod matcher;
pub mod parser;
pub mod pattern;
mod redis_url;
pub mod ruletest;
pub mod target;
pub mod template;

use std::path::{Path, PathBuf};

pub use action::Action;
pub use diagnostic::{render, Diagnostic, Severity};
pub use duration::{parse_duration, DurationError};
pub use matcher::{Decision, DropReason, MongoOpKind, MongoQuery, RedisQuery, RuleId, RuleSet};
pub use ruletest::{Expected, ExpectedOutput, ExpectedRoute, InputError, RuleTest, TestInput};
pub use target::{Target, TargetId, TargetKind, TargetOptions};

/// The file extension of rules files in a directory.
pub const RULES_EXTENSION: &str = "sync";

/// Loads a rules file, or every `*.sync` file directly inside a directory
/// (not its subdirectories) as one rule set, in lexical order of file names.
///
/// On failure, returns every error found in every file, with the warnings.
pub fn load_path(path: &Path) -> Result<RuleSet, Vec<Diagnostic>> {
    let io_error = |p: &Path, e: std::io::Error| {
        vec![Diagnostic::error(
            p,
            0,
            0,
            format!("cannot read {}: {e}", p.display()),
            "",
        )]
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| io_error(path, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(path, e))?;
            let p = entry.path();
            if p.extension().is_some_and(|x| x == RULES_EXTENSION) && p.is_file() {
                files.push(p);
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        if files.is_empty() {
            return Err(vec![Diagnostic::error(
                path,
                0,
                0,
                format!(
                    "no *.{RULES_EXTENSION} files in directory {}",
                    path.display()
                ),
                "",
            )]);
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => sources.push((f, text)),
            Err(e) => errors.extend(io_error(&f, e)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    parse_sources(&sources)
}

/// Parses, checks and compiles rules given as `(file name, text)` pairs, in
/// the order given (which is the matching order).
///
/// On failure, returns the syntax errors of every file (the first one of each
/// file), or, if all files parse, every semantic error together with the
/// warnings.
pub fn parse_sources(sources: &[(PathBuf, String)]) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut files = Vec::with_capacity(sources.len());
    let mut errors = Vec::new();
    for (path, text) in sources {
        match parser::parse_file(path, text) {
            Ok(f) => files.push(f),
            Err(d) => errors.push(*d),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let checked = check::check(&files);
    if checked.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(checked.diagnostics);
    }
    compile::compile(&files, checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn rule_set_is_send_sync_static() {
        assert_send_sync::<RuleSet>();
    }
}
