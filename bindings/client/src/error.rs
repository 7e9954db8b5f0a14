//! What can go wrong on the client side.

use std::io;
use std::path::PathBuf;

use syncs_engine::wire::client::FrameError;

/// Why a frame was not built or not delivered.
///
/// The messages are complete sentences with their context (socket path, byte
/// counts, limits): the C and Python bindings show only `Display`, so the
/// cause of an I/O error is part of the message rather than a `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to the proxy failed (no socket file, nobody listening, or
    /// the proxy's backlog stayed full past the send timeout). Returned at
    /// once: nothing is queued or retried in the background.
    #[error("proxy unavailable: cannot connect to {}: {error}", path.display())]
    Unavailable { path: PathBuf, error: io::Error },

    /// Writing the frame failed (proxy gone, or the send timeout expired).
    /// The connection has been dropped, so a partly written frame is never
    /// followed by another one on the same stream; the next send reconnects.
    #[error(
        "write to the proxy at {} failed after {written} of {len} bytes \
         (connection dropped, the next send reconnects): {error}",
        path.display()
    )]
    Io {
        path: PathBuf,
        written: usize,
        len: usize,
        error: io::Error,
    },

    /// A SYNC could not confirm the frames sent: no answer in time, the
    /// connection broke, or frames were written on a connection that broke
    /// before a SYNC confirmed them (they may or may not be in the spool).
    #[error("cannot confirm the frames sent to the proxy at {}: {reason}", path.display())]
    Unconfirmed { path: PathBuf, reason: String },

    /// The payload is larger than the limit (the proxy's `--max-frame`,
    /// 64 MiB by default, or the 4 GiB the length prefix can say).
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },

    /// The payload is not something the server would accept; the engine's
    /// decoder said why.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),

    /// A BSON part handed to a builder is not a valid document.
    #[error("bad BSON in {what}: {detail}")]
    Bson { what: String, detail: String },

    /// An argument that makes no sense (empty path, zero timeout, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// True when the proxy could not be reached or stopped taking bytes:
    /// the frame was not delivered (and retrying later may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. } | ClientError::Io { .. }
        )
    }

    /// True when the frame itself is at fault (retrying cannot help).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            ClientError::Frame(_) | ClientError::Bson { .. } | ClientError::InvalidArgument(_)
        )
    }

    /// True when the caller's BSON is at fault: a part handed to a builder,
    /// or the write description inside a Mongo frame.
    pub fn is_bson(&self) -> bool {
        matches!(
            self,
            ClientError::Bson { .. } | ClientError::Frame(FrameError::Mongo(_))
        )
    }
}
