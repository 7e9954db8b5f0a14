//! The envelope of records on NATS: the headers the proxy puts on each
//! message and the server reads back, and the body (docs/protocol.md,
//! section 4). One codec for both ends, so the two cannot drift apart; the
//! subject is [`super::subject`].
//!
//! Two formats:
//! - **format 1**: one record per message, the body is the record;
//! - **format 2** (`Syncs-Format: 2`): consecutive records of one source,
//!   the body is a BATCH body of the TCP protocol
//!   ([`syncs_engine::wire::peer::put_batch`]). Its `Syncs-Stream` names the
//!   reserved source [`FENCE`], whose checkpoint holds [`FENCE_TEXT`]: a
//!   server older than format 2 reads that checkpoint, fails, and stops the
//!   partition before it acknowledges anything (nothing is lost; it resumes
//!   once upgraded). The real source is in `Syncs-Source`.
//!
//! It lives in the daemons, not in the engine's `wire/`, because
//! [`HeaderMap`] is async-nats' type and the engine links no NATS client.

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use syncs_engine::wire::peer;

/// Header: broker-side dedupe id, `<stream id hex>:<seq>` (format 1) or
/// `<stream id hex>:<first>-<last>` (format 2).
pub const HDR_MSG_ID: &str = "Nats-Msg-Id";
/// Header: the source's stream id, 16 hex digits; [`FENCE`] in format 2.
pub const HDR_STREAM: &str = "Syncs-Stream";
/// Header: the (first) record's sequence in its stream, decimal.
pub const HDR_SEQ: &str = "Syncs-Seq";
/// Header: the proxy's name (logs, metrics, dead letters).
pub const HDR_NAME: &str = "Syncs-Name";
/// Header: the format, decimal; absent = 1.
pub const HDR_FORMAT: &str = "Syncs-Format";
/// Header (format 2): the source's stream id, 16 hex digits.
pub const HDR_SOURCE: &str = "Syncs-Source";
/// Header (format 2): how many records, decimal, at least 1.
pub const HDR_COUNT: &str = "Syncs-Count";
/// Header (format 2): the source's record published before this message's
/// first (0: none); no record of the source lies strictly between the two.
pub const HDR_PREV: &str = "Syncs-Prev";

/// The newest format this build reads and writes.
pub const FORMAT: u32 = 2;
/// The stream id format-2 messages name in `Syncs-Stream` (never a real
/// source's: the spool's ids stop below it).
pub const FENCE: u64 = u64::MAX;
/// What the fence's checkpoint key holds (docs/protocol.md).
pub const FENCE_TEXT: &str =
    "syncs NATS format 2: this sync_server is older than the proxies' format; upgrade it";

/// What a message says about the records it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The source's stream id.
    pub stream: u64,
    /// The first record's sequence in that stream (never 0).
    pub seq: u64,
    /// Records carried (1 in format 1).
    pub count: u32,
    /// Format 2: the record of the source published before `seq`.
    pub prev: Option<u64>,
    /// The proxy's name; empty when the message has none.
    pub name: String,
}

impl Envelope {
    /// The last record's sequence.
    pub fn last(&self) -> u64 {
        self.seq + u64::from(self.count) - 1
    }
}

/// A message a server must not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Malformed: terminated and counted.
    #[error("{0}")]
    Bad(String),
    /// From a newer syncs: never terminated, the reader stops instead.
    #[error("message of format {0} from a newer syncs: upgrade this sync_server")]
    Newer(String),
}

fn bad(what: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Bad(what.into())
}

