//! Client handles: `intc_fetch` / `intc_dispose` (the seed's per-path
//! cache), `intc_cli_new` / `intc_cli_free` (an owned handle), the raw
//! stream write `intc_send`, settings and counters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use intc_client::{
    Buffering, ClientError, Config, Connection, Encode, Frame, FrameAssembler, DEFAULT_BUFFER_SIZE,
    DEFAULT_LINGER,
};

use crate::args;
use crate::error::{call, call_ptr, call_void, Failure};

/// A client of the local proxy: one unix socket path, one connection
/// (opened on the first send, reopened after errors and after `fork()`).
///
/// Opaque to C; see `intc_fetch` and `intc_cli_new`.
#[derive(Debug)]
pub struct IntcCli {
    conn: Connection,
    /// Bytes of a frame `intc_send` has not seen whole yet.
    assembler: Mutex<FrameAssembler>,
    /// Made by `intc_cli_new` (the caller frees it), not by `intc_fetch`.
    owned: bool,
}

/// Counters of one client handle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntcStats {
    /// Frames written whole to the proxy.
    pub frames: u64,
    /// Bytes of those frames, length prefixes included.
    pub bytes: u64,
    /// Sends that failed: connect errors, write errors, frames over the
    /// limit. (Frames refused by validation are reported to the caller and
    /// never reach the connection.)
    pub errors: u64,
    /// Successful connects, the first included.
    pub connects: u64,
    /// Successful connects after the first one.
    pub reconnects: u64,
    /// Frames that went into the buffer (buffering on): written later
    /// (then counted in `frames` too) or dropped.
    pub buffered: u64,
    /// Frames in the buffer now, not written yet.
    pub pending: u64,
    /// Writes of the buffer, each carrying one or more frames.
    pub flushes: u64,
    /// Buffered frames never written whole because a write failed.
    pub dropped: u64,
}

/// The buffer size `intc_cli_set_buffering` suggests (64 KiB).
pub const INTC_DEFAULT_BUFFER_SIZE: usize = 65536;
/// The linger `intc_cli_set_buffering` suggests, in microseconds (1 ms).
pub const INTC_DEFAULT_LINGER_US: u32 = 1000;

// Literals for cbindgen, kept equal to the client's defaults.
const _: () = assert!(INTC_DEFAULT_BUFFER_SIZE == DEFAULT_BUFFER_SIZE);
const _: () = assert!(INTC_DEFAULT_LINGER_US as u128 == DEFAULT_LINGER.as_micros());

impl IntcCli {
    fn new(path: &Path, owned: bool) -> Result<Self, Failure> {
        let config = Config::default();
        let max_frame = config.max_frame;
        Ok(IntcCli {
            conn: Connection::new(path, config)?,
            assembler: Mutex::new(FrameAssembler::new(max_frame)),
            owned,
        })
    }

    /// Sends a frame built by one of the builders.
    pub(crate) fn send(&self, frame: Result<Frame, ClientError>) -> Result<(), Failure> {
        Ok(self.conn.send(&frame?)?)
    }

    /// Sends a frame not encoded yet (see `Connection::send_encoded`).
    pub(crate) fn send_encoded(
        &self,
        frame: Result<impl Encode, ClientError>,
    ) -> Result<(), Failure> {
        Ok(self.conn.send_encoded(&frame?)?)
    }

    /// The raw stream write: frames are reassembled from pieces of any size
    /// and each is written whole once complete.
    fn send_stream(&self, data: &[u8]) -> Result<(), Failure> {
        let mut assembler = self.assembler();
        assembler.push(data);
        let mut first = None;
        let mut more = 0usize;
        while let Some(next) = assembler.next_frame() {
            if let Err(error) = next.and_then(|frame| self.conn.send(&frame)) {
                if first.is_none() {
                    first = Some(error);
                } else {
                    more += 1;
                }
            }
        }
        match first {
            None => Ok(()),
            Some(error) => {
                let mut failure = Failure::from(error);
                if more > 0 {
                    failure.message += &format!(" (and {more} more frames of this call failed)");
                }
                Err(failure)
            }
        }
    }

    /// The assembler; after a panic mid-update its content is unknown, so a
    /// poisoned one starts afresh.
    fn assembler(&self) -> MutexGuard<'_, FrameAssembler> {
        self.assembler.lock().unwrap_or_else(|poisoned| {
            self.assembler.clear_poison();
            let mut guard = poisoned.into_inner();
            *guard = FrameAssembler::new(self.conn.config().max_frame);
            guard
        })
    }
}

thread_local! {
    /// `intc_fetch`'s cache: per thread, so two threads never share a socket.
    static FETCHED: RefCell<HashMap<PathBuf, Box<IntcCli>>> = RefCell::new(HashMap::new());
}

