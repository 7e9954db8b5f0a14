//! Frames as the proxy expects them, built with the engine's encoders and
//! checked with the engine's decoder before they leave the process.
//!
//! A [`Frame`] can only be obtained through a constructor that checked it
//! with the engine ([`check_payload`], which accepts exactly what
//! [`decode_payload`] does; a Redis frame the engine's encoder wrote from
//! arguments, with `check_command_names`: only a refused name can be wrong
//! there), so a frame that is sent is a frame the server will accept: a
//! bad hand-built RESP expression or write description is reported to the
//! caller that made it, not dropped silently far away.

use std::marker::PhantomData;

use bson::{Bson, Document, RawDocument};
use bytes::{Bytes, BytesMut};
use syncs_engine::op::{MongoUpdate, MongoWrite, Op};
use syncs_engine::wire::client::{
    check_command_names, check_payload, decode_payload, mongo_frame, put_redis_payload,
    redis_header_len, FrameDecoder, FrameError, Framed, LEN_PREFIX,
};
use syncs_engine::wire::mongo::encode_write;
use syncs_engine::wire::resp::{encode_command, encoded_len};

use crate::error::ClientError;

/// The most a length prefix can say.
const PREFIX_MAX: u64 = u32::MAX as u64;

/// One whole, validated frame: the 4-byte little-endian length prefix and
/// the payload, contiguous, ready for a single write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// A plain `Vec`: turning it into `Bytes` costs an allocation when its
    /// capacity is above its length, and frames are rarely cloned.
    wire: Vec<u8>,
}

impl Frame {
    /// A Redis frame: one command, or several forming one transaction.
    ///
    /// Each command is its arguments, name first, binary-safe.
    pub fn redis<C, A>(port: u16, db: u32, commands: &[C]) -> Result<Frame, ClientError>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        Frame::encoded(&RedisFrame::new(port, db, commands)?)
    }

    /// The frame `source` encodes, checked.
    pub fn encoded<E: Encode + ?Sized>(source: &E) -> Result<Frame, ClientError> {
        let mut wire = Vec::with_capacity(source.wire_len());
        source.encode_checked(&mut wire)?;
        Ok(Frame { wire })
    }

    /// A Mongo frame from an encoded write description (see
    /// `syncs_engine::wire::mongo`); the description is decoded to check it.
    pub fn mongo(db: &str, coll: &str, write_bson: &[u8]) -> Result<Frame, ClientError> {
        let payload_len = 3 + db.len() as u64 + coll.len() as u64 + write_bson.len() as u64;
        if payload_len > PREFIX_MAX {
            return Err(ClientError::TooLarge {
                len: payload_len,
                max: PREFIX_MAX,
            });
        }
        Frame::checked(mongo_frame(db, coll, write_bson)?)
    }

    /// A Mongo frame from a write, encoded with the engine's `encode_write`.
    pub fn mongo_write(db: &str, coll: &str, write: &MongoWrite) -> Result<Frame, ClientError> {
        Frame::mongo(db, coll, &encode_write(write))
    }

    /// A frame from a payload made elsewhere (the C library's raw
    /// `intc_send`): the prefix is added and the payload checked.
    pub fn from_payload(payload: &[u8]) -> Result<Frame, ClientError> {
        let len = payload.len() as u64;
        if len > PREFIX_MAX {
            return Err(ClientError::TooLarge {
                len,
                max: PREFIX_MAX,
            });
        }
        let mut wire = Vec::with_capacity(LEN_PREFIX + payload.len());
        wire.extend_from_slice(&(len as u32).to_le_bytes());
        wire.extend_from_slice(payload);
        Frame::checked(wire)
    }

    /// Checks a complete wire frame (prefix included) with the engine's
    /// `check_payload`, which accepts exactly what `decode_payload` does.
    fn checked(wire: Vec<u8>) -> Result<Frame, ClientError> {
        check_payload(&wire[LEN_PREFIX..])?;
        Ok(Frame { wire })
    }

    /// The bytes to write: prefix then payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.wire
    }

    /// The payload, without its prefix.
    pub fn payload(&self) -> &[u8] {
        &self.wire[LEN_PREFIX..]
    }

    /// The payload length, as the prefix says.
    pub fn payload_len(&self) -> usize {
        self.wire.len() - LEN_PREFIX
    }

    /// Decodes the payload again, as the server will.
    pub fn decode(&self) -> Result<Op, FrameError> {
        decode_payload(&Bytes::copy_from_slice(self.payload()))
    }
}

/// Something that encodes one whole frame (prefix included) and checks it
/// with the engine's decoder where it was written: a connection with
/// buffering on encodes it straight into its buffer ([`Frame`] itself is
/// one, copied as it is).
pub trait Encode {
    /// The exact bytes [`Self::encode_checked`] appends.
    fn wire_len(&self) -> usize;