fn clean(name: &str) -> String {
    // A header value cannot hold a line break, and the name is only a label.
    name.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// The headers of the format-1 message carrying record `seq` of `stream`,
/// published by the proxy called `name`. Control characters in `name`
/// become `_`.
pub fn encode(stream: u64, seq: u64, name: &str) -> HeaderMap {
    let stream = format!("{stream:016x}");
    let mut h = HeaderMap::new();
    h.insert(HDR_MSG_ID, format!("{stream}:{seq}").as_str());
    h.insert(HDR_STREAM, stream.as_str());
    h.insert(HDR_SEQ, seq.to_string().as_str());
    h.insert(HDR_NAME, clean(name).as_str());
    h
}

/// The headers and body of the format-2 message carrying `records`,
/// numbered from `first`, of `stream`, after record `prev` (0: none).
pub fn encode_run(
    stream: u64,
    first: u64,
    prev: u64,
    records: &[Bytes],
    name: &str,
) -> (HeaderMap, Bytes) {
    let last = first + records.len().saturating_sub(1) as u64;
    let source = format!("{stream:016x}");
    let mut h = HeaderMap::new();
    h.insert(HDR_MSG_ID, format!("{source}:{first}-{last}").as_str());
    h.insert(HDR_FORMAT, "2");
    h.insert(HDR_STREAM, format!("{FENCE:016x}").as_str());
    h.insert(HDR_SOURCE, source.as_str());
    h.insert(HDR_SEQ, first.to_string().as_str());
    h.insert(HDR_COUNT, records.len().to_string().as_str());
    h.insert(HDR_PREV, prev.to_string().as_str());
    h.insert(HDR_NAME, clean(name).as_str());
    let mut body = BytesMut::new();
    peer::put_batch(&mut body, first, records);
    (h, body.freeze())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

fn hex(h: &HeaderMap, name: &str) -> Result<u64, EnvelopeError> {
    let v = header(h, name).ok_or_else(|| bad(format!("no {name} header")))?;
    u64::from_str_radix(v, 16).map_err(|_| bad(format!("{name} `{v}` is not hexadecimal")))
}

fn decimal(h: &HeaderMap, name: &str) -> Result<u64, EnvelopeError> {
    let v = header(h, name).ok_or_else(|| bad(format!("no {name} header")))?;
    v.parse()
        .map_err(|_| bad(format!("{name} `{v}` is not a number")))
}

/// Reads the envelope back from the headers.
pub fn decode(h: &HeaderMap) -> Result<Envelope, EnvelopeError> {
    let name = header(h, HDR_NAME).unwrap_or_default().to_owned();
    let seq = decimal(h, HDR_SEQ)?;
    if seq == 0 {
        return Err(bad("sequence 0"));
    }
    match header(h, HDR_FORMAT) {
        None => {
            let stream = hex(h, HDR_STREAM)?;
            if stream == FENCE {
                return Err(bad("the reserved stream id without Syncs-Format"));
            }
            Ok(Envelope {
                stream,
                seq,
                count: 1,
                prev: None,
                name,
            })
        }
        Some("2") => {
            let stream = hex(h, HDR_SOURCE)?;
            if stream == FENCE {
                return Err(bad("Syncs-Source is the reserved stream id"));
            }
            let count = u32::try_from(decimal(h, HDR_COUNT)?)
                .ok()
                .filter(|&c| c > 0)
                .ok_or_else(|| bad("Syncs-Count must be 1..=4294967295"))?;
            let prev = decimal(h, HDR_PREV)?;
            if prev >= seq {
                return Err(bad(format!(
                    "Syncs-Prev {prev} is not below Syncs-Seq {seq}"
                )));
            }
            if seq.checked_add(u64::from(count) - 1).is_none() {
                return Err(bad("the records' sequences overflow"));
            }
            Ok(Envelope {
                stream,
                seq,
                count,
                prev: Some(prev),
                name,
            })
        }
        Some(other) if other.parse::<u32>().is_ok_and(|f| f > FORMAT) => {
            Err(EnvelopeError::Newer(other.to_owned()))
        }
        Some(other) => Err(bad(format!("Syncs-Format `{other}`"))),
    }
}

/// The records of a message whose envelope is `env` (slices of `payload`,
/// no copy).
pub fn records(env: &Envelope, payload: Bytes) -> Result<Vec<Bytes>, EnvelopeError> {
    if env.prev.is_none() {
        return Ok(vec![payload]);
    }
    let mut body = payload;
    let (first, records) = peer::parse_batch(&mut body).map_err(|e| bad(e.to_string()))?;
    if !body.is_empty() {
        return Err(bad(format!("{} bytes after the records", body.len())));
    }
    if first != env.seq || records.len() != env.count as usize {
        return Err(bad(format!(
            "the body holds records {first} (+{}), the headers say {} (+{})",
            records.len(),
            env.seq,
            env.count
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_round_trips() {
        for (stream, seq, name) in [
            (0xab, 1, "web-01"),
            (u64::MAX - 1, u64::MAX, "p"),
            (0x0123_4567_89ab_cdef, 42, ""),
        ] {
            let h = encode(stream, seq, name);
            assert_eq!(
                decode(&h),
                Ok(Envelope {
                    stream,
                    seq,
                    count: 1,
                    prev: None,
                    name: name.to_owned()
                })
            );
        }
    }

    #[test]
    fn format_1_headers_are_the_documented_bytes() {
        let h = encode(0xab, 7, "web\n01");
        assert_eq!(header(&h, "Nats-Msg-Id"), Some("00000000000000ab:7"));
        assert_eq!(header(&h, "Syncs-Stream"), Some("00000000000000ab"));
        assert_eq!(header(&h, "Syncs-Seq"), Some("7"));
        assert_eq!(header(&h, "Syncs-Name"), Some("web_01"));
        assert_eq!(header(&h, "Syncs-Format"), None);
        assert_eq!(
            decode(&h).map(|e| e.name),
            Ok("web_01".to_owned()),
            "control characters become `_`"
        );
    }

    #[test]
    fn format_2_is_the_documented_bytes() {
        // docs/protocol.md's example.
        let recs = [Bytes::from_static(b"AAA"), Bytes::from_static(b"BC")];
        let (h, body) = encode_run(0x0123_4567_89ab_cdef, 1001, 1000, &recs, "web-01");
        assert_eq!(
            header(&h, "Nats-Msg-Id"),
            Some("0123456789abcdef:1001-1002")
        );
        assert_eq!(header(&h, "Syncs-Format"), Some("2"));
        assert_eq!(header(&h, "Syncs-Stream"), Some("ffffffffffffffff"));
        assert_eq!(header(&h, "Syncs-Source"), Some("0123456789abcdef"));
        assert_eq!(header(&h, "Syncs-Seq"), Some("1001"));
        assert_eq!(header(&h, "Syncs-Count"), Some("2"));
        assert_eq!(header(&h, "Syncs-Prev"), Some("1000"));
        assert_eq!(header(&h, "Syncs-Name"), Some("web-01"));
        assert_eq!(
            &body[..],
            b"\xe9\x03\0\0\0\0\0\0\x02\0\0\0\x03\0\0\0AAA\x02\0\0\0BC"
        );
        let env = decode(&h).expect("valid");
        assert_eq!(
            env,
            Envelope {
                stream: 0x0123_4567_89ab_cdef,
                seq: 1001,
                count: 2,
                prev: Some(1000),
                name: "web-01".into()
            }
        );
        assert_eq!(env.last(), 1002);
        assert_eq!(records(&env, body), Ok(recs.to_vec()));
    }

    fn with(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        h
    }

    fn is_bad(h: &HeaderMap) -> bool {
        matches!(decode(h), Err(EnvelopeError::Bad(_)))
    }

    #[test]
    fn missing_or_bad_identity_is_refused() {
        assert!(is_bad(&HeaderMap::new()));
        assert!(is_bad(&with(&[(HDR_SEQ, "3")])), "no stream");
        assert!(is_bad(&with(&[(HDR_STREAM, "ab")])), "no seq");
        assert!(is_bad(&with(&[(HDR_STREAM, "zz"), (HDR_SEQ, "3")])));
        assert!(is_bad(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "three")])));
        assert!(is_bad(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "-1")])));
        assert!(is_bad(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "0")])));
        assert!(
            is_bad(&with(&[(HDR_STREAM, "ffffffffffffffff"), (HDR_SEQ, "3")])),
            "the fence without a format"
        );
    }

    #[test]
    fn bad_format_2_is_refused() {
        let good = [
            (HDR_FORMAT, "2"),
            (HDR_STREAM, "ffffffffffffffff"),
            (HDR_SOURCE, "ab"),
            (HDR_SEQ, "10"),
            (HDR_COUNT, "2"),
            (HDR_PREV, "9"),
        ];
        assert!(decode(&with(&good)).is_ok());
        for (k, v) in [
            (HDR_SOURCE, "ffffffffffffffff"),
            (HDR_SOURCE, "xyz"),
            (HDR_COUNT, "0"),
            (HDR_COUNT, "4294967296"),
            (HDR_PREV, "10"),
            (HDR_PREV, "11"),
            (HDR_SEQ, "18446744073709551615"),
            (HDR_FORMAT, "0"),
            (HDR_FORMAT, "two"),
        ] {
            let mut h = with(&good);
            h.insert(k, v);
            assert!(is_bad(&h), "{k}: {v}");
        }
        let mut h = with(&good);
        h.insert(HDR_FORMAT, "3");
        assert_eq!(decode(&h), Err(EnvelopeError::Newer("3".into())));
    }

    #[test]
    fn a_body_that_does_not_match_its_headers_is_refused() {
        let records_of = |seq, count| Envelope {
            stream: 1,
            seq,
            count,
            prev: Some(0),
            name: String::new(),
        };
        let (_, body) = encode_run(1, 5, 0, &[Bytes::from_static(b"x")], "");
        assert!(records(&records_of(5, 1), body.clone()).is_ok());
        assert!(records(&records_of(6, 1), body.clone()).is_err(), "first");
        assert!(records(&records_of(5, 2), body.clone()).is_err(), "count");
        let mut long = BytesMut::from(&body[..]);
        long.extend_from_slice(b"!");
        assert!(
            records(&records_of(5, 1), long.freeze()).is_err(),
            "trailing"
        );
        assert!(
            records(&records_of(5, 1), body.slice(..body.len() - 1)).is_err(),
            "short"
        );
    }

    #[test]
    fn a_missing_name_is_empty() {
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "3")])),
            Ok(Envelope {
                stream: 0xab,
                seq: 3,
                count: 1,
                prev: None,
                name: String::new()
            })
        );
    }
}
