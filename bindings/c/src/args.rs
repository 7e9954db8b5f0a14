//! Reading C arguments: every pointer is checked for NULL and every length
//! for sense before a slice or string is made from it.

use std::ffi::{c_char, c_int, CStr};

use crate::error::Failure;

/// Bytes from `(ptr, len)`; NULL is allowed only with `len == 0`.
///
/// # Safety
///
/// When non-NULL, `ptr` must point to `len` readable bytes that stay valid
/// and unmodified for `'a`.
pub(crate) unsafe fn bytes<'a>(
    what: &str,
    ptr: *const u8,
    len: usize,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::arg(format!(
                "`{what}` is NULL but its length is {len}"
            )))
        };
    }
    if len > isize::MAX as usize {
        return Err(Failure::arg(format!(
            "`{what}` length {len} is not possible"
        )));
    }
    // SAFETY: non-NULL, length checked against isize::MAX; the caller
    // guarantees `len` readable bytes valid for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated string's bytes (no UTF-8 requirement).
///
/// # Safety
///
/// When non-NULL, `ptr` must point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_bytes<'a>(what: &str, ptr: *const c_char) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::arg(format!("`{what}` is NULL")));
    }
    // SAFETY: non-NULL; the caller guarantees NUL termination and lifetime.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
///
/// As for [`c_bytes`].
pub(crate) unsafe fn c_str<'a>(what: &str, ptr: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: forwarded contract.
    let raw = unsafe { c_bytes(what, ptr) }?;
    std::str::from_utf8(raw).map_err(|e| Failure::arg(format!("`{what}` is not UTF-8: {e}")))
}

/// Arguments held on the stack up to this many (a heap vector beyond).
const INLINE_ARGS: usize = 8;

/// Calls `body` with the arguments of one Redis command in hiredis
/// `redisCommandArgv` style: `argc` pointers in `argv`, lengths in
/// `argvlen` (NULL: each argument is a NUL-terminated string). Up to
/// [`INLINE_ARGS`] argument slices are held on the stack: no allocation per
/// call for the usual commands.
///
/// # Safety
///
/// `argv` must point to `argc` pointers; each to `argvlen[i]` readable bytes
/// (or a NUL-terminated string when `argvlen` is NULL); `argvlen`, when not
/// NULL, to `argc` lengths; all valid for the duration of the call.
pub(crate) unsafe fn with_argv<R>(
    argc: c_int,
    argv: *const *const c_char,
    argvlen: *const usize,
    body: impl FnOnce(&[&[u8]]) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let count = usize::try_from(argc)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Failure::arg(format!("argc is {argc}: a command needs at least its name"))
        })?;
    // SAFETY: the caller guarantees `argc` pointers at `argv`.
    let pointers = unsafe { slice_of::<*const c_char>("argv", argv, count) }?;
    let lengths = if argvlen.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees `argc` lengths at `argvlen`.
        Some(unsafe { slice_of::<usize>("argvlen", argvlen, count) }?)
    };
    let arg = |i: usize, ptr: *const c_char| {
        let arg = match lengths.and_then(|l| l.get(i)) {
            // SAFETY: the caller guarantees argv[i] has argvlen[i] bytes.
            Some(&len) => unsafe { bytes("argv[]", ptr.cast::<u8>(), len) },
            // SAFETY: without argvlen, argv[i] is a NUL-terminated string.
            None => unsafe { c_bytes("argv[]", ptr) },
        };
        // The index goes into the message only on failure: no string is
        // formatted per argument on the hot path.
        arg.map_err(|mut failure| {
            failure.message = failure
                .message
                .replacen("`argv[]`", &format!("`argv[{i}]`"), 1);
            failure
        })
    };
    if count <= INLINE_ARGS {
        let mut inline: [&[u8]; INLINE_ARGS] = [&[]; INLINE_ARGS];
        for ((i, &ptr), slot) in pointers.iter().enumerate().zip(inline.iter_mut()) {
            *slot = arg(i, ptr)?;
        }
        body(inline.get(..count).unwrap_or_default())
    } else {
        let args = pointers
            .iter()
            .enumerate()
            .map(|(i, &ptr)| arg(i, ptr))
            .collect::<Result<Vec<_>, _>>()?;
        body(&args)
    }
}

/// `count` values of `T` at `ptr` (not NULL, aligned).
///
/// # Safety
///
/// `ptr` must be NULL or point to `count` initialised values valid for `'a`.
pub(crate) unsafe fn slice_of<'a, T>(
    what: &str,
    ptr: *const T,
    count: usize,
) -> Result<&'a [T], Failure> {
    if ptr.is_null() {
        return Err(Failure::arg(format!("`{what}` is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(Failure::arg(format!(
            "`{what}` is not aligned for its type"
        )));
    }
    if count
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|n| n > isize::MAX as usize)
    {
        return Err(Failure::arg(format!(
            "`{what}` count {count} is not possible"
        )));
    }
    // SAFETY: non-NULL, size checked; the caller guarantees `count` values.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}
