//! Result codes, the per-thread last error message, and the panic boundary
//! every `extern "C"` function goes through.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use intc_client::ClientError;

/// Result codes of the intc functions that return `int`.
///
/// `INTC_OK` is 0 and every error is negative, so `if (rc < 0)` and
/// `if (rc != INTC_OK)` both test for failure. `intc_last_error()` gives the
/// message with the details.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum intc_result {
    /// Success.
    INTC_OK = 0,
    /// A bad argument: NULL pointer, non-UTF-8 name, empty command or
    /// transaction, empty or too long socket path.
    INTC_ERR_ARG = -1,
    /// The proxy is down: connecting to its socket failed. Returned at once;
    /// the next call tries to connect again.
    INTC_ERR_UNAVAILABLE = -2,
    /// Writing to the proxy failed (it went away, or took no bytes for the
    /// send timeout). The connection was dropped; the next call reconnects.
    INTC_ERR_IO = -3,
    /// The frame's payload is larger than the limit (64 MiB by default).
    INTC_ERR_TOO_LARGE = -4,
    /// A BSON document given is invalid, or the write description is not one
    /// the server accepts.
    INTC_ERR_BSON = -5,
    /// The bytes given to `intc_send` are not a valid syncs frame (bad Redis
    /// header or RESP, a refused command such as MULTI, unknown kind).
    INTC_ERR_FRAME = -6,
    /// A bug inside the library (a Rust panic, caught at the boundary).
    INTC_ERR_PANIC = -7,
}

/// A failure on its way to C: a code and a message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: intc_result,
    pub message: String,
}

impl Failure {
    pub fn arg(message: impl Into<String>) -> Self {
        Failure {
            code: intc_result::INTC_ERR_ARG,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::Unavailable { .. } => intc_result::INTC_ERR_UNAVAILABLE,
            ClientError::Io { .. } | ClientError::Unconfirmed { .. } => intc_result::INTC_ERR_IO,
            ClientError::TooLarge { .. } => intc_result::INTC_ERR_TOO_LARGE,
            e if e.is_bson() => intc_result::INTC_ERR_BSON,
            ClientError::Frame(_) => intc_result::INTC_ERR_FRAME,
            _ => intc_result::INTC_ERR_ARG,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    // `try_with`: during thread teardown the slot may be gone; the message
    // is then dropped rather than panicking.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// Runs on every call: only touches the slot when it holds a message.
fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            if !slot.is_empty() {
                *slot = String::new();
            }
        }
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs the body of an `int`-returning function: clears the last error,
/// catches panics, records the failure message prefixed by `name`.
pub(crate) fn call(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    clear_last_error();
    let code = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => intc_result::INTC_OK,
        Ok(Err(failure)) => {
            set_last_error(format!("{name}: {}", failure.message));
            failure.code
        }
        Err(payload) => {
            set_last_error(format!(
                "{name}: internal error (panic): {}",
                panic_message(payload.as_ref())
            ));
            intc_result::INTC_ERR_PANIC
        }
    };
    code as c_int
}

/// Runs the body of a pointer-returning function: NULL on failure, with the
/// message recorded as for [`call`].
pub(crate) fn call_ptr<T>(name: &str, body: impl FnOnce() -> Result<*mut T, Failure>) -> *mut T {
    let mut out = ptr::null_mut();
    let rc = call(name, || {
        out = body()?;
        Ok(())
    });
    if rc == intc_result::INTC_OK as c_int {
        out
    } else {
        ptr::null_mut()
    }
}

/// Runs a body that cannot report an error (`void` functions), still
/// behind the panic boundary.
pub(crate) fn call_void(name: &str, body: impl FnOnce()) {
    call(name, || {
        body();
        Ok(())
    });
}

/// A short, static description of a result code.
///
/// Returns a NUL-terminated string that lives as long as the program (never
/// free it); an unknown code gives "unknown intc result code". Thread-safe.
#[no_mangle]
pub extern "C" fn intc_strerror(code: c_int) -> *const c_char {
    catch_unwind(|| strerror(code))
        .unwrap_or(c"unknown intc result code")
        .as_ptr()
}

fn strerror(code: c_int) -> &'static CStr {
    match code {
        c if c == intc_result::INTC_OK as c_int => c"success",
        c if c == intc_result::INTC_ERR_ARG as c_int => c"invalid argument",
        c if c == intc_result::INTC_ERR_UNAVAILABLE as c_int => {
            c"proxy unavailable (cannot connect to its unix socket)"
        }
        c if c == intc_result::INTC_ERR_IO as c_int => {
            c"write to the proxy failed (connection dropped, the next call reconnects)"
        }
        c if c == intc_result::INTC_ERR_TOO_LARGE as c_int => c"frame too large",
        c if c == intc_result::INTC_ERR_BSON as c_int => c"invalid BSON or Mongo write",
        c if c == intc_result::INTC_ERR_FRAME as c_int => c"invalid frame",
        c if c == intc_result::INTC_ERR_PANIC as c_int => c"internal error (panic) in libintc",
        _ => c"unknown intc result code",
    }
}

/// Copies the calling thread's last error message into `buf`.
///
/// The message belongs to the last intc call made on this thread: it is
/// empty after a call that succeeded. At most `len - 1` bytes are copied and
/// `buf` is always NUL-terminated when `len > 0`. Returns the full length of
/// the message (without the NUL), as `snprintf` does: a return value
/// `>= len` means the copy was truncated. `buf` may be NULL when `len` is 0,
/// to ask for the length. Thread-safe (each thread has its own message).
///
/// # Safety
///
/// `buf` must be NULL or point to at least `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn intc_last_error(buf: *mut c_char, len: usize) -> usize {
    let result = catch_unwind(|| {
        let message = LAST_ERROR
            .try_with(|slot| slot.try_borrow().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default();
        if !buf.is_null() && len > 0 {
            let n = message.len().min(len - 1);
            // SAFETY: the caller guarantees `buf` has `len` writable bytes;
            // we write `n + 1 <= len` of them, from a distinct allocation.
            unsafe {
                ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        message.len()
    });
    result.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_texts_and_messages_are_per_call() {
        for code in [0, -1, -2, -3, -4, -5, -6, -7] {
            // SAFETY: intc_strerror returns a static NUL-terminated string.
            let text = unsafe { CStr::from_ptr(intc_strerror(code)) };
            assert_ne!(text.to_bytes(), b"unknown intc result code", "{code}");
        }
        let rc = call("f", || Err(Failure::arg("bad thing")));
        assert_eq!(rc, intc_result::INTC_ERR_ARG as c_int);
        let mut buf = [0 as c_char; 8];
        // SAFETY: buf has 8 writable bytes.
        let n = unsafe { intc_last_error(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, "f: bad thing".len());
        // SAFETY: intc_last_error NUL-terminated buf.
        let copied = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(copied.to_bytes(), b"f: bad ", "7 bytes and the NUL");
        assert_eq!(call("f", || Ok(())), 0);
        // SAFETY: NULL with len 0 only asks for the length.
        assert_eq!(unsafe { intc_last_error(ptr::null_mut(), 0) }, 0);
    }

    #[test]
    fn panics_become_a_code() {
        let rc = call("g", || panic!("boom"));
        assert_eq!(rc, intc_result::INTC_ERR_PANIC as c_int);
        let mut buf = [0 as c_char; 64];
        // SAFETY: buf has 64 writable bytes.
        unsafe { intc_last_error(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated by intc_last_error.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        assert!(text.contains("g: internal error (panic): boom"), "{text}");
        let p: *mut u8 = call_ptr("h", || panic!("again"));
        assert!(p.is_null());
    }
}
