//! The original system's client frames, built byte for byte from their
//! layouts here (never with syncs' own encoders), decode to the same
//! operations as the matching new frames; each malformed variant is refused
//! with a reason naming what is wrong, by `check_payload` and
//! `decode_payload` alike, and the framer goes on with the next frame.
//!
//! Redis: `"<port>,<db>"`, a flag byte `F`; `F == 0x01`: one RESP command;
//! `F & 0x80`: `n = F & 0x7f` commands (modulo 128), each `[u16 LE
//! length][RESP command]`, filling the payload.
//! Mongo: `{"db": .., "tab": .., "o": {"mtd": .., "v": ..}}`, Extended JSON.

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime, Decimal128, Document};
use bytes::{Bytes, BytesMut};
use syncs_engine::apply::json::op_json;
use syncs_engine::op::{MongoOp, MongoUpdate, MongoWrite, Op, RedisOp};
use syncs_engine::wire::client::{
    check_payload, decode_payload, FrameDecoder, FrameError, Framed, LEN_PREFIX,
};

// ------------------------------------------------------------- helpers --

/// One RESP command, by hand.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `[u16 LE length][bytes]`.
fn piece(command: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(command.len())
        .expect("short command")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(command);
    out
}

/// An original-library transaction payload: header, flag, pieces.
fn tx_payload(header: &str, flag: u8, commands: &[Vec<u8>]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.push(flag);
    for c in commands {
        out.extend_from_slice(&piece(c));
    }
    out
}

/// `[u32 LE length][payload]`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len())
        .expect("small payload")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

/// Decodes `payload`, checking first that `check_payload` agrees exactly.
fn decode(payload: &[u8]) -> Result<Op, FrameError> {
    let decoded = decode_payload(&Bytes::copy_from_slice(payload));
    assert_eq!(
        check_payload(payload),
        decoded.as_ref().map(|_| ()).map_err(Clone::clone),
        "check_payload and decode_payload disagree on {:?}",
        String::from_utf8_lossy(payload)
    );
    decoded
}

fn redis(payload: &[u8]) -> RedisOp {
    match decode(payload) {
        Ok(Op::Redis(op)) => op,
        other => panic!("not a Redis op: {other:?}"),
    }
}

fn mongo(json: &str) -> MongoOp {
    match decode(json.as_bytes()) {
        Ok(Op::Mongo(op)) => *op,
        other => panic!("not a Mongo op: {other:?} for {json}"),
    }
}

/// The refusal of `payload`: its reason label and message.
fn refused(payload: &[u8]) -> (&'static str, String) {
    match decode(payload) {
        Ok(op) => panic!("accepted {:?} as {op:?}", String::from_utf8_lossy(payload)),
        Err(e) => (e.reason(), e.to_string()),
    }
}

fn set(i: usize) -> Vec<u8> {
    resp(&[
        b"set",
        format!("k{i}").as_bytes(),
        format!("v{i}").as_bytes(),
    ])
}

fn args(op: &RedisOp, i: usize) -> Vec<&[u8]> {
    op.commands[i].args().to_vec()
}

// --------------------------------------------------------------- redis --

#[test]
fn one_command_flag_0x01_byte_for_byte() {
    // The seed's frame: "6379,1" 0x01 *3 set a b.
    let payload = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";
    let op = redis(payload);
    assert_eq!((op.port, op.db, op.commands.len()), (6379, 1, 1));
    assert_eq!(args(&op, 0), [&b"set"[..], b"a", b"b"]);
}

#[test]
fn a_transaction_of_130_commands_says_n_2() {
    let commands: Vec<Vec<u8>> = (0..130).map(set).collect();
    // 130 mod 128 = 2: the flag byte is 0x80 | 2.
    let payload = tx_payload("6379,2", 0x82, &commands);
    let op = redis(&payload);
    assert_eq!((op.port, op.db), (6379, 2));
    assert_eq!(op.commands.len(), 130);
    assert!(op.is_transaction());
    assert_eq!(args(&op, 0), [&b"set"[..], b"k0", b"v0"]);
    assert_eq!(args(&op, 129), [&b"set"[..], b"k129", b"v129"]);
    // The same operation as syncs' own transaction frame (0x01, then the
    // commands back to back).
    let mut new = b"6379,2\x01".to_vec();
    commands.iter().for_each(|c| new.extend_from_slice(c));
    assert_eq!(decode(&new), Ok(Op::Redis(op)));
}

