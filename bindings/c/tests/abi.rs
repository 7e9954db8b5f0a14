//! The C ABI called as C would call it, against a real `UnixListener`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::ptr;

use bson::{doc, rawdoc};
use bytes::{Bytes, BytesMut};
use intc::client::*;
use intc::error::*;
use intc::intc_result::*;
use intc::mongo::*;
use intc::redis::*;
use syncs_engine::op::{MongoUpdate, MongoWrite, Op};
use syncs_engine::wire::client::{decode_payload, FrameDecoder, Framed};

const SEED: &[u8] = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";

struct Proxy {
    _dir: tempfile::TempDir,
    c_path: CString,
    listener: UnixListener,
}

impl Proxy {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("us1");
        let listener = UnixListener::bind(&path).expect("bind");
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).expect("c path");
        Proxy {
            _dir: dir,
            c_path,
            listener,
        }
    }

    /// The payloads of the next connection; the client must be closed
    /// (intc_dispose / intc_cli_free) first so the stream ends.
    fn payloads(&self) -> Vec<Bytes> {
        let (mut peer, _) = self.listener.accept().expect("accept");
        let mut all = Vec::new();
        peer.read_to_end(&mut all).expect("read");
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&all[..]);
        let mut out = Vec::new();
        while let Some(framed) = dec.decode(&mut buf) {
            match framed {
                Framed::Frame(p) => out.push(p),
                Framed::Oversize { len } => panic!("oversize {len} on the wire"),
            }
        }
        assert!(dec.is_idle(&buf), "partial frame on the wire");
        out
    }
}

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    // SAFETY: buf has 1024 writable bytes.
    unsafe { intc_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by intc_last_error.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn code(rc: c_int) -> intc_result {
    [
        INTC_OK,
        INTC_ERR_ARG,
        INTC_ERR_UNAVAILABLE,
        INTC_ERR_IO,
        INTC_ERR_TOO_LARGE,
        INTC_ERR_BSON,
        INTC_ERR_FRAME,
        INTC_ERR_PANIC,
    ]
    .into_iter()
    .find(|c| *c as c_int == rc)
    .unwrap_or_else(|| panic!("unknown code {rc}"))
}

fn send(cli: *mut IntcCli, bytes: &[u8]) -> intc_result {
    // SAFETY: live handle, valid slice.
    code(unsafe { intc_send(cli, bytes.as_ptr(), bytes.len()) })
}

fn mongo_write(payload: &Bytes) -> (String, String, MongoWrite) {
    match decode_payload(payload) {
        Ok(Op::Mongo(op)) => (op.db, op.coll, op.write),
        other => panic!("not a mongo payload: {other:?}"),
    }
}

#[test]
fn the_seed_stream_arrives_as_one_frame_whatever_the_split() {
    let proxy = Proxy::new();
    // SAFETY: NUL-terminated path.
    let cli = unsafe { intc_fetch(proxy.c_path.as_ptr()) };
    assert!(!cli.is_null());
    // SAFETY: as above; same thread, same path: the cached handle.
    assert_eq!(cli, unsafe { intc_fetch(proxy.c_path.as_ptr()) });
    let prefix = (SEED.len() as u32).to_le_bytes();
    // As the seed does: prefix, then payload.
    assert_eq!(send(cli, &prefix), INTC_OK);
    assert_eq!(send(cli, SEED), INTC_OK);
    // Byte by byte.
    let mut wire = prefix.to_vec();
    wire.extend_from_slice(SEED);
    for b in &wire {
        assert_eq!(send(cli, std::slice::from_ref(b)), INTC_OK);
    }
    // Two frames in one call.
    let twice = [wire.clone(), wire.clone()].concat();
    assert_eq!(send(cli, &twice), INTC_OK);
    let mut stats = IntcStats::default();
    // SAFETY: live handle, valid out pointer.
    assert_eq!(unsafe { intc_cli_stats(cli, &mut stats) }, 0);
    assert_eq!((stats.frames, stats.bytes), (4, 4 * wire.len() as u64));
    intc_dispose();
    let payloads = proxy.payloads();
    assert_eq!(payloads.len(), 4);
    assert!(payloads.iter().all(|p| p[..] == *SEED));
}

#[test]
fn handles_are_per_thread() {
    let proxy = Proxy::new();
    // SAFETY: NUL-terminated path.
    let here = unsafe { intc_fetch(proxy.c_path.as_ptr()) } as usize;
    let path = proxy.c_path.clone();
    let there = std::thread::spawn(move || {
        // SAFETY: NUL-terminated path.
        let cli = unsafe { intc_fetch(path.as_ptr()) };
        let rc = send(
            cli,
            &[(SEED.len() as u32).to_le_bytes().as_slice(), SEED].concat(),
        );
        intc_dispose();
        (cli as usize, rc)
    })
    .join()
    .expect("thread");
    assert_ne!(here, there.0);
    assert_eq!(there.1, INTC_OK);
    intc_dispose();
    assert_eq!(proxy.payloads().len(), 1);
}

#[test]
fn an_oversized_prefix_is_refused_and_skipped() {
    let proxy = Proxy::new();
    // SAFETY: NUL-terminated path.
    let cli = unsafe { intc_cli_new(proxy.c_path.as_ptr()) };
    assert!(!cli.is_null());
    let huge: u32 = 100 << 20;
    assert_eq!(send(cli, &huge.to_le_bytes()), INTC_ERR_TOO_LARGE);
    assert!(
        last_error().contains("104857600 bytes exceeds the limit"),
        "{}",
        last_error()
    );
    // Its payload arrives and is discarded without further errors.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        assert_eq!(send(cli, &chunk), INTC_OK);
    }
    assert_eq!(last_error(), "", "a success clears the message");
    // The stream is in step again: a good frame goes through.
    let mut wire = (SEED.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(SEED);
    assert_eq!(send(cli, &wire), INTC_OK);
    // SAFETY: owned handle, freed once.
    unsafe { intc_cli_free(cli) };
    let payloads = proxy.payloads();
    assert_eq!(payloads.len(), 1);
    assert_eq!(&payloads[0][..], SEED);
}

#[test]
fn invalid_frames_are_reported_and_dropped() {
    let proxy = Proxy::new();
    // SAFETY: NUL-terminated path.
    let cli = unsafe { intc_cli_new(proxy.c_path.as_ptr()) };
    let bad = b"6379,1\x01*1\r\n$5\r\nMULTI\r\n";
    let mut stream = (bad.len() as u32).to_le_bytes().to_vec();
    stream.extend_from_slice(bad);
    stream.extend_from_slice(&(SEED.len() as u32).to_le_bytes());
    stream.extend_from_slice(SEED);
    assert_eq!(send(cli, &stream), INTC_ERR_FRAME);
    assert!(
        last_error().starts_with("intc_send: invalid frame: command MULTI"),
        "{}",
        last_error()
    );
    let junk_bson = b"\x02db\0coll\0\x05\0\0\0\x07";
    let mut stream = (junk_bson.len() as u32).to_le_bytes().to_vec();
    stream.extend_from_slice(junk_bson);
    assert_eq!(send(cli, &stream), INTC_ERR_BSON);
    // SAFETY: owned handle, freed once.
    unsafe { intc_cli_free(cli) };
    let payloads = proxy.payloads();
    assert_eq!(payloads.len(), 1, "only the valid frame is sent");
    assert_eq!(&payloads[0][..], SEED);
}

#[test]
fn null_and_bad_arguments_are_errors_not_crashes() {
    // SAFETY: every pointer below is NULL or valid; NULLs are the point.
    unsafe {
        assert_eq!(
            CStr::from_ptr(intc::intc_version()).to_str(),
            Ok(env!("CARGO_PKG_VERSION"))
        );
        assert!(intc_fetch(ptr::null()).is_null());
        assert!(
            last_error().contains("`us_path` is NULL"),
            "{}",
            last_error()
        );
        assert!(intc_fetch(c"".as_ptr()).is_null());
        assert_eq!(
            code(intc_send(ptr::null_mut(), SEED.as_ptr(), SEED.len())),
            INTC_ERR_ARG
        );
        let long = CString::new("/tmp/".to_owned() + &"x".repeat(200)).expect("cstring");
        assert!(intc_cli_new(long.as_ptr()).is_null());
        assert!(
            last_error().contains("unix socket path"),
            "{}",
            last_error()
        );

        let cli = intc_cli_new(c"/nonexistent/dir/us1".as_ptr());
        assert_eq!(code(intc_send(cli, ptr::null(), 4)), INTC_ERR_ARG);
        assert_eq!(code(intc_send(cli, ptr::null(), 0)), INTC_OK);
        assert_eq!(
            code(intc_redis_command(cli, 1, 0, 0, ptr::null(), ptr::null())),
            INTC_ERR_ARG
        );
        let argv = [c"SET".as_ptr(), ptr::null()];
        assert_eq!(
            code(intc_redis_command(cli, 1, 0, 2, argv.as_ptr(), ptr::null())),
            INTC_ERR_ARG
        );
        assert!(last_error().contains("argv[1]"), "{}", last_error());
        assert_eq!(
            code(intc_mongo_delete_many(
                cli,
                ptr::null(),
                c"c".as_ptr(),
                ptr::null(),
                0
            )),
            INTC_ERR_ARG
        );
        let filter = rawdoc! {};
        let bad_utf8 = [0xffu8, 0];
        assert_eq!(
            code(intc_mongo_delete_many(
                cli,
                bad_utf8.as_ptr().cast(),
                c"c".as_ptr(),
                filter.as_bytes().as_ptr(),
                filter.as_bytes().len()
            )),
            INTC_ERR_ARG
        );
        assert_eq!(code(intc_cli_stats(cli, ptr::null_mut())), INTC_ERR_ARG);
        assert_eq!(code(intc_tx_send(cli, ptr::null())), INTC_ERR_ARG);
        assert_eq!(intc_tx_count(ptr::null()), 0);
        intc_tx_free(ptr::null_mut());
        intc_cli_free(ptr::null_mut());

        // A cached handle is not freed by intc_cli_free.
        let cached = intc_fetch(c"/nonexistent/dir/us1".as_ptr());
        intc_cli_free(cached);
        assert_eq!(cached, intc_fetch(c"/nonexistent/dir/us1".as_ptr()));
        intc_dispose();
        intc_cli_free(cli);
    }
}

#[test]
fn a_missing_proxy_fails_fast() {
    // SAFETY: NUL-terminated path.
    let cli = unsafe { intc_fetch(c"/nonexistent/dir/us1".as_ptr()) };
    let mut wire = (SEED.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(SEED);
    assert_eq!(send(cli, &wire), INTC_ERR_UNAVAILABLE);
    let msg = last_error();
    assert!(
        msg.contains("intc_send: proxy unavailable") && msg.contains("/nonexistent/dir/us1"),
        "{msg}"
    );
    let mut stats = IntcStats::default();
    // SAFETY: live handle, valid out pointer.
    unsafe { intc_cli_stats(cli, &mut stats) };
    assert_eq!((stats.frames, stats.errors), (0, 1));
    // SAFETY: live handle.
    assert_eq!(unsafe { intc_cli_set_send_timeout(cli, 0) }, 0);
    // SAFETY: live handle.
    assert_eq!(unsafe { intc_cli_set_send_timeout(cli, 250) }, 0);
    intc_dispose();
}

#[test]
fn redis_builders_make_commands_and_transactions() {
    let proxy = Proxy::new();
    // SAFETY: all pointers valid for the calls; handles freed once.
    unsafe {
        let cli = intc_cli_new(proxy.c_path.as_ptr());
        let argv = [c"set".as_ptr(), c"a".as_ptr(), c"b".as_ptr()];
        assert_eq!(
            code(intc_redis_command(
                cli,
                6379,
                1,
                3,
                argv.as_ptr(),
                ptr::null()
            )),
            INTC_OK
        );

        let value: &[u8] = b"a\0\r\n\xff";
        let argv = [c"SET".as_ptr(), c"blob".as_ptr(), value.as_ptr().cast()];
        let lens = [3usize, 4, value.len()];
        assert_eq!(
            code(intc_redis_command(
                cli,
                6380,
                0,
                3,
                argv.as_ptr(),
                lens.as_ptr()
            )),
            INTC_OK
        );

        let tx = intc_tx_new(6379, 2);
        assert_eq!(
            code(intc_tx_send(cli, tx)),
            INTC_ERR_ARG,
            "empty transaction"
        );
        let cool = [c"set".as_ptr(), c"cool".as_ptr(), c"hello0".as_ptr()];
        let awesome = [c"set".as_ptr(), c"awesome".as_ptr(), c"中文你好0".as_ptr()];
        assert_eq!(
            code(intc_tx_append(tx, 3, cool.as_ptr(), ptr::null())),
            INTC_OK
        );
        assert_eq!(
            code(intc_tx_append(tx, 3, awesome.as_ptr(), ptr::null())),
            INTC_OK
        );
        assert_eq!(intc_tx_count(tx), 2);
        assert_eq!(code(intc_tx_send(cli, tx)), INTC_OK);
        let select = [c"SELECT".as_ptr(), c"3".as_ptr()];
        assert_eq!(
            code(intc_tx_append(tx, 2, select.as_ptr(), ptr::null())),
            INTC_OK
        );
        assert_eq!(code(intc_tx_send(cli, tx)), INTC_ERR_FRAME);
        assert!(last_error().contains("SELECT"), "{}", last_error());
        intc_tx_free(tx);
        intc_cli_free(cli);
    }
    let payloads = proxy.payloads();
    assert_eq!(payloads.len(), 3);
    assert_eq!(&payloads[0][..], SEED);
    let Ok(Op::Redis(blob)) = decode_payload(&payloads[1]) else {
        panic!("redis")
    };
    assert_eq!((blob.port, blob.db), (6380, 0));
    assert_eq!(&blob.commands[0].args()[2][..], b"a\0\r\n\xff");
    let Ok(Op::Redis(tx)) = decode_payload(&payloads[2]) else {
        panic!("redis")
    };
    assert!(tx.is_transaction());
    assert_eq!(&tx.commands[1].args()[2][..], "中文你好0".as_bytes());
}

#[test]
fn mongo_builders_make_every_write() {
    let proxy = Proxy::new();
    let d1 = rawdoc! { "_id": 1, "name": "Ada" };
    let d2 = rawdoc! { "_id": 2, "tags": ["x", "y"] };
    let filter = rawdoc! { "key": "value" };
    let set = rawdoc! { "$set": { "n": 1 } };
    let pipeline = rawdoc! { "0": { "$set": { "n": { "$add": ["$n", 1] } } } };
    let replacement = rawdoc! { "key": "value", "v": 2.5 };
    let b = |d: &bson::RawDocumentBuf| (d.as_bytes().as_ptr(), d.as_bytes().len());
    let (db, coll) = (c"app".as_ptr(), c"users".as_ptr());
    // SAFETY: all pointers valid for the calls; the handle freed once.
    unsafe {
        let cli = intc_cli_new(proxy.c_path.as_ptr());
        let (p, l) = b(&d1);
        assert_eq!(code(intc_mongo_insert_one(cli, db, coll, p, l)), INTC_OK);
        let docs = [d1.as_bytes().as_ptr(), d2.as_bytes().as_ptr()];
        let lens = [d1.as_bytes().len(), d2.as_bytes().len()];
        assert_eq!(
            code(intc_mongo_insert_many(
                cli,
                db,
                coll,
                docs.as_ptr(),
                lens.as_ptr(),
                2
            )),
            INTC_OK
        );
        let (fp, fl) = b(&filter);
        let (sp, sl) = b(&set);
        assert_eq!(
            code(intc_mongo_update_one(cli, db, coll, fp, fl, sp, sl, true)),
            INTC_OK
        );
        let (pp, pl) = b(&pipeline);
        assert_eq!(
            code(intc_mongo_update_many(cli, db, coll, fp, fl, pp, pl, false)),
            INTC_OK
        );
        let (rp, rl) = b(&replacement);
        assert_eq!(
            code(intc_mongo_replace_one(cli, db, coll, fp, fl, rp, rl, false)),
            INTC_OK
        );
        assert_eq!(code(intc_mongo_delete_one(cli, db, coll, fp, fl)), INTC_OK);
        assert_eq!(code(intc_mongo_delete_many(cli, db, coll, fp, fl)), INTC_OK);
        let ready = rawdoc! { "op": "delete_many", "filter": { "key": "value" } };
        let (wp, wl) = b(&ready);
        assert_eq!(code(intc_mongo_write(cli, db, coll, wp, wl)), INTC_OK);

        // Errors: a broken document named by index, an empty insert_many,
        // a description with an unknown field.
        let broken = [d1.as_bytes().as_ptr(), d2.as_bytes().as_ptr()];
        let short = [d1.as_bytes().len(), d2.as_bytes().len() - 1];
        assert_eq!(
            code(intc_mongo_insert_many(
                cli,
                db,
                coll,
                broken.as_ptr(),
                short.as_ptr(),
                2
            )),
            INTC_ERR_BSON
        );
        assert!(last_error().contains("documents[1]"), "{}", last_error());
        assert_eq!(
            code(intc_mongo_insert_many(
                cli,
                db,
                coll,
                docs.as_ptr(),
                lens.as_ptr(),
                0
            )),
            INTC_ERR_ARG
        );
        let typo = rawdoc! { "op": "delete_many", "filter": {}, "upsret": true };
        let (tp, tl) = b(&typo);
        assert_eq!(code(intc_mongo_write(cli, db, coll, tp, tl)), INTC_ERR_BSON);
        assert!(last_error().contains("upsret"), "{}", last_error());
        intc_cli_free(cli);
    }
    let payloads = proxy.payloads();
    let writes: Vec<MongoWrite> = payloads
        .iter()
        .map(|p| {
            let (db, coll, write) = mongo_write(p);
            assert_eq!((db.as_str(), coll.as_str()), ("app", "users"));
            write
        })
        .collect();
    let filter = doc! { "key": "value" };
    let expected = vec![
        MongoWrite::InsertOne {
            document: doc! { "_id": 1, "name": "Ada" },
        },
        MongoWrite::InsertMany {
            documents: vec![
                doc! { "_id": 1, "name": "Ada" },
                doc! { "_id": 2, "tags": ["x", "y"] },
            ],
        },
        MongoWrite::UpdateOne {
            filter: filter.clone(),
            update: MongoUpdate::Document(doc! { "$set": { "n": 1 } }),
            upsert: true,
        },
        MongoWrite::UpdateMany {
            filter: filter.clone(),
            update: MongoUpdate::Pipeline(vec![doc! { "$set": { "n": { "$add": ["$n", 1] } } }]),
            upsert: false,
        },
        MongoWrite::ReplaceOne {
            filter: filter.clone(),
            replacement: doc! { "key": "value", "v": 2.5 },
            upsert: false,
        },
        MongoWrite::DeleteOne {
            filter: filter.clone(),
        },
        MongoWrite::DeleteMany {
            filter: filter.clone(),
        },
        MongoWrite::DeleteMany { filter },
    ];
    assert_eq!(writes, expected);
    // The builder and the ready description give the same bytes.
    assert_eq!(payloads[6], payloads[7]);
}

#[test]
fn buffered_commands_are_encoded_in_place_and_checked() {
    let proxy = Proxy::new();
    // Arguments past the ones held on the stack, and one binary.
    let many: Vec<CString> = (0..12)
        .map(|i| CString::new(format!("f{i}")).expect("cstring"))
        .collect();
    let mut hset: Vec<*const c_char> = vec![c"HSET".as_ptr(), c"h".as_ptr()];
    hset.extend(many.iter().map(|s| s.as_ptr()));
    // SAFETY: all pointers valid for the calls; the handle is freed once.
    unsafe {
        let cli = intc_cli_new(proxy.c_path.as_ptr());
        assert_eq!(
            code(intc_cli_set_buffering(cli, 1 << 16, 1_000_000)),
            INTC_OK
        );
        let seed = [c"set".as_ptr(), c"a".as_ptr(), c"b".as_ptr()];
        let set = |argc: c_int, argv: &[*const c_char], lens: *const usize| {
            code(intc_redis_command(cli, 6379, 1, argc, argv.as_ptr(), lens))
        };
        // The first connects (and starts the flusher); the others go
        // straight into the buffer.
        assert_eq!(set(3, &seed, ptr::null()), INTC_OK);
        assert_eq!(set(hset.len() as c_int, &hset, ptr::null()), INTC_OK);
        let value: &[u8] = b"\0\r\n";
        let blob = [c"SET".as_ptr(), c"blob".as_ptr(), value.as_ptr().cast()];
        let lens = [3usize, 4, value.len()];
        assert_eq!(set(3, &blob, lens.as_ptr()), INTC_OK);

        for refused in [c"multi", c"EXEC", c"Select", c"unwatch"] {
            let argv = [refused.as_ptr()];
            assert_eq!(set(1, &argv, ptr::null()), INTC_ERR_FRAME);
            let upper = refused.to_str().expect("ascii").to_uppercase();
            assert!(
                last_error().contains(&format!("command {upper} is not allowed")),
                "{}",
                last_error()
            );
        }
        let mut null_at_9 = hset.clone();
        null_at_9[9] = ptr::null();
        assert_eq!(
            set(null_at_9.len() as c_int, &null_at_9, ptr::null()),
            INTC_ERR_ARG
        );
        assert!(last_error().contains("`argv[9]`"), "{}", last_error());
        assert_eq!(set(3, &seed, ptr::null()), INTC_OK);
        assert!(last_error().is_empty(), "a success clears the last error");

        let mut stats = IntcStats::default();
        assert_eq!(code(intc_cli_stats(cli, &mut stats)), INTC_OK);
        assert_eq!((stats.buffered, stats.pending, stats.errors), (4, 4, 0));
        intc_cli_free(cli);
    }
    let payloads = proxy.payloads();
    assert_eq!(payloads.len(), 4, "refused commands leave nothing behind");
    assert_eq!(&payloads[0][..], SEED);
    assert_eq!(&payloads[3][..], SEED);
    let Ok(Op::Redis(op)) = decode_payload(&payloads[1]) else {
        panic!("redis")
    };
    assert_eq!(op.commands[0].args().len(), 14);
    assert_eq!(&op.commands[0].args()[13][..], b"f11");
    let Ok(Op::Redis(op)) = decode_payload(&payloads[2]) else {
        panic!("redis")
    };
    assert_eq!(&op.commands[0].args()[2][..], b"\0\r\n");
}
