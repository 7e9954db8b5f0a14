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
use syncs_dsl::{Diagnostic, Severity, TestInput};
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

/// Parses the `--explain` argument, one input line as in a rules file's
/// `test` block (`redis PORT DB CMD ARG...` or `mongo DB COLL OP`), with the
/// rules grammar: quoted arguments (`SET "a b" v`) work there as here.
pub fn parse_op(text: &str) -> Result<Op, String> {
    let usage = "expected `redis PORT DB COMMAND [ARG...]` or `mongo DB COLLECTION OP`";
    let input = TestInput::parse(text).map_err(|e| format!("{e}; {usage}"))?;
    input_op(&input).ok_or_else(|| usage.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("t.sync");
        std::fs::write(&path, text).expect("write the rules file");
        path
    }

    const TWO_TARGETS: &str = "target r = redis \"redis://x:1\"\n\
                               target b = redis \"redis://y:1\"\n\
                               rule s: redis key \"session:*\", \"a b\" -> b db 2\n\
                               default redis -> r\n\
                               default mongo -> drop\n";

    #[test]
    fn explain_takes_quoted_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rules_file(&dir, TWO_TARGETS);
        let report = run(&path, Some(r#"redis 6379 0 SET "a b" v"#));
        assert!(report.ok(), "{}", report.render(Format::Text));
        let explain = report.explain.unwrap_or_default();
        assert!(explain.contains("key a b: route by rule `s`"), "{explain}");
        assert!(explain.contains("=> b: db 2: SET a b v"), "{explain}");
    }

    #[test]
    fn explain_splits_multi_key_commands_like_the_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rules_file(&dir, TWO_TARGETS);
        let report = run(&path, Some("redis 6379 1 MSET session:7 x other y"));
        let text = report.render(Format::Text);
        assert!(report.ok(), "{text}");
        assert!(text.contains("key session:7: route by rule `s`"), "{text}");
        assert!(text.contains("key other: route by the default"), "{text}");
        assert!(text.contains("b: db 2: MSET session:7 x"), "{text}");
        assert!(text.contains("r: db 1: MSET other y"), "{text}");
    }

    #[test]
    fn a_bad_explain_is_a_usage_error_naming_what_was_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rules_file(&dir, TWO_TARGETS);
        for (line, words) in [
            ("redis 6379 x SET a", "a db number (column 12)"),
            ("redis 70000 0 SET a", "port 70000 is out of range"),
            ("mongo app users upsert", "an operation"),
            ("set a b", "expected `redis PORT DB COMMAND [ARG...]`"),
        ] {
            let report = run(&path, Some(line));
            assert!(!report.ok(), "{line}");
            let e = report.usage_error.unwrap_or_default();
            assert!(e.contains(words), "{line}: {e}");
        }
    }

    #[test]
    fn tests_in_rules_files_run_with_the_split_and_report_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "{TWO_TARGETS}\
             test \"split\" {{\n    redis 6379 1 MSET session:7 x other y\n\
             \x20   expect b db 2: MSET session:7 x\n    expect r: MSET other y\n}}\n\
             test \"wrong on purpose\" {{\n    redis 6379 1 SET session:7 x\n\
             \x20   expect b db 3: SET session:7 x\n}}\n"
        );
        let path = rules_file(&dir, &text);
        let report = run(&path, None);
        let results: Vec<_> = report
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.passed, t.detail.clone()))
            .collect();
        assert_eq!(
            results,
            [
                ("split", true, None),
                (
                    "wrong on purpose",
                    false,
                    Some("got: b: db 2: SET session:7 x".to_owned())
                ),
            ]
        );
        let out = report.render(Format::Text);
        assert!(
            out.ends_with("FAILED: 0 error(s), 0 warning(s), 1 test(s) passed, 1 failed\n"),
            "{out}"
        );
    }
}