#[test]
fn flag_0x80_is_128_commands_and_never_0() {
    let commands: Vec<Vec<u8>> = (0..128).map(set).collect();
    let op = redis(&tx_payload("6379,3", 0x80, &commands));
    assert_eq!(op.commands.len(), 128);
    let (reason, msg) = refused(b"6379,3\x80");
    assert_eq!(reason, "bad_transaction");
    assert!(msg.contains("no command after the flag byte"), "{msg}");
}

#[test]
fn small_transactions_and_a_db_of_two_digits() {
    // Two commands in db 12, as the original library wrote them byte for byte.
    let mut payload = b"6379,12\x82".to_vec();
    payload.extend_from_slice(b"\x1f\x00*3\r\n$3\r\nset\r\n$4\r\ncool\r\n$2\r\nhi\r\n");
    payload.extend_from_slice(b"\x15\x00*2\r\n$4\r\nincr\r\n$1\r\nn\r\n");
    let op = redis(&payload);
    assert_eq!((op.port, op.db, op.commands.len()), (6379, 12, 2));
    assert_eq!(args(&op, 0), [&b"set"[..], b"cool", b"hi"]);
    assert_eq!(args(&op, 1), [&b"incr"[..], b"n"]);
    // A transaction of one command is that command.
    let one = redis(&tx_payload("6380,12", 0x81, &[set(7)]));
    assert_eq!((one.port, one.db, one.commands.len()), (6380, 12, 1));
    assert!(!one.is_transaction());
    // Any decimal db, also with 0x01.
    let op = redis(b"6379,12\x01*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    assert_eq!(op.db, 12);
    let op = redis(&tx_payload("0,4294967295", 0x81, &[set(1)]));
    assert_eq!((op.port, op.db), (0, u32::MAX));
    // Binary-safe values inside a piece.
    let value: Vec<u8> = (0..=255).collect();
    let op = redis(&tx_payload(
        "6379,0",
        0x81,
        &[resp(&[b"set", b"bin", &value])],
    ));
    assert_eq!(args(&op, 0)[2], &value[..]);
}

#[test]
fn malformed_transactions_are_refused_whole_with_a_reason() {
    let cmd = set(1);
    let mut two_in_one = cmd.clone();
    two_in_one.extend_from_slice(&set(2));
    let mut trailing = cmd.clone();
    trailing.extend_from_slice(b"xx");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        // Count: 3 commands with n = 2, 2 with n = 3, 1 with n = 0.
        (
            tx_payload("6379,2", 0x82, &[cmd.clone(), cmd.clone(), cmd.clone()]),
            "bad_transaction",
            "3 commands, but the flag byte 0x82 announces 2",
        ),
        (
            tx_payload("6379,2", 0x83, &[cmd.clone(), cmd.clone()]),
            "bad_transaction",
            "2 commands, but the flag byte 0x83 announces 3",
        ),
        (
            tx_payload("6379,2", 0x80, std::slice::from_ref(&cmd)),
            "bad_transaction",
            "1 commands, but the flag byte 0x80 announces 0",
        ),
        // A length prefix cut in half, a length past the end, a length 0.
        (
            [
                tx_payload("6379,2", 0x82, std::slice::from_ref(&cmd)),
                vec![0x05],
            ]
            .concat(),
            "bad_transaction",
            "command 2 at byte 31: its u16 length is cut short",
        ),
        (
            [b"6379,2\x81\xff\x00".to_vec(), cmd.clone()].concat(),
            "bad_transaction",
            "command 1 at byte 0 announces 255 bytes, but only 29 are left",
        ),
        (
            b"6379,2\x81\x00\x00".to_vec(),
            "bad_transaction",
            "command 1 at byte 0 is empty (length 0)",
        ),
        // A piece holding two commands, or a command and more bytes.
        (
            tx_payload("6379,2", 0x81, &[two_in_one]),
            "bad_transaction",
            "its 58 bytes hold a RESP command of 29 bytes and 29 bytes more",
        ),
        (
            tx_payload("6379,2", 0x81, &[trailing]),
            "bad_transaction",
            "its 31 bytes hold a RESP command of 29 bytes and 2 bytes more",
        ),
        // Bad RESP inside a piece: the offset counts from after the flag.
        (
            tx_payload(
                "6379,2",
                0x82,
                &[cmd.clone(), b"*1\r\n$9\r\nset\r\n".to_vec()],
            ),
            "bad_resp",
            "bad RESP at byte 41: bulk length 9 exceeds the 5 bytes left",
        ),
        (
            tx_payload("6379,2", 0x81, &[b"PING\r\n".to_vec()]),
            "bad_resp",
            "bad RESP at byte 2",
        ),
        // Commands a frame may not carry, inside a transaction too.
        (
            tx_payload("6379,2", 0x82, &[cmd.clone(), resp(&[b"select", b"3"])]),
            "refused_command",
            "command SELECT is not allowed",
        ),
        (
            tx_payload("6379,2", 0x81, &[resp(&[b"multi"])]),
            "refused_command",
            "command MULTI",
        ),
        // Flag bytes that are neither 0x01 nor 0x80 | n.
        (
            [b"6379,2\x02".to_vec(), piece(&cmd)].concat(),
            "redis_header",
            "neither 0x01",
        ),
        (
            [b"6379,2\x00".to_vec(), cmd.clone()].concat(),
            "redis_header",
            "neither 0x01",
        ),
        (
            [b"6379,2".to_vec(), cmd.clone()].concat(),
            "redis_header",
            "neither 0x01",
        ),
        (
            b"6379,2".to_vec(),
            "redis_header",
            "nothing after the header",
        ),
        // Header errors come first, whatever the flag.
        (
            tx_payload("99999,2", 0x81, std::slice::from_ref(&cmd)),
            "redis_header",
            "port is not a number",
        ),
        (
            tx_payload("6379;2", 0x81, std::slice::from_ref(&cmd)),
            "redis_header",
            "no comma",
        ),
        (
            tx_payload("6379,x", 0x81, std::slice::from_ref(&cmd)),
            "redis_header",
            "db is not a number",
        ),
        (
            tx_payload("6379,", 0x81, std::slice::from_ref(&cmd)),
            "redis_header",
            "db is not a number",
        ),
        // 0x01 with nothing after it.
        (b"6379,2\x01".to_vec(), "bad_resp", "no command"),
    ];
    for (payload, reason, words) in cases {
        let (r, msg) = refused(&payload);
        assert_eq!(r, reason, "{:?}: {msg}", String::from_utf8_lossy(&payload));
        assert!(
            msg.contains(words),
            "{:?}: {msg:?} lacks {words:?}",
            String::from_utf8_lossy(&payload)
        );
    }
}

