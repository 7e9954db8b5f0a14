//! The `file` target: appends each applied operation as one JSON line.
//!
//! Useful for audit and replay, and as the demo's target where no database
//! is installed. Each run is written and flushed before it counts as applied.

use std::path::PathBuf;

use serde_json::json;
use syncs_dsl::Target as TargetDef;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{json::op_json, Applied, TargetError};
use crate::op::Op;

#[derive(Debug)]
pub struct FileTarget {
    name: String,
    path: PathBuf,
    fsync: bool,
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileTarget {
    pub fn new(def: &TargetDef) -> Self {
        let path = def.url.strip_prefix("file://").unwrap_or(&def.url);
        Self {
            name: def.name.clone(),
            path: PathBuf::from(path),
            fsync: def.options.fsync.unwrap_or(false),
            file: Mutex::new(None),
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
        let mut guard = self.file.lock().await;
        let unavailable = |e: std::io::Error| TargetError {
            target: self.name.clone(),
            reason: format!("{}: {e}", self.path.display()),
        };
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await.map_err(unavailable)?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(unavailable)?;
            *guard = Some(f);
        }
        let Some(file) = guard.as_mut() else {
            return Err(unavailable(std::io::Error::other("file not open")));
        };
        if let Err(e) = async {
            file.write_all(&buf).await?;
            file.flush().await?;
            if self.fsync {
                file.sync_data().await?;
            }
            Ok::<(), std::io::Error>(())
        }
        .await
        {
            *guard = None;
            return Err(unavailable(e));
        }
        Ok(vec![Applied::Ok; ops.len()])
    }
}
