//! Semantic checks over all files of a rule set at once. Every problem is
//! collected; nothing stops at the first.
//!
//! Errors: unknown or duplicate names, values out of range, invalid globs,
//! regexes and templates, options that do not fit the target, rules and
//! targets of different protocols, repeated conditions, rules that can never
//! match because an earlier rule catches everything they would, tests that
//! name unknown targets or mix protocols, a db other than 0 that could reach
//! a `redis-cluster` target.
//!
//! Warnings: unused targets, rules that route dangerous commands or mongo
//! `drop`, unknown Redis command names, duplicate test names, several dbs
//! merged into a cluster's db 0, a constant hash tag on every key sent to a
//! cluster.
//!
//! One file per job: `targets.rs` (declarations and their options),
//! `rules.rs` (rules and defaults: names and conditions, and the shadowing
//! check in matching order), `outcome.rs` (actions and templates),
//! `shadow.rs` (the pure set logic of "can never match"), `test_blocks.rs`
//! (`test` blocks), `suggest.rs` ("did you mean").

mod outcome;
mod rules;
mod shadow;
mod suggest;
mod targets;
mod test_blocks;

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::diagnostic::{Diagnostic, Severity};
use crate::pattern::Analyzed;
use crate::target::{Target, TargetId, TargetKind};

/// What the checker found, and the resolved targets for the compiler.
#[derive(Debug, Default)]
pub struct Checked {
    /// Errors and warnings, in file order then position.
    pub diagnostics: Vec<Diagnostic>,
    pub targets: Vec<Target>,
    pub target_ids: HashMap<String, TargetId>,
    /// The analysed patterns of every rule, in matching order, so that the
    /// compiler builds each pattern once.
    pub(crate) rule_patterns: Vec<RulePatterns>,
}

/// One rule's patterns as the checker analysed them (`None`: no such
/// condition). An invalid pattern is reported and left out, so these are
/// complete only when the check found no error.
#[derive(Debug, Default)]
pub(crate) struct RulePatterns {
    /// Redis `key` patterns.
    pub(crate) keys: Option<Vec<Analyzed>>,
    /// Mongo `db` patterns.
    pub(crate) dbs: Option<Vec<Analyzed>>,
    /// Mongo `coll` patterns.
    pub(crate) colls: Option<Vec<Analyzed>>,
}

pub(super) struct Ctx<'a> {
    pub(super) files: &'a [File],
    pub(super) diags: Vec<(usize, Diagnostic)>,
}

impl<'a> Ctx<'a> {
    pub(super) fn push(&mut self, fi: usize, span: Span, severity: Severity, message: String) {
        let file = &self.files[fi];
        let d = Diagnostic {
            severity,
            file: file.path.clone(),
            line: span.line,
            col: span.col,
            message,
            source_line: file.line_text(span.line).to_string(),
        };
        self.diags.push((fi, d));
    }
    pub(super) fn error(&mut self, fi: usize, span: Span, message: String) {
        self.push(fi, span, Severity::Error, message);
    }
    pub(super) fn warning(&mut self, fi: usize, span: Span, message: String) {
        self.push(fi, span, Severity::Warning, message);
    }
    pub(super) fn error_count(&self) -> usize {
        self.diags.iter().filter(|(_, d)| d.is_error()).count()
    }
    pub(super) fn at(&self, fi: usize, span: Span) -> String {
        format!("{}:{}", self.files[fi].path.display(), span.line)
    }
}

/// True when a target of `kind` takes operations of `protocol`: Redis
/// operations go to the redis kinds ([`TargetKind::is_redis`]), Mongo
/// writes to `mongo`, both to `file`.
pub(super) fn kind_fits(protocol: Protocol, kind: TargetKind) -> bool {
    match protocol {
        Protocol::Redis => kind.is_redis() || kind == TargetKind::File,
        Protocol::Mongo => matches!(kind, TargetKind::Mongo | TargetKind::File),
    }
}

/// Checks all files. The order of `files` is the matching order.
pub fn check(files: &[File]) -> Checked {
    let mut cx = Ctx {
        files,
        diags: Vec::new(),
    };
    let (targets, target_ids, target_decl) = targets::check_targets(&mut cx);
    let mut used: HashSet<String> = HashSet::new();
    let rule_patterns = rules::check_rules(&mut cx, &targets, &target_ids, &mut used);
    rules::check_defaults(&mut cx, &targets, &target_ids, &mut used);
    test_blocks::check_tests(&mut cx, &targets, &target_ids);

    for (name, (fi, span)) in &target_decl {
        if !used.contains(name) {
            cx.warning(
                *fi,
                *span,
                format!("target `{name}` is never used by a rule or a default"),
            );
        }
    }

    let mut diags = cx.diags;
    diags.sort_by(|(fa, a), (fb, b)| (fa, a.line, a.col).cmp(&(fb, b.line, b.col)));
    Checked {
        diagnostics: diags.into_iter().map(|(_, d)| d).collect(),
        targets,
        target_ids,
        rule_patterns,
    }
}
