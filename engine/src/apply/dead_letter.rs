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
    ) -> std::io::Result<()> {
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
        let mut buf = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        self.file.append(&buf, true).await
    }
}
