//! The proxy ↔ server protocol over TCP.
//!
//! Every message is `[u32 length, LE][u8 kind][body]`; the length counts the
//! kind byte and the body. All integers are little-endian.
//!
//! | kind | name    | body                                                           | from   |
//! |------|---------|----------------------------------------------------------------|--------|
//! | 1    | HELLO   | `"SYNCS"`, u16 version, u64 stream id, u16 name length, name   | proxy  |
//! | 2    | WELCOME | u16 version, u64 last applied sequence of that stream (0: none)| server |
//! | 3    | BATCH   | u64 first sequence, u32 count, count × (u32 length, payload)   | proxy  |
//! | 4    | ACK     | u64 sequence: every record up to it is applied                 | server |
//! | 5    | REFUSE  | u16 code, UTF-8 reason; the sender closes after it             | either |
//! | 6    | AUTH    | the shared token (0..=4096 bytes; empty: none)                 | proxy  |
//! | 7    | TAKEN   | u64 sequence: every record up to it is in the server's hands   | server |
//! | 8    | REWIND  | u64 sequence: send again every record from it on               | server |
//!
//! A version 2 proxy sends AUTH right after HELLO, before WELCOME; a
//! version 1 HELLO has no AUTH after it (and so no token). TAKEN and REWIND
//! (version 3) let each target of a stream advance on its own: ACK is the
//! lowest position over the stream's targets, TAKEN moves the proxy's send
//! window, REWIND asks again for records a lagging target's server-side
//! backlog had no room for. They are sent only to version 3 proxies.
//!
//! Sequences are per stream, start at 1 and have no gaps; a BATCH's records
//! are numbered `first ..= first + count - 1`.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::client::RESERVE_AHEAD;

/// The protocol version this build speaks: 2 adds AUTH after HELLO, 3
/// adds TAKEN and REWIND.
pub const VERSION: u16 = 3;
/// The first version with TAKEN and REWIND.
pub const LANES_VERSION: u16 = 3;
/// The oldest version a server still accepts (no AUTH, so no token).
pub const MIN_VERSION: u16 = 1;
/// The longest token AUTH may carry.
pub const MAX_TOKEN: usize = 4096;
/// The magic at the start of HELLO.
pub const MAGIC: &[u8; 5] = b"SYNCS";
/// The server's default port.
pub const DEFAULT_PORT: u16 = 7379;

/// REFUSE codes.
pub mod refuse {
    pub const BAD_VERSION: u16 = 1;
    pub const BAD_MESSAGE: u16 = 2;
    pub const SEQUENCE_GAP: u16 = 3;
    pub const SHUTTING_DOWN: u16 = 4;
    /// The server needs a token and the proxy sent none.
    pub const TOKEN_REQUIRED: u16 = 5;
    /// The token does not match the server's.
    pub const BAD_TOKEN: u16 = 6;
    /// The server speaks TLS only; sent in plaintext to a plaintext peer.
    pub const TLS_REQUIRED: u16 = 7;
}