/// A handle from a pointer given by C.
///
/// # Safety
///
/// `cli` must be NULL or a handle from `intc_fetch` / `intc_cli_new` that
/// has not been released (`intc_dispose` on its thread, `intc_cli_free`).
pub(crate) unsafe fn cli_ref<'a>(cli: *const IntcCli) -> Result<&'a IntcCli, Failure> {
    // SAFETY: the caller guarantees a live handle or NULL; `as_ref` maps
    // NULL to None. Handles are only ever accessed through shared refs.
    unsafe { cli.as_ref() }.ok_or_else(|| Failure::arg("`cli` is NULL"))
}

fn path_arg(raw: &[u8]) -> Result<&Path, Failure> {
    if raw.is_empty() {
        return Err(Failure::arg("the socket path is empty"));
    }
    Ok(Path::new(OsStr::from_bytes(raw)))
}

/// Returns the calling thread's client for the proxy socket `us_path`,
/// creating it on first use (the connection itself opens on the first send).
///
/// The cache is per thread: the same thread always gets the same handle for
/// a path, two threads never share one (nor a socket). Use a handle only on
/// the thread that fetched it. It stays valid until `intc_dispose()` is
/// called on that thread, or the thread exits; never free it with
/// `intc_cli_free`.
///
/// Returns NULL when `us_path` is NULL, empty or too long for a unix socket
/// address (see `intc_last_error`). Nothing is connected here, so a proxy
/// that is down is reported by the first send, not by this call.
///
/// # Safety
///
/// `us_path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn intc_fetch(us_path: *const c_char) -> *mut IntcCli {
    call_ptr("intc_fetch", || {
        // SAFETY: NULL or NUL-terminated, per this function's contract.
        let path = path_arg(unsafe { args::c_bytes("us_path", us_path) }?)?;
        FETCHED.with(|cache| {
            let mut cache = cache
                .try_borrow_mut()
                .map_err(|_| Failure::arg("intc_fetch re-entered on this thread"))?;
            if let Some(cli) = cache.get(path) {
                return Ok(&**cli as *const IntcCli as *mut IntcCli);
            }
            let cli = Box::new(IntcCli::new(path, false)?);
            // The Box keeps the handle at a stable address while cached.
            let ptr = &*cli as *const IntcCli as *mut IntcCli;
            cache.insert(path.to_owned(), cli);
            Ok(ptr)
        })
    })
}

/// Writes bytes of the frame stream to the proxy, as in the seed: the caller
/// sends `[u32 little-endian length][payload]` frames, in as many calls as
/// it likes (the seed sends the 4-byte prefix and the payload separately).
///
/// Bytes are gathered inside the handle and each frame is written to the
/// socket whole, once complete and checked (the same check the server
/// makes), so a frame is never interleaved with another and a broken frame
/// is reported here rather than dropped far away. A call that completes no
/// frame only buffers and returns INTC_OK.
///
/// Errors (the first one of the call; the others are counted in the
/// message): INTC_ERR_ARG (NULL `cli`, NULL `buf` with `len > 0`),
/// INTC_ERR_UNAVAILABLE (proxy down; the frame is dropped),
/// INTC_ERR_IO (write failed; the frame is dropped, the connection too),
/// INTC_ERR_TOO_LARGE (a length prefix above 64 MiB: the payload bytes
/// that follow it are discarded as they arrive, keeping the stream in step),
/// INTC_ERR_FRAME / INTC_ERR_BSON (the payload is not a valid frame; it is
/// dropped). Thread-safe, though a stream split over calls only makes sense
/// from one thread.
///
/// # Safety
///
/// `cli` must be a live handle or NULL; `buf` must point to `len` readable
/// bytes (or be NULL with `len == 0`).
#[no_mangle]
pub unsafe extern "C" fn intc_send(cli: *mut IntcCli, buf: *const u8, len: usize) -> c_int {
    call("intc_send", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        // SAFETY: `len` readable bytes at `buf`, per this function's contract.
        let data = unsafe { args::bytes("buf", buf, len) }?;
        cli.send_stream(data)
    })
}

/// Frees every client `intc_fetch` made on the calling thread and closes
/// their sockets, writing what they buffered first (its errors are lost:
/// call `intc_flush` before to see them); a frame half given to
/// `intc_send` is discarded. Handles
/// fetched on this thread must not be used afterwards (fetch again). Clients
/// of other threads and those of `intc_cli_new` are not touched.
#[no_mangle]
pub extern "C" fn intc_dispose() {
    call_void("intc_dispose", || {
        let taken = FETCHED
            .try_with(|cache| cache.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)))
            .ok()
            .and_then(Result::ok);
        drop(taken);
    });
}