    /// Appends the frame to `out` and checks it there (as [`Frame`]'s
    /// constructors do). On an error `out` may end with part of the frame:
    /// the caller cuts it off.
    fn encode_checked(&self, out: &mut Vec<u8>) -> Result<(), ClientError>;
}

impl Encode for Frame {
    fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// Checked when it was made: only copied.
    fn encode_checked(&self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        out.extend_from_slice(&self.wire);
        Ok(())
    }
}

/// A Redis frame whose arguments are checked and whose size is known but
/// which is not encoded yet: [`Frame::encoded`] makes it a [`Frame`], and a
/// buffering [`crate::Connection::send_encoded`] encodes it straight into
/// its buffer (no allocation, no copy). The same frames and the same errors
/// as [`Frame::redis`].
#[derive(Debug)]
pub struct RedisFrame<'a, C, A> {
    port: u16,
    db: u32,
    commands: &'a [C],
    /// Payload bytes (at most `u32::MAX`).
    payload_len: u32,
    /// The argument type `C` holds.
    args: PhantomData<fn(&A)>,
}

impl<'a, C, A> RedisFrame<'a, C, A>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    /// Checks what can be checked before encoding: at least one command,
    /// each with its name, the payload within what a length prefix can
    /// say. Refused commands (MULTI, SELECT...) are found when it is
    /// encoded.
    pub fn new(port: u16, db: u32, commands: &'a [C]) -> Result<Self, ClientError> {
        let mut payload_len = redis_header_len(port, db) as u64;
        for command in commands {
            let args = command.as_ref();
            if args.is_empty() {
                return Err(empty_command());
            }
            payload_len += encoded_len(args) as u64;
            if payload_len > PREFIX_MAX {
                return Err(ClientError::TooLarge {
                    len: payload_len,
                    max: PREFIX_MAX,
                });
            }
        }
        if commands.is_empty() {
            return Err(no_command());
        }
        Ok(RedisFrame {
            port,
            db,
            commands,
            // At most PREFIX_MAX, checked above.
            payload_len: payload_len as u32,
            args: PhantomData,
        })
    }
}

impl<C, A> Encode for RedisFrame<'_, C, A>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    fn wire_len(&self) -> usize {
        LEN_PREFIX + self.payload_len as usize
    }

    fn encode_checked(&self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        out.reserve(self.wire_len());
        let start = out.len();
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        put_redis_payload(out, self.port, self.db, self.commands);
        debug_assert_eq!(out.len() - start, self.wire_len());
        // The engine's encoder wrote it: only a refused name can be wrong,
        // and that is all `check_payload` would find.
        check_command_names(self.commands)?;
        debug_assert_eq!(
            check_payload(&out[start + LEN_PREFIX..]).err(),
            check_command_names(self.commands).err()
        );
        Ok(())
    }
}

fn empty_command() -> ClientError {
    ClientError::InvalidArgument("a Redis command needs at least its name".into())
}

fn no_command() -> ClientError {
    ClientError::InvalidArgument("a Redis frame needs at least one command".into())
}

/// Builds a Redis frame one command at a time (the C transaction builder).
#[derive(Clone, Debug)]
pub struct RedisFrameBuilder {
    /// Prefix placeholder, header, then the commands encoded so far.
    wire: Vec<u8>,
    commands: usize,
}

impl RedisFrameBuilder {
    /// An empty frame for `port` and `db`.
    pub fn new(port: u16, db: u32) -> Self {
        // Prefix, "65535,4294967295", 0x01, and room for a small command.
        let mut wire = Vec::with_capacity(64);
        wire.extend_from_slice(&[0u8; LEN_PREFIX]);
        put_redis_payload(&mut wire, port, db, &[] as &[&[&[u8]]]);
        RedisFrameBuilder { wire, commands: 0 }
    }

    /// Appends one command (arguments, name first).
    pub fn push<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        if args.is_empty() {
            return Err(empty_command());
        }
        let added = encoded_len(args);
        let payload_len = (self.wire.len() - LEN_PREFIX) as u64 + added as u64;
        if payload_len > PREFIX_MAX {
            return Err(ClientError::TooLarge {
                len: payload_len,
                max: PREFIX_MAX,
            });
        }
        self.wire.reserve(added);
        encode_command(&mut self.wire, args);
        self.commands += 1;
        Ok(())
    }

    /// Commands pushed so far.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// True before the first command.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// The frame, leaving the builder as it is (it can be sent again).
    pub fn build(&self) -> Result<Frame, ClientError> {
        self.clone().into_frame()
    }

    /// The frame; one command is a plain command, several a transaction.
    pub fn into_frame(mut self) -> Result<Frame, ClientError> {
        if self.commands == 0 {
            return Err(no_command());
        }
        let len = (self.wire.len() - LEN_PREFIX) as u32;
        self.wire[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
        Frame::checked(self.wire)
    }
}