/// A shared secret on the wire. Its `Debug` form never shows the bytes,
/// so a logged message cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Bytes);

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello {
        version: u16,
        stream: u64,
        name: String,
    },
    Welcome {
        version: u16,
        last_applied: u64,
    },
    Batch {
        first_seq: u64,
        records: Vec<Bytes>,
    },
    Ack {
        seq: u64,
    },
    Refuse {
        code: u16,
        reason: String,
    },
    Auth {
        token: Secret,
    },
    /// Every record up to `seq` is in the server's hands (applied, queued
    /// for a target, or to be asked again with REWIND): it no longer counts
    /// against the proxy's window. Not a licence to delete it: ACK is.
    Taken {
        seq: u64,
    },
    /// Send again every record from `seq` on, in order.
    Rewind {
        seq: u64,
    },
}

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer message of {len} bytes exceeds the {max} byte limit")]
    TooLarge { len: u64, max: u64 },
    #[error("malformed peer message: {0}")]
    Malformed(String),
    #[error("unknown peer message kind {0}")]
    UnknownKind(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Message`]s; refuses messages above `max_len`.
#[derive(Debug, Clone)]
pub struct PeerCodec {
    max_len: u64,
}

impl PeerCodec {
    pub fn new(max_len: u64) -> Self {
        Self { max_len }
    }

    /// Changes the limit, e.g. from the small one before authentication to
    /// the configured one after.
    pub fn set_max_len(&mut self, max_len: u64) {
        self.max_len = max_len;
    }
}

impl Decoder for PeerCodec {
    type Item = Message;
    type Error = PeerError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, PeerError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u64::from(u32::from_le_bytes([src[0], src[1], src[2], src[3]]));
        if len > self.max_len {
            return Err(PeerError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if len == 0 {
            return Err(PeerError::Malformed("zero-length message".into()));
        }
        let total = 4 + len as usize;
        if src.len() < total {
            // Never more than a read's worth ahead of what arrived.
            src.reserve((total - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(4);
        let mut body = src.split_to(len as usize).freeze();
        let kind = body.get_u8();
        parse(kind, &mut body).map(Some)
    }
}

fn parse(kind: u8, b: &mut Bytes) -> Result<Message, PeerError> {
    let msg = match kind {
        1 => {
            let magic = take(b, MAGIC.len())?;
            if &magic[..] != MAGIC {
                return Err(PeerError::Malformed("HELLO without the SYNCS magic".into()));
            }
            let version = u16_le(b)?;
            let stream = u64_le(b)?;
            let name_len = u16_le(b)? as usize;
            let name = utf8(take(b, name_len)?)?;
            Message::Hello {
                version,
                stream,
                name,
            }
        }
        2 => Message::Welcome {
            version: u16_le(b)?,
            last_applied: u64_le(b)?,
        },
        3 => {
            let (first_seq, records) = parse_batch(b)?;
            Message::Batch { first_seq, records }
        }
        4 => Message::Ack { seq: u64_le(b)? },
        7 => Message::Taken { seq: u64_le(b)? },
        8 => Message::Rewind { seq: u64_le(b)? },
        5 => Message::Refuse {
            code: u16_le(b)?,
            reason: utf8(b.split_to(b.remaining()))?,
        },
        6 => {
            if b.remaining() > MAX_TOKEN {
                return Err(PeerError::Malformed(format!(
                    "AUTH token of {} bytes (at most {MAX_TOKEN})",
                    b.remaining()
                )));
            }
            Message::Auth {
                token: Secret(b.split_to(b.remaining())),
            }
        }
        other => return Err(PeerError::UnknownKind(other)),
    };
    if b.has_remaining() {
        return Err(PeerError::Malformed(format!(
            "{} trailing bytes after a kind {kind} message",
            b.remaining()
        )));
    }
    Ok(msg)
}

/// Reads a BATCH body, `u64 first | u32 count | count × (u32 length,
/// payload)`, from the front of `b`; the records are slices of `b` (no
/// copy). Also the body of a NATS message of format 2 (docs/protocol.md).
pub fn parse_batch(b: &mut Bytes) -> Result<(u64, Vec<Bytes>), PeerError> {
    let first_seq = u64_le(b)?;
    let count = u32_le(b)? as usize;
    // Sequences start at 1, and the last one must be a sequence too: a
    // first sequence 0 would put the server's positions at `u64::MAX`
    // (every later record then looks done).
    if first_seq == 0 {
        return Err(PeerError::Malformed("BATCH from sequence 0".into()));
    }
    if first_seq.checked_add(count as u64).is_none() {
        return Err(PeerError::Malformed(format!(
            "BATCH of {count} records from sequence {first_seq} overflows the sequences"
        )));
    }
    // Each record takes at least its 4-byte length: bound the
    // allocation by the bytes really present.
    if count > b.remaining() / 4 {
        return Err(PeerError::Malformed(format!(
            "BATCH claims {count} records in {} bytes",
            b.remaining()
        )));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32_le(b)? as usize;
        records.push(take(b, len)?);
    }
    Ok((first_seq, records))
}

/// Writes a BATCH body ([`parse_batch`] reads it back).
pub fn put_batch(dst: &mut BytesMut, first_seq: u64, records: &[Bytes]) {
    dst.reserve(12 + records.iter().map(|r| 4 + r.len()).sum::<usize>());
    dst.put_u64_le(first_seq);
    dst.put_u32_le(records.len() as u32);
    for r in records {
        dst.put_u32_le(r.len() as u32);
        dst.put_slice(r);
    }
}

fn take(b: &mut Bytes, n: usize) -> Result<Bytes, PeerError> {
    need(b, n)?;
    Ok(b.split_to(n))
}

/// Fails unless `n` bytes are left (the integer readers below then read
/// in place: a `take` per integer cost a reference count each).
fn need(b: &Bytes, n: usize) -> Result<(), PeerError> {
    if b.remaining() < n {
        return Err(PeerError::Malformed(format!(
            "needs {n} bytes, {} left",
            b.remaining()
        )));
    }
    Ok(())
}

fn u16_le(b: &mut Bytes) -> Result<u16, PeerError> {
    need(b, 2)?;
    Ok(b.get_u16_le())
}

fn u32_le(b: &mut Bytes) -> Result<u32, PeerError> {
    need(b, 4)?;
    Ok(b.get_u32_le())
}

fn u64_le(b: &mut Bytes) -> Result<u64, PeerError> {
    need(b, 8)?;
    Ok(b.get_u64_le())
}

fn utf8(b: Bytes) -> Result<String, PeerError> {
    String::from_utf8(b.to_vec()).map_err(|_| PeerError::Malformed("text is not UTF-8".into()))
}

impl Encoder<Message> for PeerCodec {
    type Error = PeerError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), PeerError> {
        let start = dst.len();
        dst.put_u32_le(0);
        match msg {
            Message::Hello {
                version,
                stream,
                name,
            } => {
                dst.put_u8(1);
                dst.put_slice(MAGIC);
                dst.put_u16_le(version);
                dst.put_u64_le(stream);
                let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
                dst.put_u16_le(name.len() as u16);
                dst.put_slice(name);
            }
            Message::Welcome {
                version,
                last_applied,
            } => {
                dst.put_u8(2);
                dst.put_u16_le(version);
                dst.put_u64_le(last_applied);
            }
            Message::Batch { first_seq, records } => {
                dst.put_u8(3);
                put_batch(dst, first_seq, &records);
            }
            Message::Ack { seq } => {
                dst.put_u8(4);
                dst.put_u64_le(seq);
            }
            Message::Refuse { code, reason } => {
                dst.put_u8(5);
                dst.put_u16_le(code);
                dst.put_slice(reason.as_bytes());
            }
            Message::Auth { token } => {
                dst.put_u8(6);
                dst.put_slice(token.as_bytes());
            }
            Message::Taken { seq } => {
                dst.put_u8(7);
                dst.put_u64_le(seq);
            }
            Message::Rewind { seq } => {
                dst.put_u8(8);
                dst.put_u64_le(seq);
            }
        }
        let len = (dst.len() - start - 4) as u64;
        if len > self.max_len {
            dst.truncate(start);
            return Err(PeerError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Message) {
        let mut codec = PeerCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        codec.encode(msg.clone(), &mut buf).expect("encode");
        let got = codec.decode(&mut buf).expect("decode").expect("complete");
        assert_eq!(got, msg);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello {
            version: VERSION,
            stream: 42,
            name: "web-1".into(),
        });
        round_trip(Message::Welcome {
            version: VERSION,
            last_applied: 7,
        });
        round_trip(Message::Batch {
            first_seq: 8,
            records: vec![
                Bytes::from_static(b"6379,0\x01*1\r\n$4\r\nPING\r\n"),
                Bytes::new(),
            ],
        });
        round_trip(Message::Ack { seq: 9 });
        round_trip(Message::Taken { seq: 10 });
        round_trip(Message::Rewind { seq: 3 });
        round_trip(Message::Refuse {
            code: refuse::BAD_VERSION,
            reason: "want 1".into(),
        });
        round_trip(Message::Auth {
            token: Secret(Bytes::from_static(b"s3cret-token-0123456789")),
        });
        round_trip(Message::Auth {
            token: Secret::default(),
        });
    }

    #[test]
    fn auth_never_shows_its_token_and_is_bounded() {
        let msg = Message::Auth {
            token: Secret(Bytes::from_static(b"hunter2-hunter2")),
        };
        let shown = format!("{msg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("15 bytes"), "{shown}");

        let mut codec = PeerCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.put_u32_le(1 + MAX_TOKEN as u32 + 1);
        buf.put_u8(6);
        buf.put_slice(&vec![b'x'; MAX_TOKEN + 1]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(PeerError::Malformed(_))
        ));
    }

    #[test]
    fn a_batch_must_start_at_a_sequence_and_end_at_one() {
        for (first, count) in [(0u64, 1u32), (0, 0), (u64::MAX, 1), (u64::MAX - 1, 2)] {
            let mut body = BytesMut::new();
            put_batch(&mut body, first, &vec![Bytes::new(); count as usize]);
            let mut buf = BytesMut::new();
            buf.put_u32_le(1 + body.len() as u32);
            buf.put_u8(3);
            buf.put_slice(&body);
            let got = PeerCodec::new(1 << 20).decode(&mut buf);
            assert!(
                matches!(&got, Err(PeerError::Malformed(m)) if m.contains("sequence")),
                "first {first}, count {count}: {got:?}"
            );
        }
    }

    #[test]
    fn forged_counts_and_lengths_are_refused() {
        let mut codec = PeerCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.put_u32_le(13);
        buf.put_u8(3);
        buf.put_u64_le(1);
        buf.put_u32_le(u32::MAX);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(PeerError::Malformed(_))
        ));

        let mut buf = BytesMut::new();
        buf.put_u32_le(u32::MAX);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(PeerError::TooLarge { .. })
        ));
    }
}