// --------------------------------------------------------------- mongo --

fn keys(d: &Document) -> Vec<&str> {
    d.keys().map(String::as_str).collect()
}

#[test]
fn every_mtd() {
    let op = mongo(r#"{"db":"app","tab":"users","o":{"mtd":"insert","v":{"_id":1,"name":"ada"}}}"#);
    assert_eq!((op.db.as_str(), op.coll.as_str()), ("app", "users"));
    assert_eq!(
        op.write,
        MongoWrite::InsertOne {
            document: doc! { "_id": 1, "name": "ada" }
        }
    );

    let op = mongo(
        r#"{"db":"app","tab":"users","o":{"mtd":"insertm","v":[{"_id":2},{"_id":3,"x":[1,2]}]}}"#,
    );
    assert_eq!(
        op.write,
        MongoWrite::InsertMany {
            documents: vec![doc! { "_id": 2 }, doc! { "_id": 3, "x": [1, 2] }]
        }
    );

    let op = mongo(r#"{"db":"app","tab":"users","o":{"mtd":"del","v":{"grp":"y"}}}"#);
    assert_eq!(
        op.write,
        MongoWrite::DeleteMany {
            filter: doc! { "grp": "y" }
        }
    );

    // Update operators are used as they are.
    let op = mongo(
        r#"{"db":"app","tab":"users","o":{"mtd":"update","v":{"c":{"_id":1},"new":{"$set":{"a":1},"$inc":{"n":2}},"iine":false}}}"#,
    );
    assert_eq!(
        op.write,
        MongoWrite::UpdateOne {
            filter: doc! { "_id": 1 },
            update: MongoUpdate::Document(doc! { "$set": { "a": 1 }, "$inc": { "n": 2 } }),
            upsert: false,
        }
    );

    // Without operators: "set these fields".
    let op = mongo(
        r#"{"db":"app","tab":"users","o":{"mtd":"update","v":{"c":{"_id":1},"new":{"name":"Ada","n":5},"iine":true}}}"#,
    );
    assert_eq!(
        op.write,
        MongoWrite::UpdateOne {
            filter: doc! { "_id": 1 },
            update: MongoUpdate::Document(doc! { "$set": { "name": "Ada", "n": 5 } }),
            upsert: true,
        }
    );

    let op = mongo(
        r#"{"db":"app","tab":"users","o":{"mtd":"updatem","v":{"c":{"grp":"z"},"new":{"made":true},"iine":true}}}"#,
    );
    assert_eq!(
        op.write,
        MongoWrite::UpdateMany {
            filter: doc! { "grp": "z" },
            update: MongoUpdate::Document(doc! { "$set": { "made": true } }),
            upsert: true,
        }
    );
    // iine left out or null: no upsert.
    let op = mongo(
        r#"{"db":"a","tab":"b","o":{"mtd":"updatem","v":{"c":{},"new":{"$unset":{"x":""}}}}}"#,
    );
    assert!(matches!(
        op.write,
        MongoWrite::UpdateMany { upsert: false, .. }
    ));
    let op = mongo(
        r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{},"new":{"x":1},"iine":null}}}"#,
    );
    assert!(matches!(
        op.write,
        MongoWrite::UpdateOne { upsert: false, .. }
    ));

    // Drop, whatever v is (or without one).
    for json in [
        r#"{"db":"app","tab":"users","o":{"mtd":"drop"}}"#,
        r#"{"db":"app","tab":"users","o":{"mtd":"drop","v":""}}"#,
        r#"{"db":"app","tab":"users","o":{"mtd":"drop","v":{}}}"#,
        r#"{"db":"app","tab":"users","o":{"mtd":"drop","v":null}}"#,
    ] {
        assert_eq!(mongo(json).write, MongoWrite::Drop, "{json}");
    }

    // Whitespace and key order of the envelope do not matter.
    let op =
        mongo("{ \"o\" : {\"v\": {\"k\": 1}, \"mtd\": \"del\"},\n \"tab\": \"t\", \"db\": \"d\" }");
    assert_eq!((op.db.as_str(), op.coll.as_str()), ("d", "t"));
}

