//! An append-only file opened on first use, shared by the `file` target and
//! the dead-letter file.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: Mutex<Option<tokio::fs::File>>,
}

impl AppendFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `buf` whole, creating the file and its directory if needed;
    /// `sync` also waits for the data to reach the disk. After an error the
    /// file is reopened on the next call.
    pub async fn append(&self, buf: &[u8], sync: bool) -> std::io::Result<()> {
        let mut guard = self.file.lock().await;
        let file = match guard.as_mut() {
            Some(file) => file,
            None => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .await?;
                guard.insert(file)
            }
        };
        let result = async {
            file.write_all(buf).await?;
            file.flush().await?;
            if sync {
                file.sync_data().await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            *guard = None;
        }
        result
    }
}
