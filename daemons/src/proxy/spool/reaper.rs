//! The reaper thread: closes the files of deleted segments.
//!
//! Closing the last descriptor of an unlinked file is when the kernel
//! frees its blocks and drops its page cache: 30 ms for a 64 MiB segment
//! on the 2-core test VM (`strace -T`), all in `close`. In the writer that
//! was 30 ms in which nothing new became readable, so every link stalled
//! at each roll (`docs/benchmarks.md`, the 100,000/s latency row). The
//! writer unlinks (and makes the removal durable) itself, in order; only
//! the closing happens here.

use std::sync::mpsc;
use std::thread;

use super::segment::Segment;

/// Closes segment files on a thread of its own; see the module docs.
#[derive(Debug)]
pub(super) struct Reaper {
    tx: Option<mpsc::Sender<Vec<Segment>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reaper {
    /// Starts the thread; when it cannot start, files are closed in line.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Vec<Segment>>();
        match thread::Builder::new()
            .name("spool-reaper".into())
            .spawn(move || rx.iter().for_each(drop))
        {
            Ok(t) => Self {
                tx: Some(tx),
                thread: Some(t),
            },
            Err(e) => {
                tracing::warn!("cannot start the spool reaper thread ({e}): closing deleted segments in the writer");
                Self {
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    /// Closes the files of `segments` (already unlinked), or of those a
    /// reader still holds once it lets go.
    pub fn reap(&self, segments: Vec<Segment>) {
        if let Some(tx) = &self.tx {
            // Back when the thread is gone: dropped here, in line.
            let _ = tx.send(segments);
        }
    }
}

impl Drop for Reaper {
    /// Waits until every file handed over is closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the spool reaper thread panicked");
            }
        }
    }
}
