//! The dead-letter file: operations syncs will not apply, with the reason,
//! one JSON line each, so nothing accepted disappears without a trace.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::append::AppendFile;
use super::json::op_json;
use crate::op::Op;

/// Where a dead letter came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The proxy's name and stream id.
    pub source: &'a str,
    pub seq: u64,
    /// The target that refused it, if any.
    pub target: Option<&'a str>,
}

/// A dead letter that could not be written: it carries the whole line, so
/// that the error's log line holds the operation.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the dead-letter file: {source}; the dead letter: {line}")]
pub struct DeadLetterError {
    pub source: std::io::Error,
    pub line: String,
}

/// An append-only JSON-lines file shared by all streams.
#[derive(Debug)]
pub struct DeadLetters {
    file: AppendFile,
}

impl DeadLetters {
    pub fn new(path: &Path) -> Self {
        Self {
            file: AppendFile::new(path.to_owned()),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Records `op` (or the raw payload when it could not be decoded).
    pub async fn record(
        &self,
        origin: &Origin<'_>,
        op: Result<&Op, &[u8]>,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = match op {
            Ok(op) => op_json(op),
            Err(raw) => json!({ "raw": super::json::arg_json(raw) }),
        };
        let line = json!({
            "time": at,
            "source": origin.source,
            "seq": origin.seq,
            "target": origin.target,
            "reason": reason,
            "op": body,
        });
        // A `Value` always serializes (its keys are strings).
        let mut buf = line.to_string().into_bytes();
        buf.push(b'\n');
        self.file
            .append(&buf, true)
            .await
            .map_err(|source| DeadLetterError {
                source,
                line: line.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_letter_that_cannot_be_written_is_in_its_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: the append fails.
        let dl = DeadLetters::new(dir.path());
        let origin = Origin {
            source: "web-1/00000000000000ff",
            seq: 42,
            target: Some("cache"),
        };
        let err = dl
            .record(
                &origin,
                Err(b"6379,0\x01*1\r\n$5\r\nHELLO\r\n"),
                "undecodable: x",
            )
            .await
            .expect_err("a directory is not appendable");
        let shown = err.to_string();
        assert!(
            shown.starts_with("cannot write the dead-letter file: "),
            "{shown}"
        );
        for part in [
            "\"seq\":42",
            "\"target\":\"cache\"",
            "HELLO",
            "undecodable: x",
        ] {
            assert!(shown.contains(part), "{part} not in {shown}");
        }
    }
}
