//! `syncs-check`: loads a rules path, reports every error and warning, runs
//! the tests written in the rules files through the engine's router, and
//! explains the routing of one operation on request.
//!
//! Given a server INI instead, it checks the rules the INI names; given an
//! `rmt.ini` of the original system, it says so, points at `--migrate`
//! and checks the rules the server makes of it ([`crate::legacy`]).
//! [`migrate`] is `--migrate`: it writes those rules and a server INI as
//! files, then checks them.

use std::path::Path;

use serde::Serialize;
use syncs_dsl::{Diagnostic, MongoOpKind, Severity, TestInput};
use syncs_engine::op::Op;
pub use syncs_engine::route::ruletest::{explain_op, TestResult};
use syncs_engine::route::ruletest::{input_op, run_test};

use crate::config::{RulesSource, ServerConfig};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Everything `syncs-check` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// What the path is, or what `--migrate` did, before the checks.
    pub note: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
    pub tests: Vec<TestResult>,
    pub explain: Option<String>,
    /// Problems with the `--explain` argument itself.
    pub usage_error: Option<String>,
}

impl Report {
    /// No error, no failed test, no usage error (warnings are fine).
    pub fn ok(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
            && self.tests.iter().all(|t| t.passed)
            && self.usage_error.is_none()
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&serde_json::json!({
                    "ok": self.ok(),
                    "note": self.note,
                    "diagnostics": self.diagnostics,
                    "tests": self.tests,
                    "explain": self.explain,
                    "usage_error": self.usage_error,
                }))
                .unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Text => {
                let mut out = self.note.clone().unwrap_or_default();
                for d in &self.diagnostics {
                    out.push_str(&format!("{d}\n"));
                }
                for t in &self.tests {
                    let verdict = if t.passed { "ok" } else { "FAILED" };
                    out.push_str(&format!("test {} ({}) ... {verdict}\n", t.name, t.location));
                    if let Some(d) = &t.detail {
                        out.push_str(&format!("    {d}\n"));
                    }
                }
                if let Some(e) = &self.explain {
                    out.push_str(e);
                }
                if let Some(u) = &self.usage_error {
                    out.push_str(&format!("error: {u}\n"));
                }
                let errors = self
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                let warnings = self.diagnostics.len() - errors;
                let failed = self.tests.iter().filter(|t| !t.passed).count();
                out.push_str(&format!(
                    "{}: {errors} error(s), {warnings} warning(s), {} test(s) passed, {failed} failed\n",
                    if self.ok() { "ok" } else { "FAILED" },
                    self.tests.len() - failed,
                ));
                out
            }
        }
    }
}

/// Checks `path` (rules, a server INI, or an original `rmt.ini`); explains
/// `explain` when given.
pub fn run(path: &Path, explain: Option<&str>) -> Report {
    let mut report = Report::default();
    let source = match identify(path) {
        Ok((note, source)) => {
            report.note = note;
            source
        }
        Err(message) => {
            report.diagnostics = vec![Diagnostic::error(path, 0, 0, message, "")];
            return report;
        }
    };
    check_source(report, &source, explain)
}

fn check_source(mut report: Report, source: &RulesSource, explain: Option<&str>) -> Report {
    let loaded = match source.load() {
        Ok(r) => r,
        Err(diags) => {
            report.diagnostics.extend(diags);
            return report;
        }
    };
    let rules = loaded.rules;
    report.diagnostics.extend(loaded.warnings);
    report.diagnostics.extend(rules.warnings().iter().cloned());
    report.tests = rules.tests().iter().map(|t| run_test(&rules, t)).collect();
    if let Some(text) = explain {
        match parse_op(text) {
            Ok(op) => report.explain = Some(explain_op(&rules, &op)),
            Err(e) => report.usage_error = Some(e),
        }
    }
    report
}