#[test]
fn old_and_new_mongo_frames_are_the_same_op() {
    let old = decode(
        br#"{"db":"mongo_db_name","tab":"mongo_col_name","o":{"mtd":"del","v":{"key":"value"}}}"#,
    )
    .expect("old frame");
    // docs/protocol.md 1b's example, byte for byte.
    let new: &[u8] = b"\x02mongo_db_name\x00mongo_col_name\x00\
        \x35\x00\x00\x00\
        \x02op\x00\x0c\x00\x00\x00delete_many\x00\
        \x03filter\x00\x14\x00\x00\x00\x02key\x00\x06\x00\x00\x00value\x00\x00\
        \x00";
    let new = decode(new).expect("new frame");
    assert_eq!(new, old);
    // So the dead-letter file and the `file` target write them alike.
    assert_eq!(op_json(&new), op_json(&old));
}

#[test]
fn drop_in_a_new_format_frame() {
    // {op: "drop"}: 18 bytes of BSON.
    let bson: &[u8] = b"\x12\x00\x00\x00\x02op\x00\x05\x00\x00\x00drop\x00\x00";
    let payload = [b"\x02app\x00users\x00".as_slice(), bson].concat();
    assert_eq!(frame(&payload)[..4], [0x1d, 0, 0, 0]);
    let op = decode(&payload).expect("drop frame");
    let old = decode(br#"{"db":"app","tab":"users","o":{"mtd":"drop"}}"#).expect("old drop");
    assert_eq!(op, old);
    assert_eq!(
        op_json(&op),
        serde_json::json!({ "kind": "mongo", "db": "app", "coll": "users", "write": { "op": "drop" } })
    );
    assert_eq!(
        syncs_engine::wire::mongo::encode_write(&MongoWrite::Drop),
        bson
    );
    // Nothing else may ride along.
    let extra = doc! { "op": "drop", "filter": {} };
    let payload = [
        b"\x02app\x00users\x00".to_vec(),
        extra.to_vec().expect("bson"),
    ]
    .concat();
    let (reason, msg) = refused(&payload);
    assert_eq!(reason, "bad_bson");
    assert!(
        msg.contains("unknown field `filter` in a drop write"),
        "{msg}"
    );
}

#[test]
fn extended_json_values_become_the_bson_types_they_name() {
    let op = mongo(concat!(
        r#"{"db":"app","tab":"t","o":{"mtd":"insert","v":{"#,
        r#""_id":{"$oid":"65a1b2c3d4e5f60718293a4b"},"#,
        r#""z":1,"#,
        r#""at":{"$date":"2024-01-02T03:04:05.006Z"},"#,
        r#""at_canonical":{"$date":{"$numberLong":"1700000000000"}},"#,
        r#""at_legacy":{"$date":1700000000000},"#,
        r#""long":{"$numberLong":"5"},"#,
        r#""int":{"$numberInt":"7"},"#,
        r#""double":{"$numberDouble":"2.5"},"#,
        r#""dec":{"$numberDecimal":"1.10"},"#,
        r#""bin":{"$binary":{"base64":"AQID","subType":"00"}},"#,
        r#""bin_legacy":{"$binary":"AQID","$type":"05"},"#,
        r#""uuid":{"$uuid":"00112233-4455-6677-8899-aabbccddeeff"},"#,
        r#""small":5,"big":5000000000,"neg":-3,"frac":1.5,"exp":1e3,"#,
        r#""text":"中文","none":null,"yes":true,"#,
        r#""nested":{"b":[1,{"$numberLong":"2"},{"c":null}],"a":{"$oid":"65a1b2c3d4e5f60718293a4c"}},"#,
        r#""q":{"$in":[1,2]},"r":{"$regex":"^a","$options":"i"}"#,
        r#"}}}"#
    ));
    let MongoWrite::InsertOne { document: d } = op.write else {
        panic!("not an insert: {:?}", op.write)
    };
    let oid = |s: &str| ObjectId::parse_str(s).expect("oid");
    let expected = doc! {
        "_id": oid("65a1b2c3d4e5f60718293a4b"),
        "z": 1,
        "at": DateTime::parse_rfc3339_str("2024-01-02T03:04:05.006Z").expect("date"),
        "at_canonical": DateTime::from_millis(1_700_000_000_000),
        "at_legacy": DateTime::from_millis(1_700_000_000_000),
        "long": 5i64,
        "int": 7i32,
        "double": 2.5f64,
        "dec": "1.10".parse::<Decimal128>().expect("decimal"),
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "bin_legacy": Binary { subtype: BinarySubtype::Md5, bytes: vec![1, 2, 3] },
        "uuid": Binary {
            subtype: BinarySubtype::Uuid,
            bytes: vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        },
        "small": 5i32,
        "big": 5_000_000_000i64,
        "neg": -3i32,
        "frac": 1.5f64,
        "exp": 1000.0f64,
        "text": "中文",
        "none": Bson::Null,
        "yes": true,
        "nested": { "b": [1i32, 2i64, { "c": Bson::Null }], "a": oid("65a1b2c3d4e5f60718293a4c") },
        "q": { "$in": [1, 2] },
        "r": { "$regex": "^a", "$options": "i" },
    };
    // Document equality ignores order: compare values and order apart,
    // and the exact types through the encoded bytes.
    assert_eq!(d, expected);
    assert_eq!(keys(&d), keys(&expected));
    assert_eq!(d.to_vec().expect("bson"), expected.to_vec().expect("bson"));
    let nested = d.get_document("nested").expect("nested");
    assert_eq!(keys(nested), ["b", "a"]);
}

#[test]
fn field_order_is_kept_in_filters_and_updates() {
    let op = mongo(
        r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{"z":1,"a":2,"m":3},"new":{"z":1,"a":{"y":1,"b":2}}}}}"#,
    );
    let MongoWrite::UpdateOne {
        filter,
        update: MongoUpdate::Document(update),
        ..
    } = op.write
    else {
        panic!("not an update")
    };
    assert_eq!(keys(&filter), ["z", "a", "m"]);
    let set = update.get_document("$set").expect("$set");
    assert_eq!(keys(set), ["z", "a"]);
    assert_eq!(keys(set.get_document("a").expect("a")), ["y", "b"]);
}

