//! A run sent ahead: its `MULTI` and commands go out while the run before
//! it executes, its `EXEC` only once that run is known to have committed.
//!
//! Without it the target sat idle between runs: from the last result of
//! one EXEC until the first command of the next run arrived (the server
//! reading the results, the lane taking its next run, the request built
//! and written), ~0.4 ms per run of 8,192 SETs, ~5 % of the target's time
//! under a backlog. Queued commands do nothing until `EXEC`; a connection
//! closed or a `DISCARD` drops them. So sending the next run's commands
//! early changes nothing about what commits, or in what order: the next
//! run's `EXEC` is still written only after this run's `EXEC` result was
//! read and found committed, exactly as if the whole next run were sent
//! then. If this run fails, the run sent ahead is discarded with the
//! connection (or by `DISCARD`, after an EXECABORT, when this run is sent
//! again on the same connection).
//!
//! The next call commits the run sent ahead only when it is that run (the
//! caller names each run with a [`RunId`]); anything else on the
//! connection first discards it.

use super::Part;
use crate::apply::RunId;

/// What the connection holds in a `MULTI` not yet executed.
#[derive(Debug)]
pub(super) struct Ahead {
    stream: u64,
    run: RunId,
    /// Its first sequence.
    pub(super) first: u64,
    /// What each command queued after `MULTI` is (each gets a reply
    /// before `EXEC`).
    pub(super) parts: Vec<Part>,
    /// The marker value the run writes.
    pub(super) marker: u64,
}

impl Ahead {
    pub(super) fn new(stream: u64, run: RunId, first: u64, parts: Vec<Part>, marker: u64) -> Self {
        Self {
            stream,
            run,
            first,
            parts,
            marker,
        }
    }

    /// Whether `run` of `stream` is the run sent ahead.
    pub(super) fn is(&self, stream: u64, run: RunId) -> bool {
        self.stream == stream && run != RunId::NONE && self.run == run
    }
}