/// Makes a client for the proxy socket `us_path` that the caller owns and
/// frees with `intc_cli_free`. Unlike `intc_fetch` handles, it may be shared
/// by threads: sends are serialised, whole frames never interleave.
///
/// Returns NULL when `us_path` is NULL, empty or not a usable unix socket
/// path (see `intc_last_error`). Nothing is connected until the first send.
///
/// # Safety
///
/// `us_path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_new(us_path: *const c_char) -> *mut IntcCli {
    call_ptr("intc_cli_new", || {
        // SAFETY: NULL or NUL-terminated, per this function's contract.
        let path = path_arg(unsafe { args::c_bytes("us_path", us_path) }?)?;
        Ok(Box::into_raw(Box::new(IntcCli::new(path, true)?)))
    })
}

/// Frees a client made by `intc_cli_new` and closes its socket, writing
/// what it buffered first (its errors are lost: call `intc_flush` before
/// to see them). NULL is ignored; so is a handle from `intc_fetch` (those belong to the cache:
/// see `intc_dispose`).
///
/// # Safety
///
/// `cli` must be NULL or a live handle, not used after this call when it
/// came from `intc_cli_new`, and not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_free(cli: *mut IntcCli) {
    call_void("intc_cli_free", || {
        // SAFETY: NULL or a live handle, per this function's contract.
        let owned = unsafe { cli.as_ref() }.is_some_and(|c| c.owned);
        if owned {
            // SAFETY: an owned handle came from Box::into_raw in
            // intc_cli_new and the caller gives it back exactly once.
            drop(unsafe { Box::from_raw(cli) });
        }
    });
}

/// Sets the send timeout of `cli` in milliseconds (default 1000): a send
/// fails with INTC_ERR_IO when the proxy takes no bytes for that long, and a
/// connect with INTC_ERR_UNAVAILABLE when the proxy's backlog stays full
/// that long. 0 means wait forever. Applies to the open connection too.
///
/// Errors: INTC_ERR_ARG (NULL `cli`). Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_set_send_timeout(cli: *mut IntcCli, timeout_ms: u32) -> c_int {
    call("intc_cli_set_send_timeout", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        Ok(cli.conn.set_send_timeout(timeout)?)
    })
}

/// Waits until the proxy confirms that every frame sent on `cli` is in its
/// spool (durable per the proxy's `--fsync`), for at most `timeout_ms`
/// milliseconds. On INTC_OK, `*refused` (if not NULL) is how many of those
/// frames the proxy refused (bad frames, spool full); 0 means all were
/// accepted.
///
/// Errors: INTC_ERR_ARG (NULL `cli`, zero timeout), INTC_ERR_UNAVAILABLE
/// (proxy not reachable), INTC_ERR_IO (no answer in time, the connection
/// broke, or frames went out on a connection that broke before they were
/// confirmed: they may or may not have arrived). Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle; `refused` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn intc_sync(cli: *mut IntcCli, timeout_ms: u32, refused: *mut u32) -> c_int {
    call("intc_sync", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        if timeout_ms == 0 {
            return Err(Failure::arg("`timeout_ms` must be above zero"));
        }
        let n = cli
            .conn
            .sync(Duration::from_millis(u64::from(timeout_ms)))?;
        // SAFETY: NULL or a valid, writable, aligned uint32_t.
        if let Some(out) = unsafe { refused.as_mut() } {
            *out = n;
        }
        Ok(())
    })
}

/// Copies the counters of `cli` into `*out`.
///
/// Errors: INTC_ERR_ARG (NULL `cli` or `out`). Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_stats(cli: *const IntcCli, out: *mut IntcStats) -> c_int {
    call("intc_cli_stats", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        // SAFETY: NULL or a valid, writable, aligned intc_stats_t.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::arg("`out` is NULL"))?;
        let s = cli.conn.stats();
        *out = IntcStats {
            frames: s.frames,
            bytes: s.bytes,
            errors: s.errors,
            connects: s.connects,
            reconnects: s.reconnects,
            buffered: s.buffered,
            pending: s.pending,
            flushes: s.flushes,
            dropped: s.dropped,
        };
        Ok(())
    })
}

