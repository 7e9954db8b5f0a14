//! Redis builders: one command (hiredis `redisCommandArgv` style) and
//! transactions built one command at a time.

use std::ffi::{c_char, c_int};

use intc_client::{RedisFrame, RedisFrameBuilder};

use crate::args;
use crate::client::{cli_ref, IntcCli};
use crate::error::{call, call_ptr, call_void, Failure};

/// A transaction being built: commands applied together (MULTI/EXEC at the
/// target) for one source Redis port and db. Opaque to C.
#[derive(Debug)]
pub struct IntcTx {
    builder: RedisFrameBuilder,
}

/// Sends one Redis command, as the application ran it on the Redis server
/// listening on `port`, db `db`.
///
/// `argv` holds `argc` arguments, the command name first; `argvlen` their
/// lengths (binary-safe), or NULL when every argument is a NUL-terminated
/// string. MULTI, EXEC, DISCARD, WATCH, UNWATCH and SELECT are refused (the
/// frame carries the db; use the transaction builder).
///
/// Errors: INTC_ERR_ARG (NULL `cli`/`argv`/argument, `argc < 1`),
/// INTC_ERR_FRAME (a refused command), INTC_ERR_TOO_LARGE,
/// INTC_ERR_UNAVAILABLE, INTC_ERR_IO. Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle; `argv` must hold `argc` pointers,
/// each to `argvlen[i]` bytes or, when `argvlen` is NULL, to a
/// NUL-terminated string; `argvlen` NULL or `argc` lengths.
#[no_mangle]
pub unsafe extern "C" fn intc_redis_command(
    cli: *mut IntcCli,
    port: u16,
    db: u32,
    argc: c_int,
    argv: *const *const c_char,
    argvlen: *const usize,
) -> c_int {
    call("intc_redis_command", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        // SAFETY: argv/argvlen as this function's contract says.
        unsafe {
            args::with_argv(argc, argv, argvlen, |args| {
                // Encoded straight into the handle's buffer when it buffers.
                cli.send_encoded(RedisFrame::new(port, db, &[args]))
            })
        }
    })
}

/// Starts an empty transaction for the Redis server on `port`, db `db`.
/// Free it with `intc_tx_free`. Never NULL except on allocation failure or
/// an internal error (see `intc_last_error`).
#[no_mangle]
pub extern "C" fn intc_tx_new(port: u16, db: u32) -> *mut IntcTx {
    call_ptr("intc_tx_new", || {
        Ok(Box::into_raw(Box::new(IntcTx {
            builder: RedisFrameBuilder::new(port, db),
        })))
    })
}

/// Appends one command to `tx` (arguments as for `intc_redis_command`).
/// The arguments are copied: the caller's buffers may be reused at once.
///
/// Errors: INTC_ERR_ARG (NULL `tx`/`argv`/argument, `argc < 1`),
/// INTC_ERR_TOO_LARGE (the transaction would pass 4 GiB). Refused commands
/// are reported by `intc_tx_send`. Not thread-safe for one `tx`.
///
/// # Safety
///
/// `tx` must be NULL or a live transaction not used by another thread;
/// `argv`/`argvlen` as for `intc_redis_command`.
#[no_mangle]
pub unsafe extern "C" fn intc_tx_append(
    tx: *mut IntcTx,
    argc: c_int,
    argv: *const *const c_char,
    argvlen: *const usize,
) -> c_int {
    call("intc_tx_append", || {
        // SAFETY: NULL or a live transaction used by this thread only.
        let tx = unsafe { tx.as_mut() }.ok_or_else(|| Failure::arg("`tx` is NULL"))?;
        // SAFETY: argv/argvlen as this function's contract says.
        unsafe { args::with_argv(argc, argv, argvlen, |args| Ok(tx.builder.push(args)?)) }
    })
}

/// The number of commands in `tx` (0 for NULL).
///
/// # Safety
///
/// `tx` must be NULL or a live transaction.
#[no_mangle]
pub unsafe extern "C" fn intc_tx_count(tx: *const IntcTx) -> usize {
    let mut count = 0;
    call_void("intc_tx_count", || {
        // SAFETY: NULL or a live transaction.
        count = unsafe { tx.as_ref() }.map_or(0, |tx| tx.builder.len());
    });
    count
}

/// Sends the commands of `tx` as one frame: one command is sent as is,
/// several are applied as one MULTI/EXEC transaction by the server. `tx`
/// is left unchanged (it may be sent again) and still has to be freed.
///
/// Errors: INTC_ERR_ARG (NULL `cli`/`tx`, empty `tx`), INTC_ERR_FRAME (a
/// refused command such as MULTI or SELECT), INTC_ERR_TOO_LARGE,
/// INTC_ERR_UNAVAILABLE, INTC_ERR_IO. Thread-safe for `cli`.
///
/// # Safety
///
/// `cli` must be NULL or a live handle; `tx` NULL or a live transaction not
/// being changed by another thread.
#[no_mangle]
pub unsafe extern "C" fn intc_tx_send(cli: *mut IntcCli, tx: *const IntcTx) -> c_int {
    call("intc_tx_send", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        // SAFETY: NULL or a live transaction.
        let tx = unsafe { tx.as_ref() }.ok_or_else(|| Failure::arg("`tx` is NULL"))?;
        cli.send(tx.builder.build())
    })
}

/// Frees a transaction (NULL is ignored).
///
/// # Safety
///
/// `tx` must be NULL or a live transaction from `intc_tx_new`, not used
/// after this call.
#[no_mangle]
pub unsafe extern "C" fn intc_tx_free(tx: *mut IntcTx) {
    call_void("intc_tx_free", || {
        if !tx.is_null() {
            // SAFETY: `tx` came from Box::into_raw in intc_tx_new and the
            // caller gives it back exactly once.
            drop(unsafe { Box::from_raw(tx) });
        }
    });
}
