//! The settings of a connection: [`Config`], [`Buffering`] and their
//! defaults and limits.

use std::time::Duration;

use syncs_engine::wire::client::DEFAULT_MAX_FRAME;

use crate::error::ClientError;

/// How long a send may wait for the proxy to take bytes (default 1 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// The buffer size when buffering is on without a size (64 KiB).
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
/// How long a buffered frame may wait when buffering is on without a
/// linger (1 ms).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
/// The longest linger accepted (10 s): buffering trades latency for
/// throughput, not durability.
pub const MAX_LINGER: Duration = Duration::from_secs(10);

/// Buffering: several frames per `write(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffering {
    /// The buffer is written once it holds this many bytes; a frame of
    /// this size or more is written directly (after the buffer).
    pub size: usize,
    /// No frame waits longer than this in the buffer.
    pub linger: Duration,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            size: DEFAULT_BUFFER_SIZE,
            linger: DEFAULT_LINGER,
        }
    }
}

/// Settings of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `SO_SNDTIMEO`: a send fails when the proxy takes no bytes for this
    /// long (and a connect fails when the proxy's backlog stays full this
    /// long). `None` waits forever.
    pub send_timeout: Option<Duration>,
    /// The largest payload sent; larger frames are refused before any byte
    /// is written. Keep it equal to the proxy's limit.
    pub max_frame: u32,
    /// `None` (the default): fail fast, a connect that fails is an error at
    /// once. `Some(t)`: while the socket is missing or refuses, try again
    /// with a short backoff (2 ms doubling to 100 ms) for up to `t`, then
    /// fail. Never waits longer than `t`.
    pub connect_timeout: Option<Duration>,
    /// `None` (the default): each frame is written by the call that sends
    /// it. `Some`: frames are buffered (see the module documentation).
    pub buffering: Option<Buffering>,
    /// Offer the proxy a pipe for the frames (docs/protocol.md, 1d); the
    /// default, unless `INTC_PIPE=0` is in the environment. A proxy that
    /// does not take it gets the frames on the socket.
    pub pipe: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: None,
            buffering: None,
            pipe: std::env::var_os("INTC_PIPE").is_none_or(|v| v != "0"),
        }
    }
}

impl Config {
    /// Refuses a payload of `len` bytes above [`Self::max_frame`].
    pub(super) fn check_payload(&self, len: u64) -> Result<(), ClientError> {
        let max = u64::from(self.max_frame);
        if len > max {
            return Err(ClientError::TooLarge { len, max });
        }
        Ok(())
    }

    /// Checks the settings (a zero timeout cannot be set on a socket).
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.send_timeout == Some(Duration::ZERO) {
            return Err(ClientError::InvalidArgument(
                "a send timeout of zero is not possible; use None to wait forever".into(),
            ));
        }
        if self.max_frame == 0 {
            return Err(ClientError::InvalidArgument(
                "max_frame must be at least 1 byte".into(),
            ));
        }
        if self.connect_timeout == Some(Duration::ZERO) {
            return Err(ClientError::InvalidArgument(
                "a connect timeout of zero is not possible; use None to fail fast".into(),
            ));
        }
        if let Some(b) = self.buffering {
            if b.size == 0 {
                return Err(ClientError::InvalidArgument(
                    "a buffer size of zero is not possible; turn buffering off instead".into(),
                ));
            }
            if b.linger.is_zero() || b.linger > MAX_LINGER {
                return Err(ClientError::InvalidArgument(format!(
                    "the linger must be above zero and at most {MAX_LINGER:?}, not {:?}",
                    b.linger
                )));
            }
        }
        Ok(())
    }
}
