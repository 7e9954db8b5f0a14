//! The envelope of a record on NATS: the headers the proxy puts on each
//! message and the server reads back (docs/protocol.md, section 4). One
//! codec for both ends, so the two cannot drift apart; the subject is
//! [`super::subject`].
//!
//! It lives in the daemons, not in the engine's `wire/`, because
//! [`HeaderMap`] is async-nats' type and the engine links no NATS client.

use async_nats::HeaderMap;

/// Header: broker-side dedupe id, `<stream id hex>:<seq>`.
pub const HDR_MSG_ID: &str = "Nats-Msg-Id";
/// Header: the source's stream id, 16 hex digits.
pub const HDR_STREAM: &str = "Syncs-Stream";
/// Header: the record's sequence in its stream, decimal.
pub const HDR_SEQ: &str = "Syncs-Seq";
/// Header: the proxy's name (logs, metrics, dead letters).
pub const HDR_NAME: &str = "Syncs-Name";

/// What a message says about the record it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The source's stream id.
    pub stream: u64,
    /// The record's sequence in that stream (never 0).
    pub seq: u64,
    /// The proxy's name; empty when the message has none.
    pub name: String,
}

/// The headers of the message carrying record `seq` of `stream`, published
/// by the proxy called `name`. Control characters in `name` become `_`: a
/// header value cannot hold a line break, and the name is only a label.
pub fn encode(stream: u64, seq: u64, name: &str) -> HeaderMap {
    let stream = format!("{stream:016x}");
    let mut h = HeaderMap::new();
    h.insert(HDR_MSG_ID, format!("{stream}:{seq}").as_str());
    h.insert(HDR_STREAM, stream.as_str());
    h.insert(HDR_SEQ, seq.to_string().as_str());
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    h.insert(HDR_NAME, name.as_str());
    h
}

/// Reads the envelope back; `None` when `Syncs-Stream` or `Syncs-Seq` is
/// missing or not a number, or the sequence is 0 (the server refuses such a
/// message). A missing `Syncs-Name` is an empty name.
pub fn decode(h: &HeaderMap) -> Option<Envelope> {
    let stream = u64::from_str_radix(h.get(HDR_STREAM)?.as_str(), 16).ok()?;
    let seq: u64 = h.get(HDR_SEQ)?.as_str().parse().ok()?;
    let name = h
        .get(HDR_NAME)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    (seq > 0).then_some(Envelope { stream, seq, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.as_str())
    }

    #[test]
    fn round_trips() {
        for (stream, seq, name) in [
            (0xab, 1, "web-01"),
            (u64::MAX, u64::MAX, "p"),
            (0x0123_4567_89ab_cdef, 42, ""),
        ] {
            let h = encode(stream, seq, name);
            assert_eq!(
                decode(&h),
                Some(Envelope {
                    stream,
                    seq,
                    name: name.to_owned()
                })
            );
        }
    }

    #[test]
    fn headers_are_the_documented_bytes() {
        let h = encode(0xab, 7, "web\n01");
        assert_eq!(header(&h, "Nats-Msg-Id"), Some("00000000000000ab:7"));
        assert_eq!(header(&h, "Syncs-Stream"), Some("00000000000000ab"));
        assert_eq!(header(&h, "Syncs-Seq"), Some("7"));
        assert_eq!(header(&h, "Syncs-Name"), Some("web_01"));
        assert_eq!(
            decode(&h).map(|e| e.name),
            Some("web_01".to_owned()),
            "control characters become `_`"
        );
    }

    fn with(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn missing_or_bad_identity_is_refused() {
        assert_eq!(decode(&HeaderMap::new()), None);
        assert_eq!(decode(&with(&[(HDR_SEQ, "3")])), None, "no stream");
        assert_eq!(decode(&with(&[(HDR_STREAM, "ab")])), None, "no seq");
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "zz"), (HDR_SEQ, "3")])),
            None,
            "stream not hex"
        );
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "three")])),
            None,
            "seq not decimal"
        );
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "-1")])),
            None,
            "negative seq"
        );
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "0")])),
            None,
            "seq 0"
        );
    }

    #[test]
    fn a_missing_name_is_empty() {
        assert_eq!(
            decode(&with(&[(HDR_STREAM, "ab"), (HDR_SEQ, "3")])),
            Some(Envelope {
                stream: 0xab,
                seq: 3,
                name: String::new()
            })
        );
    }
}
