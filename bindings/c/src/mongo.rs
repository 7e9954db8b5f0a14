//! Mongo writes: a ready write description, or one built from the BSON
//! bytes of its parts (any BSON library's output: libbson's
//! `bson_get_data(b)` / `b->len`, or bytes built by hand).

use std::ffi::{c_char, c_int};

use bson::Document;
use intc_client::{bson_document, bson_update, Frame, MongoWrite};

use crate::args;
use crate::client::{cli_ref, IntcCli};
use crate::error::{call, Failure};

/// Reads one BSON document part.
///
/// # Safety
///
/// `ptr` NULL or `len` readable bytes.
unsafe fn doc(what: &str, ptr: *const u8, len: usize) -> Result<Document, Failure> {
    if ptr.is_null() {
        return Err(Failure::arg(format!("`{what}` is NULL")));
    }
    // SAFETY: forwarded contract.
    let bytes = unsafe { args::bytes(what, ptr, len) }?;
    Ok(bson_document(what, bytes)?)
}

/// Sends `write` on `db.coll`.
///
/// # Safety
///
/// `cli` NULL or a live handle; `db` and `coll` NULL or NUL-terminated.
unsafe fn send_write(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    write: MongoWrite,
) -> Result<(), Failure> {
    // SAFETY: forwarded contract.
    let cli = unsafe { cli_ref(cli) }?;
    // SAFETY: forwarded contract.
    let db = unsafe { args::c_str("db", db) }?;
    // SAFETY: forwarded contract.
    let coll = unsafe { args::c_str("coll", coll) }?;
    cli.send(Frame::mongo_write(db, coll, &write))
}

/// Sends a ready write description (`{op: "insert_one", document: {..}}`,
/// ...; see docs/protocol.md) for collection `coll` of database `db`.
/// The description is checked as the server will (unknown fields refused).
///
/// Errors: INTC_ERR_ARG (NULL pointers, names empty or not UTF-8),
/// INTC_ERR_BSON (invalid BSON or description), INTC_ERR_FRAME (bad names),
/// INTC_ERR_TOO_LARGE, INTC_ERR_UNAVAILABLE, INTC_ERR_IO. Thread-safe.
///
/// # Safety
///
/// `cli` NULL or a live handle; `db`, `coll` NULL or NUL-terminated;
/// `write_bson` NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_write(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    write_bson: *const u8,
    len: usize,
) -> c_int {
    call("intc_mongo_write", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        // SAFETY: NULL or NUL-terminated, per this function's contract.
        let db = unsafe { args::c_str("db", db) }?;
        // SAFETY: NULL or NUL-terminated, per this function's contract.
        let coll = unsafe { args::c_str("coll", coll) }?;
        if write_bson.is_null() {
            return Err(Failure::arg("`write_bson` is NULL"));
        }
        // SAFETY: `len` readable bytes, per this function's contract.
        let write = unsafe { args::bytes("write_bson", write_bson, len) }?;
        cli.send(Frame::mongo(db, coll, write))
    })
}

/// Inserts one document (`doc`: `len` bytes of BSON).
///
/// Errors: as `intc_mongo_write`. Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`, with `doc` for `write_bson`.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_insert_one(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    doc: *const u8,
    len: usize,
) -> c_int {
    call("intc_mongo_insert_one", || {
        // SAFETY: `doc` NULL or `len` bytes, per this function's contract.
        let document = unsafe { self::doc("document", doc, len) }?;
        // SAFETY: cli, db, coll as this function's contract says.
        unsafe { send_write(cli, db, coll, MongoWrite::InsertOne { document }) }
    })
}

/// Inserts `n` documents (`docs[i]`: `lens[i]` bytes of BSON), `n >= 1`.
///
/// Errors: as `intc_mongo_write`; the message names the bad document
/// (`documents[3]`). Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`; `docs` and `lens` must hold `n` entries each.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_insert_many(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    docs: *const *const u8,
    lens: *const usize,
    n: usize,
) -> c_int {
    call("intc_mongo_insert_many", || {
        if n == 0 {
            return Err(Failure::arg(
                "insert_many needs at least one document (n is 0)",
            ));
        }
        // SAFETY: `n` pointers at `docs`, per this function's contract.
        let docs = unsafe { args::slice_of("docs", docs, n) }?;
        // SAFETY: `n` lengths at `lens`, per this function's contract.
        let lens = unsafe { args::slice_of("lens", lens, n) }?;
        let documents = docs
            .iter()
            .zip(lens)
            .enumerate()
            // SAFETY: docs[i] has lens[i] readable bytes, per the contract.
            .map(|(i, (&d, &l))| unsafe { self::doc(&format!("documents[{i}]"), d, l) })
            .collect::<Result<_, _>>()?;
        // SAFETY: cli, db, coll as this function's contract says.
        unsafe { send_write(cli, db, coll, MongoWrite::InsertMany { documents }) }
    })
}