/// Cuts a raw byte stream (what C callers hand to `intc_send`, in pieces of
/// any size) into frames, with the engine's [`FrameDecoder`].
///
/// A length prefix above the limit yields [`ClientError::TooLarge`] once,
/// and the payload bytes that follow it are discarded as they arrive, so the
/// stream stays in step.
#[derive(Debug)]
pub struct FrameAssembler {
    decoder: FrameDecoder,
    buf: BytesMut,
    max_frame: u32,
}

impl FrameAssembler {
    /// An assembler that refuses payloads above `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        FrameAssembler {
            decoder: FrameDecoder::new(max_frame),
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Adds stream bytes; take the frames out with [`Self::next_frame`].
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, a refused one, or `None` when more bytes are
    /// needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, ClientError>> {
        match self.decoder.decode(&mut self.buf)? {
            Framed::Frame(payload) => Some(Frame::from_payload(&payload)),
            Framed::Oversize { len } => Some(Err(ClientError::TooLarge {
                len: u64::from(len),
                max: u64::from(self.max_frame),
            })),
        }
    }

    /// True between frames (no partial frame held, nothing being skipped).
    pub fn is_idle(&self) -> bool {
        self.decoder.is_idle(&self.buf)
    }
}

/// Reads one BSON document given by a caller; `what` names it in errors
/// (`"filter"`, `"documents[3]"`, ...).
pub fn bson_document(what: &str, bytes: &[u8]) -> Result<Document, ClientError> {
    let bad = |detail: String| ClientError::Bson {
        what: what.to_owned(),
        detail,
    };
    if bytes.len() < 5 {
        return Err(bad(format!(
            "{} bytes is shorter than the smallest document (5)",
            bytes.len()
        )));
    }
    let declared = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if u64::from(declared) != bytes.len() as u64 {
        return Err(bad(format!(
            "the document says it is {declared} bytes long but {} bytes were given",
            bytes.len()
        )));
    }
    let raw = RawDocument::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    Document::try_from(raw).map_err(|e| bad(e.to_string()))
}

