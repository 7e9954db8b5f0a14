//! `syncs-check <file-or-dir>`: lint rules, run their tests, explain routing.
//! `syncs-check --migrate <original rmt.ini> --out <dir>`: translate a
//! configuration of the original system into syncs' own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use syncs_daemons::check::{self, Format};

/// Checks syncs rules, and shows where an operation would go.
///
/// Checks rules files: syntax, meaning, the tests written in them; with
/// --explain, shows where one operation would go. Given a server INI,
/// checks the rules it names; given an rmt.ini of the original system,
/// checks what sync_server makes of it (see --migrate).
#[derive(Debug, Parser)]
#[command(name = "syncs-check", version)]
struct Args {
    /// A rules file, a directory of *.sync files, or a server INI.
    #[arg(required_unless_present = "migrate", conflicts_with = "migrate")]
    path: Option<PathBuf>,
    /// Translate an rmt.ini of the original system ([listen], [wl],
    /// [mongo], [redisN]) into syncs' rmt.ini and rules/ under --out, then
    /// check them (docs/migrating.md).
    #[arg(long, value_name = "ORIGINAL_RMT_INI", requires = "out")]
    migrate: Option<PathBuf>,
    /// Directory --migrate writes into (created if needed; existing files
    /// are not overwritten).
    #[arg(long, value_name = "DIR", requires = "migrate")]
    out: Option<PathBuf>,
    /// One operation to route, e.g. "redis 6379 1 SET session:7 x" or
    /// "mongo app users insert_one": the input line of a rules file's
    /// test, quoting included ('redis 6379 1 SET "a b" v').
    #[arg(long, value_name = "OPERATION", conflicts_with = "migrate")]
    explain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let format = match args.format {
        OutFormat::Text => Format::Text,
        OutFormat::Json => Format::Json,
    };
    let report = match (&args.migrate, &args.out, &args.path) {
        (Some(source), Some(out), _) => check::migrate(source, out),
        (_, _, Some(path)) => check::run(path, args.explain.as_deref()),
        // clap requires one of the two forms.
        _ => check::Report {
            usage_error: Some("give a rules path, or --migrate <rmt.ini> --out <dir>".into()),
            ..Default::default()
        },
    };
    print!("{}", report.render(format));
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
