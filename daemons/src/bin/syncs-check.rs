//! `syncs-check <file-or-dir>`: lint rules, run their tests, explain routing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use syncs_daemons::check::{self, Format};

/// Checks syncs rules files: syntax, meaning, the tests written in them;
/// with --explain, shows where one operation would go.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// A rules file, or a directory of *.sync files.
    path: PathBuf,
    /// One operation to route, e.g. "redis 6379 1 SET session:7 x" or
    /// "mongo app users insert_one".
    #[arg(long, value_name = "OPERATION")]
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
    let report = check::run(&args.path, args.explain.as_deref());
    print!("{}", report.render(format));
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
