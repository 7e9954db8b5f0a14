//! The spool's configuration: what callers set ([`SpoolConfig`]) and the
//! limits the spool runs with once it is checked ([`Limits`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::format::{RECORD_HEADER, SEGMENT_HEADER};
use super::SpoolError;

/// When the spool fsyncs the records it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `push` returns once its record is fsynced; concurrent pushes share
    /// one fsync. Nothing reported pushed is ever lost.
    Always,
    /// `push` returns once its record is written (to the OS); the file is
    /// fsynced at most this long after.
    Every(Duration),
    /// `push` returns once written; the spool fsyncs only when it closes a
    /// segment, and at shutdown. For tests and data one can lose.
    Never,
}

/// What `push` does when the spool is at its disk cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until acknowledgements free room (back-pressure on clients).
    Block,
    /// Return [`SpoolError::Full`] at once.
    Refuse,
}

/// As operators write it (`--fsync`): `always`, `never`, or a period
/// above zero (`100ms`, `1s`), read by [`syncs_dsl::parse_duration`].
impl FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            period => match syncs_dsl::parse_duration(period) {
                Ok(d) if !d.is_zero() => Ok(Fsync::Every(d)),
                Ok(_) => Err(format!("`{s}`: a period of fsyncs must be above zero")),
                Err(e) => Err(format!("expected always, never, or a period: {e}")),
            },
        }
    }
}

/// As operators write it (`--when-full`): `block` or `refuse`.
impl FromStr for WhenFull {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(WhenFull::Block),
            "refuse" => Ok(WhenFull::Refuse),
            _ => Err(format!("`{s}`: expected block or refuse")),
        }
    }
}

impl WhenFull {
    pub(super) fn label(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::Refuse => "refuse",
        }
    }
}

/// Where and how the spool keeps its records.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Created if missing; one spool per proxy.
    pub dir: PathBuf,
    /// Roll to a new segment file past this (default 64 MiB).
    pub segment_bytes: u64,
    pub fsync: Fsync,
    /// Under [`Fsync::Always`], the least time from the start of one fsync
    /// to the start of the next (default zero: the next starts as soon as
    /// the previous returned). Every push still returns only once its
    /// record is fsynced, up to this much later; the spool fsyncs at most
    /// once per spacing, gathering the records written meanwhile, except
    /// for records somebody waits for ([`Spool::hurry`](super::Spool::hurry)).
    pub fsync_spacing: Duration,
    /// Disk cap for all segments (default 10 GiB).
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Memory for the newest records, to send them without a disk read
    /// (default 8 MiB; each record counts its bytes and a 56-byte entry).
    pub memory_bytes: usize,
}

impl SpoolConfig {
    /// The defaults, in `dir`: 64 MiB segments, `Fsync::Always`, a 10 GiB
    /// cap that blocks, 8 MiB of records in memory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            fsync: Fsync::Always,
            fsync_spacing: Duration::ZERO,
            max_bytes: 10 << 30,
            when_full: WhenFull::Block,
            memory_bytes: 8 << 20,
        }
    }
}

/// The configuration as used (validated, segment size capped).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub memory_bytes: usize,
    pub fsync: Fsync,
    pub fsync_spacing: Duration,
    pub when_full: WhenFull,
}

/// Checks `config` and caps the segment size below the disk cap.
pub(super) fn validate(config: &SpoolConfig) -> Result<Limits, SpoolError> {
    let least = 2 * SEGMENT_HEADER + RECORD_HEADER + 1;
    if config.max_bytes < least {
        return Err(SpoolError::Config(format!(
            "max_bytes {} is below the minimum {least}",
            config.max_bytes
        )));
    }
    if config.segment_bytes <= SEGMENT_HEADER {
        return Err(SpoolError::Config(format!(
            "segment_bytes {} must be over the segment header ({SEGMENT_HEADER} bytes)",
            config.segment_bytes
        )));
    }
    if config.fsync == Fsync::Every(Duration::ZERO) {
        return Err(SpoolError::Config(
            "fsync every 0 ms: use Fsync::Always".into(),
        ));
    }
    if !config.fsync_spacing.is_zero() && config.fsync != Fsync::Always {
        return Err(SpoolError::Config(
            "an fsync spacing applies to Fsync::Always (`--fsync always`) only".into(),
        ));
    }
    crate::spacing::check("fsync spacing", config.fsync_spacing).map_err(SpoolError::Config)?;
    // Acknowledged segments free room only once closed: keep at least a
    // few segments under the cap.
    let segment_bytes = config
        .segment_bytes
        .min((config.max_bytes / 4).max(SEGMENT_HEADER + 1));
    if segment_bytes < config.segment_bytes {
        tracing::warn!(
            segment_bytes = config.segment_bytes,
            max_bytes = config.max_bytes,
            using = segment_bytes,
            "spool segment size reduced to a quarter of the disk cap"
        );
    }
    Ok(Limits {
        segment_bytes,
        max_bytes: config.max_bytes,
        memory_bytes: config.memory_bytes,
        fsync: config.fsync,
        fsync_spacing: config.fsync_spacing,
        when_full: config.when_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_parses_as_operators_write_it() {
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!("never".parse(), Ok(Fsync::Never));
        assert_eq!(
            "100ms".parse(),
            Ok(Fsync::Every(Duration::from_millis(100)))
        );
        assert_eq!(
            "0s".parse::<Fsync>(),
            Err("`0s`: a period of fsyncs must be above zero".to_owned())
        );
        let e = "sometimes".parse::<Fsync>().unwrap_err();
        assert!(
            e.starts_with("expected always, never, or a period: "),
            "{e}"
        );
    }

    #[test]
    fn when_full_parses_as_operators_write_it() {
        assert_eq!("block".parse(), Ok(WhenFull::Block));
        assert_eq!("refuse".parse(), Ok(WhenFull::Refuse));
        assert_eq!(
            "drop".parse::<WhenFull>(),
            Err("`drop`: expected block or refuse".to_owned())
        );
    }
}