/// Sets how `cli` connects when it has no connection: `timeout_ms` 0 (the
/// default) fails fast, INTC_ERR_UNAVAILABLE at once when the proxy's
/// socket is missing or refuses; above 0, the call retries (2 ms backoff
/// doubling to 100 ms) until the proxy is up or `timeout_ms` have passed,
/// then returns INTC_ERR_UNAVAILABLE. Never waits longer. While it waits,
/// other threads' calls on the same handle wait too.
///
/// Errors: INTC_ERR_ARG (NULL `cli`). Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_set_connect_timeout(cli: *mut IntcCli, timeout_ms: u32) -> c_int {
    call("intc_cli_set_connect_timeout", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        Ok(cli.conn.set_connect_timeout(timeout)?)
    })
}

/// Turns buffering on for `cli` (`size` > 0) or off (`size` 0): frames are
/// gathered and written several per write(2), so a send returns INTC_OK
/// once its frame is **buffered**, not written. The buffer is written when
/// it reaches `size` bytes (a frame of `size` bytes or more is written
/// directly, after it), when its oldest frame has waited `linger_us`
/// microseconds (a background thread of the library sees to it), by
/// `intc_flush`, before `intc_sync`, by `intc_cli_free` / `intc_dispose`,
/// and by `intc_flush_all` (see `intc_atexit_flush`). Frames are never
/// split or interleaved. Suggested: `INTC_DEFAULT_BUFFER_SIZE`,
/// `INTC_DEFAULT_LINGER_US`.
///
/// Buffered frames are lost if the process dies first (crash, `_exit`,
/// a signal) and are not sent by a child after fork() (the child drops its
/// parent's buffer). A write that fails drops the buffer: the call that
/// made it returns the error; for the background thread, the next
/// `intc_flush` returns INTC_ERR_IO and the next `intc_sync` fails.
///
/// Turning buffering off, or changing it, writes what is buffered first
/// (its error is returned; the new setting is in force anyway).
///
/// Errors: INTC_ERR_ARG (NULL `cli`, `linger_us` 0 or above 10 s with
/// `size` > 0), INTC_ERR_UNAVAILABLE / INTC_ERR_IO (writing what was
/// buffered failed). Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn intc_cli_set_buffering(
    cli: *mut IntcCli,
    size: usize,
    linger_us: u32,
) -> c_int {
    call("intc_cli_set_buffering", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        let buffering = (size > 0).then(|| Buffering {
            size,
            linger: Duration::from_micros(u64::from(linger_us)),
        });
        Ok(cli.conn.set_buffering(buffering)?)
    })
}

/// Writes the frames buffered on `cli` now (INTC_OK at once when nothing is
/// buffered, or buffering is off).
///
/// Errors: INTC_ERR_ARG (NULL `cli`), INTC_ERR_UNAVAILABLE / INTC_ERR_IO
/// (the write failed: those frames are dropped), INTC_ERR_IO also when the
/// background thread's write failed since the last call (reported once).
/// Thread-safe.
///
/// # Safety
///
/// `cli` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn intc_flush(cli: *mut IntcCli) -> c_int {
    call("intc_flush", || {
        // SAFETY: live handle or NULL, per this function's contract.
        let cli = unsafe { cli_ref(cli) }?;
        Ok(cli.conn.flush()?)
    })
}

/// Writes the buffered frames of every handle of the process that buffers
/// (those of `intc_cli_new` and every thread's `intc_fetch` handles).
/// Frames a parent process buffered before fork() are never written by the
/// child. Returns the first error after trying every handle. Thread-safe.
#[no_mangle]
pub extern "C" fn intc_flush_all() -> c_int {
    call("intc_flush_all", || Ok(intc_client::flush_all()?))
}

extern "C" fn flush_at_exit() {
    intc_flush_all();
}

/// Registers `intc_flush_all` with atexit(3), once per process (later
/// calls do nothing): buffered frames are then written when the program
/// returns from main() or calls exit(). Not on `_exit`, a crash or a fatal
/// signal. Do not use it in a library that may be dlclose()d before exit.
/// Without it, call `intc_flush` / `intc_cli_free` / `intc_dispose` before
/// exiting; `intc_fetch` handles of the thread that calls exit() are
/// flushed anyway when its thread-locals are destroyed.
///
/// Errors: INTC_ERR_IO (atexit refused, out of memory). Thread-safe.
#[no_mangle]
pub extern "C" fn intc_atexit_flush() -> c_int {
    static REGISTERED: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    call("intc_atexit_flush", || {
        // SAFETY: `flush_at_exit` is an `extern "C" fn()` that lives as long
        // as the library, catches panics (`call`) and takes no locks at the
        // time of registration; atexit only records the pointer.
        let rc = *REGISTERED.get_or_init(|| unsafe { libc::atexit(flush_at_exit) });
        if rc != 0 {
            return Err(Failure {
                code: crate::error::intc_result::INTC_ERR_IO,
                message: "atexit() refused to register the flush".into(),
            });
        }
        Ok(())
    })
}