#[test]
fn malformed_mongo_frames_name_what_is_wrong() {
    let cases: [(&str, &str); 32] = [
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{}}"#,
            "not JSON: EOF",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{}}} x"#,
            "not JSON: trailing characters",
        ),
        (r#"{"db":'a'}"#, "not JSON"),
        (r#"{"db":"a","tab":"b"}"#, r#"the frame has no "o""#),
        (
            r#"{"tab":"b","o":{"mtd":"del","v":{}}}"#,
            r#"the frame has no "db""#,
        ),
        (
            r#"{"db":"a","o":{"mtd":"del","v":{}}}"#,
            r#"the frame has no "tab""#,
        ),
        (
            r#"{"db":1,"tab":"b","o":{"mtd":"del","v":{}}}"#,
            "`db` must be a string, not a number",
        ),
        (
            r#"{"db":"","tab":"b","o":{"mtd":"del","v":{}}}"#,
            "`db` is empty",
        ),
        (
            r#"{"db":"a","tab":"b\u0000c","o":{"mtd":"del","v":{}}}"#,
            "`tab` is empty or holds a NUL",
        ),
        (
            r#"{"db":"a","tab":"b","o":[]}"#,
            "`o` must be a JSON object, not an array",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"v":{}}}"#,
            r#"`o` has no "mtd""#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":3,"v":{}}}"#,
            "`o.mtd` must be a string, not a number",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"upsert","v":{}}}"#,
            r#"unknown `o.mtd` "upsert" (expected insert, insertm, del, update, updatem or drop)"#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert"}}"#,
            "missing `o.v` (the value of insert)",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":[{}]}}"#,
            "`o.v` must be a document, not an array",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"$oid":"65a1b2c3d4e5f60718293a4b"}}}"#,
            "`o.v` must be a document, not an Extended JSON ObjectId",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insertm","v":{}}}"#,
            "`o.v` of insertm must be an array of documents, not an object",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insertm","v":[{},2]}}"#,
            "`o.v[1]` must be a document, not a number",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insertm","v":[]}}"#,
            "`o.v` of insertm is an empty array",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"del","v":"k"}}"#,
            "`o.v` must be a document, not a string",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"new":{"a":1}}}}"#,
            r#"`o.v` has no "c""#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{}}}}"#,
            r#"`o.v` has no "new""#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"updatem","v":{"c":{},"new":[{"$set":{}}]}}}"#,
            "`o.v.new` must be a document, not an array",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{},"new":{}}}}"#,
            "`o.v.new` is empty",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{},"new":{"a":1},"iine":"yes"}}}"#,
            "`o.v.iine` must be true or false, not a string",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"update","v":{"c":{},"new":{"a":1},"upsert":true}}}"#,
            r#"`o.v` has an unknown key "upsert""#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"del","v":{},"w":1}}"#,
            r#"`o` has an unknown key "w""#,
        ),
        (
            r#"{"db":"a","tab":"b","col":"c","o":{"mtd":"del","v":{}}}"#,
            r#"the frame has an unknown key "col""#,
        ),
        (
            r#"{"db":"a","db":"b","tab":"b","o":{"mtd":"del","v":{}}}"#,
            r#"the frame has the key "db" twice"#,
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"_id":{"$oid":"zz"}}}}"#,
            "bad Extended JSON in `o.v`",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"del","v":{"t":{"$date":"yesterday"}}}}"#,
            "bad Extended JSON in `o.v`",
        ),
        (
            r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"a\u0000b":1}}}"#,
            "holds a NUL character",
        ),
    ];
    for (json, words) in cases {
        let (reason, msg) = refused(json.as_bytes());
        assert_eq!(reason, "bad_json", "{json}: {msg}");
        assert!(msg.starts_with("bad Mongo JSON frame: "), "{msg}");
        assert!(msg.contains(words), "{json}: {msg:?} lacks {words:?}");
    }
    // Not UTF-8.
    let (reason, msg) = refused(b"{\"db\":\"a\xff\",\"tab\":\"b\",\"o\":{\"mtd\":\"drop\"}}");
    assert_eq!(reason, "bad_json");
    assert!(msg.contains("not JSON"), "{msg}");
    // More Extended JSON mistakes: a number that is not one, extra keys
    // beside a wrapper.
    for json in [
        r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"n":{"$numberLong":"x"}}}}"#,
        r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"n":{"$numberDecimal":"one"}}}}"#,
        r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"n":{"$numberLong":"1","x":2}}}}"#,
        r#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"n":{"$binary":{"base64":"!!","subType":"00"}}}}}"#,
    ] {
        let (reason, msg) = refused(json.as_bytes());
        assert_eq!(reason, "bad_json", "{json}");
        assert!(msg.contains("bad Extended JSON in `o.v`"), "{json}: {msg}");
    }
}

