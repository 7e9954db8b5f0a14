//! The `file` target: appends each applied operation as one JSON line.
//!
//! Useful for audit and replay, and as the demo's target where no database
//! is installed. Each run is written and flushed before it counts as applied.

use std::path::PathBuf;

use serde_json::json;
use syncs_dsl::Target as TargetDef;

use super::append::AppendFile;
use super::{json::op_json, Applied, TargetError};
use crate::op::Op;

#[derive(Debug)]
pub struct FileTarget {
    name: String,
    fsync: bool,
    file: AppendFile,
}

impl FileTarget {
    pub fn new(def: &TargetDef) -> Self {
        let path = def.url.strip_prefix("file://").unwrap_or(&def.url);
        Self {
            name: def.name.clone(),
            fsync: def.options.fsync.unwrap_or(false),
            file: AppendFile::new(PathBuf::from(path)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn apply(&self, ops: &[&Op]) -> Result<Vec<Applied>, TargetError> {
        let mut buf = Vec::with_capacity(ops.len() * 96);
        for op in ops {
            let line = json!({ "target": self.name, "op": op_json(op) });
            // Serializing a serde_json::Value to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut buf, &line);
            buf.push(b'\n');
        }
        self.file
            .append(&buf, self.fsync)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(vec![Applied::Ok; ops.len()])
    }

    /// Whether the file can be opened for appending.
    pub async fn probe(&self) -> Result<(), TargetError> {
        self.file
            .append(&[], false)
            .await
            .map_err(|e| self.unavailable(e))
    }

    fn unavailable(&self, e: std::io::Error) -> TargetError {
        TargetError::unavailable(&self.name, format!("{}: {e}", self.file.path().display()))
    }
}