/// Reads the update part of an update write: a document of update operators,
/// or an aggregation pipeline given as a BSON array (a document whose keys
/// are `"0"`, `"1"`, ... in order and whose values are documents) — the
/// rule libmongoc applies to the `update` of `mongoc_collection_update_one`.
pub fn bson_update(bytes: &[u8]) -> Result<MongoUpdate, ClientError> {
    let doc = bson_document("update", bytes)?;
    let is_pipeline = !doc.is_empty()
        && doc
            .iter()
            .enumerate()
            .all(|(i, (k, v))| *k == i.to_string() && matches!(v, Bson::Document(_)));
    if !is_pipeline {
        return Ok(MongoUpdate::Document(doc));
    }
    let stages = doc
        .into_iter()
        .filter_map(|(_, v)| match v {
            Bson::Document(d) => Some(d),
            _ => None,
        })
        .collect();
    Ok(MongoUpdate::Pipeline(stages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    const SEED: &[u8] = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";

    fn seed_wire() -> Vec<u8> {
        let mut wire = (SEED.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(SEED);
        wire
    }

    #[test]
    fn redis_frame_is_the_seed_frame() {
        let frame = Frame::redis(6379, 1, &[["set", "a", "b"]]).expect("frame");
        assert_eq!(frame.as_bytes(), seed_wire());
        assert_eq!(frame.payload(), SEED);
        assert_eq!(frame.payload_len(), SEED.len());
    }

    #[test]
    fn builder_makes_transactions_and_can_be_reused() {
        let mut b = RedisFrameBuilder::new(6379, 2);
        assert!(b.is_empty());
        b.push(&["set", "cool", "hello0"]).expect("push");
        b.push(&[&b"set"[..], b"bin", b"\x00\r\n\xff"])
            .expect("push");
        assert_eq!(b.len(), 2);
        let first = b.build().expect("frame");
        assert_eq!(first, b.build().expect("again"));
        let Ok(Op::Redis(op)) = first.decode() else {
            panic!("not redis")
        };
        assert!(op.is_transaction());
        assert_eq!(op.commands[1].arg(2), &b"\x00\r\n\xff"[..]);
    }

    #[test]
    fn empty_and_refused_commands_are_errors() {
        let err = RedisFrameBuilder::new(1, 0)
            .into_frame()
            .expect_err("should fail");
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
        let err = Frame::redis(1, 0, &[[""; 0]]).expect_err("should fail");
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
        let err =
            Frame::redis(1, 0, &[vec!["multi"], vec!["set", "a", "b"]]).expect_err("should fail");
        assert!(err.to_string().contains("MULTI"), "{err}");
        assert!(err.is_invalid());
    }

    #[test]
    fn mongo_frames_are_checked() {
        let write = MongoWrite::DeleteMany {
            filter: doc! { "key": "value" },
        };
        let frame = Frame::mongo_write("mongo_db_name", "mongo_col_name", &write).expect("frame");
        let Ok(Op::Mongo(op)) = frame.decode() else {
            panic!("not mongo")
        };
        assert_eq!(op.write, write);

        let unknown_field = rawdoc! { "op": "delete_many", "filter": {}, "upsret": true };
        let err = Frame::mongo("db", "c", unknown_field.as_bytes()).expect_err("should fail");
        assert!(err.to_string().contains("upsret"), "{err}");
        assert!(err.is_bson());
        let err = Frame::mongo("", "c", unknown_field.as_bytes()).expect_err("should fail");
        assert!(
            matches!(err, ClientError::Frame(FrameError::MongoHeader(_))),
            "{err}"
        );
    }

    #[test]
    fn raw_payloads_are_checked() {
        assert_eq!(
            Frame::from_payload(SEED).expect("seed").as_bytes(),
            seed_wire()
        );
        let err = Frame::from_payload(b"6379,1\x01*3\r\n$3\r\nset\r\n").expect_err("should fail");
        assert!(
            matches!(err, ClientError::Frame(FrameError::Resp(_))),
            "{err}"
        );
        let err = Frame::from_payload(b"").expect_err("should fail");
        assert!(
            matches!(err, ClientError::Frame(FrameError::Empty)),
            "{err}"
        );
    }

    #[test]
    fn assembler_joins_split_writes_and_skips_oversize() {
        let mut asm = FrameAssembler::new(64);
        let wire = seed_wire();
        // The seed's two writes: the prefix, then the payload.
        asm.push(&wire[..4]);
        assert!(asm.next_frame().is_none());
        assert!(!asm.is_idle());
        asm.push(&wire[4..]);
        let frame = asm.next_frame().expect("complete").expect("valid");
        assert_eq!(frame.as_bytes(), wire);
        assert!(asm.next_frame().is_none());
        assert!(asm.is_idle());

        // An oversized prefix whose payload arrives later in pieces, then
        // two good frames in one write.
        asm.push(&100u32.to_le_bytes());
        asm.push(&[b'x'; 30]);
        let err = asm.next_frame().expect("refused").expect_err("should fail");
        assert!(
            matches!(err, ClientError::TooLarge { len: 100, max: 64 }),
            "{err}"
        );
        assert!(asm.next_frame().is_none());
        let mut rest = vec![b'x'; 70];
        rest.extend_from_slice(&wire);
        rest.extend_from_slice(&wire);
        asm.push(&rest);
        for _ in 0..2 {
            assert_eq!(
                asm.next_frame().expect("frame").expect("valid").as_bytes(),
                wire
            );
        }
        assert!(asm.next_frame().is_none());
        assert!(asm.is_idle());
    }

    #[test]
    fn bson_parts_are_validated_with_context() {
        let ok = rawdoc! { "a": 1 };
        assert_eq!(
            bson_document("filter", ok.as_bytes()).expect("ok"),
            doc! { "a": 1 }
        );
        let err = bson_document("filter", b"\x05\0\0").expect_err("should fail");
        assert!(err.to_string().contains("bad BSON in filter"), "{err}");
        let mut long = ok.as_bytes().to_vec();
        long.push(0);
        let err = bson_document("documents[2]", &long).expect_err("should fail");
        assert!(err.to_string().contains("documents[2]"), "{err}");
        // Right length, broken element: a string whose length runs past the end.
        let broken = b"\x0e\0\0\0\x02a\0\x50\0\0\0xy\0\0";
        assert!(bson_document("document", broken).is_err());
    }

    #[test]
    fn update_pipelines_are_recognised() {
        let ops = rawdoc! { "$set": { "a": 1 } };
        assert_eq!(
            bson_update(ops.as_bytes()).expect("doc"),
            MongoUpdate::Document(doc! { "$set": { "a": 1 } })
        );
        let pipeline = rawdoc! { "0": { "$set": { "a": 1 } }, "1": { "$unset": "b" } };
        assert_eq!(
            bson_update(pipeline.as_bytes()).expect("pipeline"),
            MongoUpdate::Pipeline(vec![doc! { "$set": { "a": 1 } }, doc! { "$unset": "b" }])
        );
        let not_in_order = rawdoc! { "1": { "$set": { "a": 1 } } };
        assert!(matches!(
            bson_update(not_in_order.as_bytes()),
            Ok(MongoUpdate::Document(_))
        ));
    }
}
