//! Property tests for every decoder that reads untrusted bytes: the client
//! frame and its RESP and BSON parts, the stream framer, the proxy ↔
//! server codec, and Redis' replies. None may panic, and none may allocate from a length field
//! more than the bytes present (the framer holds at most one frame).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use syncs_engine::op::Op;
use syncs_engine::wire::client::{
    check_command_names, check_payload, decode_payload, mongo_frame, redis_frame, FrameDecoder,
    Framed,
};
use syncs_engine::wire::mongo::decode_write;
use syncs_engine::wire::peer::{Message, PeerCodec};
use syncs_engine::wire::reply::{take_reply, Reply};
use syncs_engine::wire::resp::{encode_command, parse_commands};
use tokio_util::codec::{Decoder, Encoder};

fn args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..6)
}

/// A line a status or error reply can hold (no CR or LF).
fn line() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::from_static(b"OK")),
        Just(Bytes::from_static(b"QUEUED")),
        prop::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..12
        )
        .prop_map(Bytes::from),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        line().prop_map(Reply::Status),
        line().prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Int),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from))
            .prop_map(Reply::Bulk),
        Just(Reply::Array(None)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(|v| Reply::Array(Some(v)))
    })
}

/// RESP2, as Redis writes it.
fn encode_reply(out: &mut Vec<u8>, r: &Reply) {
    match r {
        Reply::Status(l) => out.extend_from_slice(&[b"+", &l[..], b"\r\n"].concat()),
        Reply::Error(l) => out.extend_from_slice(&[b"-", &l[..], b"\r\n"].concat()),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(b)) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(items)) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode_reply(out, item);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn payload_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload(&Bytes::from(bytes));
    }

    #[test]
    fn mutated_redis_frames_never_panic(cmds in prop::collection::vec(args(), 1..4), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut frame = redis_frame(6379, 1, &cmds);
        for (i, b) in flips {
            let at = i.index(frame.len() - 4) + 4;
            frame[at] = b;
        }
        let _ = decode_payload(&Bytes::copy_from_slice(&frame[4..]));
    }

    #[test]
    fn redis_frames_round_trip(port in any::<u16>(), db in any::<u32>(), cmds in prop::collection::vec(args(), 1..4)) {
        // Command names must not be ones a frame refuses (SELECT, MULTI…).
        let cmds: Vec<Vec<Vec<u8>>> = cmds.into_iter().map(|mut c| { c[0] = b"SET".to_vec(); c }).collect();
        let frame = redis_frame(port, db, &cmds);
        let Ok(Op::Redis(op)) = decode_payload(&Bytes::copy_from_slice(&frame[4..])) else {
            return Err(TestCaseError::fail("valid frame refused"));
        };
        prop_assert_eq!((op.port, op.db), (port, db));
        let got: Vec<Vec<Vec<u8>>> = op.commands.iter().map(|c| c.args().iter().map(|a| a.to_vec()).collect()).collect();
        prop_assert_eq!(got, cmds);
    }

    #[test]
    fn replies_round_trip_whole_and_cut(replies in prop::collection::vec(reply(), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        for r in &replies {
            encode_reply(&mut bytes, r);
        }
        // Arriving in two reads: nothing is taken from an incomplete
        // reply, and every reply comes out as it went in.
        let cut = cut.index(bytes.len() + 1);
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut got = Vec::new();
        loop {
            let before = buf.len();
            match take_reply(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                Some(r) => got.push(r),
                None => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
        buf.extend_from_slice(&bytes[cut..]);
        while let Some(r) = take_reply(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
            got.push(r);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, replies);
    }

    #[test]
    fn reply_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), r in reply()) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = take_reply(&mut buf) {}
        let mut encoded = Vec::new();
        encode_reply(&mut encoded, &r);
        for (i, b) in flips {
            let at = i.index(encoded.len());
            encoded[at] = b;
        }
        let mut buf = BytesMut::from(&encoded[..]);
        while let Ok(Some(_)) = take_reply(&mut buf) {}
    }

    #[test]
    fn resp_parser_never_panics_and_round_trips(garbage in prop::collection::vec(any::<u8>(), 0..128), cmd in args()) {
        let _ = parse_commands(&garbage);
        let mut buf = Vec::new();
        encode_command(&mut buf, &cmd);
        let parsed = parse_commands(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(parsed[0].iter().map(|a| a.to_vec()).collect::<Vec<_>>(), cmd);
    }

    #[test]
    fn bson_write_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), len in any::<u32>()) {
        let _ = decode_write(&bytes);
        // A document whose length field lies.
        let mut forged = len.to_le_bytes().to_vec();
        forged.extend_from_slice(&bytes);
        let _ = decode_write(&forged);
    }

    #[test]
    fn mutated_mongo_frames_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let write = bson::doc! { "op": "update_one", "filter": { "a": 1 }, "update": { "$set": { "b": [1, 2.5, "x"] } }, "upsert": true };
        let mut frame = mongo_frame("db", "coll", &write.to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, b) in flips {
            let at = i.index(frame.len() - 4) + 4;
            frame[at] = b;
        }
        let _ = decode_payload(&Bytes::copy_from_slice(&frame[4..]));
    }

    #[test]
    fn original_transactions_round_trip_and_mutations_never_panic(db in any::<u32>(), cmds in prop::collection::vec(args(), 1..300), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let cmds: Vec<Vec<Vec<u8>>> = cmds.into_iter().map(|mut c| { c[0] = b"SET".to_vec(); c }).collect();
        // The original library's layout: flag 0x80 | (n mod 128), then
        // [u16 LE length][RESP command] per command.
        let mut payload = format!("6379,{db}").into_bytes();
        payload.push(0x80 | (cmds.len() % 128) as u8);
        for c in &cmds {
            let mut one = Vec::new();
            encode_command(&mut one, c);
            payload.extend_from_slice(&(one.len() as u16).to_le_bytes());
            payload.extend_from_slice(&one);
        }
        let Ok(Op::Redis(op)) = decode_payload(&Bytes::copy_from_slice(&payload)) else {
            return Err(TestCaseError::fail("valid transaction refused"));
        };
        prop_assert_eq!((op.port, op.db, op.commands.len()), (6379, db, cmds.len()));
        let got: Vec<Vec<Vec<u8>>> = op.commands.iter().map(|c| c.args().iter().map(|a| a.to_vec()).collect()).collect();
        prop_assert_eq!(got, cmds);
        for (i, b) in flips {
            let at = i.index(payload.len());
            payload[at] = b;
        }
        let decoded = decode_payload(&Bytes::copy_from_slice(&payload)).map(|_| ());
        prop_assert_eq!(check_payload(&payload), decoded);
    }

    /// The client libraries check the Redis frames they encode by their
    /// names alone: it must find what parsing the frame back finds.
    #[test]
    fn command_names_check_agrees_with_check_payload(
        cmds in prop::collection::vec(
            (prop::sample::select(vec!["set", "multi", "ExEc", "select", "get", "", "quit"]), args()),
            1..5,
        ),
    ) {
        let cmds: Vec<Vec<Vec<u8>>> = cmds
            .into_iter()
            .map(|(name, rest)| std::iter::once(name.as_bytes().to_vec()).chain(rest).collect())
            .collect();
        let payload = redis_frame(6379, 0, &cmds);
        prop_assert_eq!(check_command_names(&cmds), check_payload(&payload[4..]));
    }

    #[test]
    fn original_mongo_frames_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let json = br#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}},"new":{"t":{"$date":{"$numberLong":"17"}},"n":{"$numberDecimal":"1.5"},"b":{"$binary":"AQID","$type":"00"}},"iine":true}}}"#;
        let mut payload = json.to_vec();
        for (i, b) in flips {
            let at = i.index(payload.len());
            payload[at] = b;
        }
        let decoded = decode_payload(&Bytes::copy_from_slice(&payload)).map(|_| ());
        prop_assert_eq!(check_payload(&payload), decoded);
        let short = &json[..cut.index(json.len())];
        prop_assert!(decode_payload(&Bytes::copy_from_slice(short)).is_err());
    }

    #[test]
    fn framer_holds_at_most_one_frame(stream in prop::collection::vec(any::<u8>(), 0..2048), cut in 1usize..64) {
        let max = 100u32;
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        for chunk in stream.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(item) = dec.decode(&mut buf) {
                if let Framed::Frame(p) = item {
                    prop_assert!(p.len() <= max as usize);
                }
            }
            // Whatever a length prefix claims, the decoder never asks for
            // room beyond one frame of at most `max` bytes.
            prop_assert!(buf.capacity() <= (max as usize + 4).max(2 * cut + 2048));
        }
    }

    #[test]
    fn peer_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = PeerCodec::new(1 << 16);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    #[test]
    fn peer_batches_round_trip(first in 1u64..u64::MAX / 2, records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let msg = Message::Batch { first_seq: first, records: records.into_iter().map(Bytes::from).collect() };
        let mut codec = PeerCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        codec.encode(msg.clone(), &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = codec.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, Some(msg));
    }

    #[test]
    fn forged_peer_lengths_are_refused(count in any::<u32>(), len in any::<u32>()) {
        let mut codec = PeerCodec::new(1 << 16);
        let mut buf = BytesMut::new();
        buf.put_u32_le(1 + 8 + 4 + 4);
        buf.put_u8(3);
        buf.put_u64_le(1);
        buf.put_u32_le(count);
        buf.put_u32_le(len);
        // Either a clean error or (count 0/1 with a small length) a value;
        // never a panic or a huge allocation.
        let _ = codec.decode(&mut buf);
    }
}
