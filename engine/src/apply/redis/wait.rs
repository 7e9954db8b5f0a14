//! WAIT after a run's EXEC: the run counts as applied only once `replicas`
//! replicas have it, so that a failover cannot lose a run that was
//! acknowledged.
//!
//! `WAIT <replicas> <ms>` goes in the same pipeline as the run, after its
//! EXEC (inside MULTI it would not block). It answers how many replicas
//! acknowledged every write *of this connection* so far
//! (<https://redis.io/docs/latest/commands/wait/>). Fewer than asked is a
//! *shortfall*: the data is committed on the master but not safe, so the
//! run is reported unavailable and retried, and the marker the run wrote
//! is not trusted as confirmed. The retry finds every record at or below
//! the marker and skips it; since WAIT covers only the connection's own
//! writes, it then *touches* the marker (writes the same value again, which
//! is always propagated) and waits for that, before it reports the run done.
//!
//! Everything here is pure: what to send, how to read the answer, and what
//! to remember across the retry.

use std::time::Duration;

use super::super::Applied;
use crate::wire::reply::{escape, Reply};
use crate::wire::resp::encode_command;

/// A stream's last applied sequence as this connection knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Marker {
    pub(super) value: u64,
    /// Written by this connection's own EXEC and then confirmed by WAIT
    /// (or WAIT is off). A marker read from the server is not: the write
    /// behind it may not have reached any replica.
    pub(super) confirmed: bool,
}

/// The WAIT a target asks for after each run (`replicas` > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait {
    replicas: u32,
    timeout: Duration,
}

/// What a WAIT reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Confirmed,
    /// Only this many replicas had the writes in time.
    Shortfall(i64),
    /// An error reply ("WAIT cannot be used with replica instances"): the
    /// server is not the master any more.
    Refused(String),
    /// Not an answer WAIT gives.
    Nonsense(String),
}

impl Wait {
    /// `None` when `replicas` is 0: WAIT is off.
    pub(super) fn new(replicas: u32, timeout: Duration) -> Option<Self> {
        (replicas > 0).then_some(Self { replicas, timeout })
    }

    /// Milliseconds as WAIT takes them; at least 1, since 0 would make WAIT
    /// block for ever.
    fn millis(&self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Appends `WAIT <replicas> <ms>`.
    pub(super) fn encode(&self, packed: &mut Vec<u8>) {
        let replicas = self.replicas.to_string();
        let ms = self.millis().to_string();
        encode_command(packed, &[&b"WAIT"[..], replicas.as_bytes(), ms.as_bytes()]);
    }

    pub(super) fn judge(&self, reply: &Reply) -> Verdict {
        match reply {
            Reply::Int(k) if *k >= i64::from(self.replicas) => Verdict::Confirmed,
            Reply::Int(k) => Verdict::Shortfall(*k),
            Reply::Error(e) => Verdict::Refused(escape(e)),
            other => Verdict::Nonsense(format!("unexpected WAIT reply {other:?}")),
        }
    }

    /// The reason a shortfall of `confirmed` replicas gives.
    pub(super) fn shortfall(&self, confirmed: i64) -> String {
        format!(
            "{confirmed} of {} replicas confirmed within {:?}",
            self.replicas, self.timeout
        )
    }
}

/// The outcomes of a run whose EXEC committed but whose WAIT fell short,
/// kept for its retry: there every record is skipped as already applied,
/// and a refusal (WRONGTYPE, say) must still be reported, not turned into
/// "ok".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    seqs: Vec<u64>,
    out: Vec<Applied>,
}

impl Held {
    pub(super) fn new<T>(items: &[(u64, T)], out: &[Applied]) -> Self {
        Self {
            seqs: items.iter().map(|(seq, _)| *seq).collect(),
            out: out.to_vec(),
        }
    }

    /// The kept outcomes, if `items` is the same run.
    pub(super) fn outcomes<T>(&self, items: &[(u64, T)]) -> Option<&[Applied]> {
        (self.seqs.len() == items.len() && self.seqs.iter().zip(items).all(|(a, (b, _))| a == b))
            .then_some(&self.out[..])
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn zero_replicas_is_off() {
        assert_eq!(Wait::new(0, Duration::from_secs(1)), None);
    }

    #[test]
    fn encodes_milliseconds_never_zero() {
        let mut packed = Vec::new();
        Wait::new(2, Duration::from_millis(1500))
            .expect("on")
            .encode(&mut packed);
        assert_eq!(packed, b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n1500\r\n");
        let mut packed = Vec::new();
        Wait::new(1, Duration::from_micros(10))
            .expect("on")
            .encode(&mut packed);
        assert!(packed.ends_with(b"$1\r\n1\r\n"), "{packed:?}");
    }

    #[test]
    fn verdicts() {
        let w = Wait::new(2, Duration::from_millis(200)).expect("on");
        assert_eq!(w.judge(&Reply::Int(2)), Verdict::Confirmed);
        assert_eq!(w.judge(&Reply::Int(3)), Verdict::Confirmed);
        assert_eq!(w.judge(&Reply::Int(1)), Verdict::Shortfall(1));
        assert_eq!(w.shortfall(1), "1 of 2 replicas confirmed within 200ms");
        let e = Reply::Error(Bytes::from_static(
            b"ERR WAIT cannot be used with replica instances.",
        ));
        assert!(matches!(w.judge(&e), Verdict::Refused(m) if m.contains("replica instances")));
        assert!(matches!(
            w.judge(&Reply::Status(Bytes::from_static(b"OK"))),
            Verdict::Nonsense(_)
        ));
    }

    #[test]
    fn held_outcomes_only_for_the_same_run() {
        let items = [(4u64, ()), (4, ()), (5, ())];
        let out = [
            Applied::Ok,
            Applied::Refused("WRONGTYPE".into()),
            Applied::Ok,
        ];
        let held = Held::new(&items, &out);
        assert_eq!(held.outcomes(&items), Some(&out[..]));
        assert_eq!(held.outcomes(&items[..2]), None);
        assert_eq!(held.outcomes(&[(4u64, ()), (4, ()), (6, ())]), None);
    }
}