/// Shared body of the update functions.
///
/// # Safety
///
/// As `intc_mongo_update_one`.
#[allow(clippy::too_many_arguments)]
unsafe fn update(
    name: &str,
    many: bool,
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
    update: *const u8,
    ulen: usize,
    upsert: bool,
) -> c_int {
    call(name, || {
        // SAFETY: `flen` readable bytes at `filter` (forwarded contract).
        let filter = unsafe { doc("filter", filter, flen) }?;
        if update.is_null() {
            return Err(Failure::arg("`update` is NULL"));
        }
        // SAFETY: `ulen` readable bytes at `update` (forwarded contract).
        let update = bson_update(unsafe { args::bytes("update", update, ulen) }?)?;
        let write = if many {
            MongoWrite::UpdateMany {
                filter,
                update,
                upsert,
            }
        } else {
            MongoWrite::UpdateOne {
                filter,
                update,
                upsert,
            }
        };
        // SAFETY: cli, db, coll as the contract says (forwarded).
        unsafe { send_write(cli, db, coll, write) }
    })
}

/// Updates the first document matching `filter` (`flen` bytes of BSON) with
/// `update` (`ulen` bytes): a document of update operators (`{"$set":
/// {..}}`), or an aggregation pipeline given as a BSON array, i.e. a
/// document whose keys are "0", "1", ... in order and whose values are
/// documents (libmongoc's rule). `upsert`: insert when nothing matches.
///
/// Errors: as `intc_mongo_write`. Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`; `filter`/`update` NULL or `flen`/`ulen` bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_update_one(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
    update: *const u8,
    ulen: usize,
    upsert: bool,
) -> c_int {
    // SAFETY: forwarded contract of this function.
    unsafe {
        self::update(
            "intc_mongo_update_one",
            false,
            cli,
            db,
            coll,
            filter,
            flen,
            update,
            ulen,
            upsert,
        )
    }
}

/// As `intc_mongo_update_one`, for every matching document.
///
/// # Safety
///
/// As `intc_mongo_update_one`.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_update_many(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
    update: *const u8,
    ulen: usize,
    upsert: bool,
) -> c_int {
    // SAFETY: forwarded contract of this function.
    unsafe {
        self::update(
            "intc_mongo_update_many",
            true,
            cli,
            db,
            coll,
            filter,
            flen,
            update,
            ulen,
            upsert,
        )
    }
}

/// Replaces the first document matching `filter` (`flen` bytes of BSON)
/// with `replacement` (`rlen` bytes); `upsert`: insert when nothing matches.
///
/// Errors: as `intc_mongo_write`. Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`; `filter`/`replacement` NULL or `flen`/`rlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_replace_one(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
    replacement: *const u8,
    rlen: usize,
    upsert: bool,
) -> c_int {
    call("intc_mongo_replace_one", || {
        // SAFETY: `flen` bytes at `filter`, per this function's contract.
        let filter = unsafe { doc("filter", filter, flen) }?;
        // SAFETY: `rlen` bytes at `replacement`, per this function's contract.
        let replacement = unsafe { doc("replacement", replacement, rlen) }?;
        let write = MongoWrite::ReplaceOne {
            filter,
            replacement,
            upsert,
        };
        // SAFETY: cli, db, coll as this function's contract says.
        unsafe { send_write(cli, db, coll, write) }
    })
}

/// Deletes the first document matching `filter` (`flen` bytes of BSON).
///
/// Errors: as `intc_mongo_write`. Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`; `filter` NULL or `flen` bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_delete_one(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
) -> c_int {
    call("intc_mongo_delete_one", || {
        // SAFETY: `flen` bytes at `filter`, per this function's contract.
        let filter = unsafe { doc("filter", filter, flen) }?;
        // SAFETY: cli, db, coll as this function's contract says.
        unsafe { send_write(cli, db, coll, MongoWrite::DeleteOne { filter }) }
    })
}

/// Deletes every document matching `filter` (`flen` bytes of BSON; an empty
/// document `{}` matches all).
///
/// Errors: as `intc_mongo_write`. Thread-safe.
///
/// # Safety
///
/// As `intc_mongo_write`; `filter` NULL or `flen` bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_mongo_delete_many(
    cli: *mut IntcCli,
    db: *const c_char,
    coll: *const c_char,
    filter: *const u8,
    flen: usize,
) -> c_int {
    call("intc_mongo_delete_many", || {
        // SAFETY: `flen` bytes at `filter`, per this function's contract.
        let filter = unsafe { doc("filter", filter, flen) }?;
        // SAFETY: cli, db, coll as this function's contract says.
        unsafe { send_write(cli, db, coll, MongoWrite::DeleteMany { filter }) }
    })
}