/// What `path` holds: rules (a file or a directory), a server INI (then
/// its rules are checked), or an original-format `rmt.ini` (then the rules
/// the server makes of it). `Err`: an INI that does not load.
fn identify(path: &Path) -> Result<(Option<String>, RulesSource), String> {
    let rules = || Ok((None, RulesSource::Path(path.to_owned())));
    let is_rules_file = path
        .extension()
        .is_some_and(|x| x == syncs_dsl::RULES_EXTENSION);
    if path.is_dir() || is_rules_file {
        return rules();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return rules(); // the rules loader reports it
    };
    let Ok(ini) = crate::legacy::parse_ini(&text) else {
        return rules();
    };
    if crate::legacy::is_original(&ini).map_err(|e| format!("{e:#}"))? {
        let config = ServerConfig::load(path).map_err(|e| format!("{e:#}"))?;
        let mut note = format!(
            "{p} is in the format of the system syncs replaces (the original rmt.ini).\n\
             sync_server runs it as it is: the settings and rules below are what it makes of it.\n\
             To write syncs' own rmt.ini and rules from it (docs/migrating.md):\n\
             \x20   syncs-check --migrate {p} --out <dir>\n",
            p = path.display()
        );
        for line in config.original.iter().flat_map(|o| o.describe()) {
            note.push_str(&format!("  {line}\n"));
        }
        return Ok((Some(note), config.rules));
    }
    if ini.section(Some("server")).is_some() {
        let config = ServerConfig::load(path).map_err(|e| format!("{e:#}"))?;
        let note = format!(
            "{} is a sync_server configuration; checking its rules: {}\n",
            path.display(),
            config.rules
        );
        return Ok((Some(note), config.rules));
    }
    rules()
}

/// `syncs-check --migrate <original rmt.ini> --out <dir>`: writes the
/// translation (see [`crate::legacy::migrate`]), says what it wrote, then
/// checks the written rules and runs their tests.
pub fn migrate(source: &Path, out: &Path) -> Report {
    let mut report = Report::default();
    let migrated = match crate::legacy::migrate(source, out) {
        Ok(m) => m,
        Err(e) => {
            report.usage_error = Some(format!("{e:#}"));
            return report;
        }
    };
    let o = &migrated.translation.original;
    let mut note = format!(
        "{} is in the original system's format; translated:\n",
        source.display()
    );
    for line in o.describe() {
        note.push_str(&format!("  {line}\n"));
    }
    for w in &o.warnings {
        note.push_str(&format!("  warning: {w}\n"));
    }
    note.push_str(&format!(
        "wrote {} (listen = 0.0.0.0:{}, allow = {}, plaintext = yes)\n\
         wrote {} ({} rule(s), one test per route)\n\
         next: `sync_server {}` behaves as the original file; then configure [tls] \
         (docs/migrating.md)\n\
         checking {}:\n",
        migrated.config.display(),
        o.port,
        o.allow,
        migrated.rules_file.display(),
        o.routes.len(),
        migrated.config.display(),
        migrated.rules_dir.display(),
    ));
    report.note = Some(note);
    check_source(report, &RulesSource::Path(migrated.rules_dir), None)
}

/// Parses `redis PORT DB CMD ARG...` or `mongo DB COLL OP`.
pub fn parse_op(text: &str) -> Result<Op, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let usage = "expected `redis PORT DB COMMAND [ARG...]` or `mongo DB COLLECTION OP`";
    match words.as_slice() {
        ["redis", port, db, args @ ..] if !args.is_empty() => {
            let port = port
                .parse()
                .map_err(|_| format!("bad port `{port}`; {usage}"))?;
            let db = db.parse().map_err(|_| format!("bad db `{db}`; {usage}"))?;
            input_op(&TestInput::Redis {
                port,
                db,
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            })
            .ok_or_else(|| usage.to_owned())
        }
        ["mongo", db, coll, op] => {
            let op = MongoOpKind::from_name(op).ok_or_else(|| {
                format!("unknown op `{op}` (insert_one, insert_many, update_one, update_many, replace_one, delete_one, delete_many, drop)")
            })?;
            input_op(&TestInput::Mongo {
                db: (*db).to_owned(),
                coll: (*coll).to_owned(),
                op,
            })
            .ok_or_else(|| usage.to_owned())
        }
        _ => Err(usage.to_owned()),
    }
}
