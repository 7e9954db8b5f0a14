//! Diagnostics: parse errors, semantic errors and warnings, all with a
//! position and the source line, rendered like rustc / pest.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a [`Diagnostic`] is. Errors stop a rule set from loading;
/// warnings are kept in [`crate::RuleSet::warnings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One message about a rules file.
///
/// `line` and `col` are 1-based; `line == 0` means the message is about the
/// file as a whole (for example it could not be read), and then
/// `source_line` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub source_line: String,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(
        file: impl Into<PathBuf>,
        line: usize,
        col: usize,
        message: impl Into<String>,
        source_line: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line,
            col,
            message: message.into(),
            source_line: source_line.into(),
        }
    }

    /// A warning at a position.
    pub fn warning(
        file: impl Into<PathBuf>,
        line: usize,
        col: usize,
        message: impl Into<String>,
        source_line: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, col, message, source_line)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// ```text
    /// error: expected a key pattern
    ///  --> rules/a.sync:3:19
    ///   |
    /// 3 | rule x: redis key -> drop
    ///   |                   ^
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        if self.line == 0 {
            return write!(f, " --> {}", self.file.display());
        }
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            self.file.display(),
            self.line,
            self.col
        )?;
        writeln!(f, "{pad} |")?;
        let src = self.source_line.trim_end_matches(['\r', '\n']);
        writeln!(f, "{num} | {src}")?;
        // Keep tabs so the caret lines up under the same character.
        let lead: String = src
            .chars()
            .take(self.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad} | {lead}^")
    }
}

impl std::error::Error for Diagnostic {}

/// Renders a list of diagnostics, one blank line between them, followed by
/// a summary line such as `2 errors, 1 warning`.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push_str("\n\n");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    out.push_str(&format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    ));
    out
}