// -------------------------------------------------------------- framer --

#[test]
fn the_framer_goes_on_after_a_refused_frame() {
    let good_tx = frame(&tx_payload("6379,12", 0x82, &[set(1), set(2)]));
    let bad_tx = frame(&tx_payload("6379,12", 0x83, &[set(3), set(4)]));
    let bad_json = frame(br#"{"db":"a","tab":"b","o":{"mtd":"nope"}}"#);
    let good_json = frame(br#"{"db":"a","tab":"b","o":{"mtd":"insert","v":{"_id":1}}}"#);
    let good_one = frame(b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n");
    let stream = [good_tx, bad_tx, bad_json, good_json.clone(), good_one].concat();
    // Fed in awkward pieces, as the proxy reads them.
    for step in [1, 3, 7, 64, stream.len()] {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut outcomes = Vec::new();
        for chunk in stream.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some(item) = decoder.decode(&mut buf) {
                let Framed::Frame(payload) = item else {
                    panic!("oversize")
                };
                outcomes.push(check_payload(&payload).map_err(|e| e.reason()));
            }
        }
        assert!(decoder.is_idle(&buf));
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Err("bad_transaction"),
                Err("bad_json"),
                Ok(()),
                Ok(())
            ],
            "step {step}"
        );
    }
    assert_eq!(good_json.len() - LEN_PREFIX, 55);
}

/// Bytes written as hex, spaces ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).expect("ascii"), 16).expect("hex"))
        .collect()
}

#[test]
fn the_examples_of_protocol_md_decode() {
    // 1a: the original library's transaction of two commands in db 2.
    let tx = hex("43 00 00 00
        36 33 37 39 2c 32 82 23 00
        2a 33 0d 0a 24 33 0d 0a 73 65 74 0d 0a 24 34 0d 0a 63 6f 6f 6c 0d 0a
        24 36 0d 0a 68 65 6c 6c 6f 30 0d 0a 15 00
        2a 32 0d 0a 24 34 0d 0a 69 6e 63 72 0d 0a 24 31 0d 0a 6e 0d 0a");
    assert_eq!(tx[..LEN_PREFIX], 67u32.to_le_bytes());
    let op = redis(&tx[LEN_PREFIX..]);
    assert_eq!((op.port, op.db, op.commands.len()), (6379, 2, 2));
    assert_eq!(args(&op, 0), [&b"set"[..], b"cool", b"hello0"]);
    assert_eq!(args(&op, 1), [&b"incr"[..], b"n"]);
    // 1b: mg_drop() on app.users.
    let drop = hex("1d 00 00 00 02 61 70 70 00 75 73 65 72 73 00
        12 00 00 00 02 6f 70 00 05 00 00 00 64 72 6f 70 00 00");
    assert_eq!(drop[..LEN_PREFIX], 29u32.to_le_bytes());
    let op = mongo_payload(&drop[LEN_PREFIX..]);
    assert_eq!(
        (op.db.as_str(), op.coll.as_str(), op.write),
        ("app", "users", MongoWrite::Drop)
    );
    // 1b: the JSON delete, 83 bytes.
    let json =
        br#"{"db":"mongo_db_name","tab":"mongo_col_name","o":{"mtd":"del","v":{"key":"value"}}}"#;
    assert_eq!(json.len(), 0x53);
}

fn mongo_payload(payload: &[u8]) -> MongoOp {
    match decode(payload) {
        Ok(Op::Mongo(op)) => *op,
        other => panic!("not a Mongo op: {other:?}"),
    }
}
