//! RESP2 replies: what a Redis server answers.
//!
//! The appliers read their replies with this parser rather than a client
//! library's, because Redis does not promise UTF-8 anywhere: an error line
//! echoes the command name or an argument as raw bytes
//! (`-ERR unknown command '\xff'`), and a parser that insists on UTF-8 turns
//! a refused record into a broken connection. Here every line is bytes.
//!
//! Lengths are checked against the bytes present before anything is
//! allocated, so a forged length cannot make us reserve memory; nesting is
//! bounded.

use bytes::{Buf, Bytes, BytesMut};

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+<line>`
    Status(Bytes),
    /// `-<line>`: the first word is the error code.
    Error(Bytes),
    /// `:<n>`
    Int(i64),
    /// `$<len>` (`None`: `$-1`)
    Bulk(Option<Bytes>),
    /// `*<n>` (`None`: `*-1`, e.g. an EXEC aborted by WATCH)
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The error line when this is an error reply.
    pub fn as_error(&self) -> Option<&[u8]> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// The first word of an error line (`WRONGTYPE`, `ERR`, `EXECABORT`, ...).
pub fn error_code(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b' ').next().unwrap_or_default()
}

/// The bytes as text: valid UTF-8 as it is, every other byte as `\xNN`,
/// a backslash as `\\`. Lossless, so a reason in a log or in the dead-letter
/// file shows exactly what Redis said.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why the bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("bad reply from Redis at byte {offset}: {what}")]
    Syntax { offset: usize, what: &'static str },
    #[error("bad reply from Redis: nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Arrays nested deeper than this are refused.
pub const MAX_DEPTH: usize = 32;
/// The longest bulk string Redis sends (`proto-max-bulk-len` at most 512 MiB
/// by default; a larger configured value is still refused here).
const MAX_BULK: i64 = 1 << 31;

/// The replies a run gets by the thousand (`+QUEUED` per command in its
/// MULTI, `+OK` per SET in its EXEC array): recognised by their bytes
/// before any scanning, in [`measure`] and in [`build`] (scanning each line
/// twice was ~500 instructions of the server's per SET).
const QUEUED: &[u8] = b"+QUEUED\r\n";
const OK: &[u8] = b"+OK\r\n";

/// Reads one reply from the front of `buf` and removes its bytes.
/// `Ok(None)`: the reply is not complete yet (nothing is removed).
pub fn take_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
    let Some(len) = measure(buf, 0, 0)? else {
        return Ok(None);
    };
    let mut at = 0;
    let reply = build(&buf[..len], &mut at);
    buf.advance(len);
    Ok(Some(reply))
}

/// Removes the `+QUEUED` replies at the front of `buf`, `max` at most,
/// and says how many there were: a run's thousands of them are only
/// counted, never built.
pub fn skip_queued(buf: &mut BytesMut, max: usize) -> usize {
    let mut n = 0;
    let mut at = 0;
    while n < max && buf[at..].starts_with(QUEUED) {
        at += QUEUED.len();
        n += 1;
    }
    buf.advance(at);
    n
}

/// An EXEC's reply as a run needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecReply {
    /// The transaction ran: how many results it had, and the error
    /// replies among them by position (their lines, as [`Reply::Error`]
    /// holds them). The other results are not kept.
    Ran {
        results: usize,
        errors: Vec<(usize, Bytes)>,
    },
    /// Anything but an array: an error (`EXECABORT`), or nil (`*-1`, an
    /// EXEC that WATCH aborted).
    Other(Reply),
}

/// Reads an EXEC reply from the front of `buf` and removes its bytes, as
/// [`take_reply`] does, without building the results that are not errors:
/// thousands of `+OK` after the target has finished a run, each built and
/// dropped, kept it waiting for the next run. `Ok(None)`: not complete yet
/// (nothing is removed).
pub fn take_exec(buf: &mut BytesMut) -> Result<Option<ExecReply>, ReplyError> {
    if buf.first() != Some(&b'*') {
        return Ok(take_reply(buf)?.map(ExecReply::Other));
    }
    let Some(end) = line_end(buf, 1) else {
        return Ok(None);
    };
    let Ok(results) = usize::try_from(number(buf, 0, end)?) else {
        // `*-1`
        return Ok(take_reply(buf)?.map(ExecReply::Other));
    };
    let mut at = end + 2;
    let mut errors = Vec::new();
    // Each result takes 3 bytes at least: a forged count ends the loop
    // with the bytes present.
    for i in 0..results {
        if buf[at..].starts_with(OK) {
            at += OK.len();
            continue;
        }
        let Some(next) = measure(buf, at, 1)? else {
            return Ok(None);
        };
        if buf[at] == b'-' {
            errors.push((i, Bytes::copy_from_slice(&buf[at + 1..next - 2])));
        }
        at = next;
    }
    buf.advance(at);
    Ok(Some(ExecReply::Ran { results, errors }))
}

/// The length of the complete reply at `at`, `None` if incomplete.
fn measure(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, ReplyError> {
    if depth > MAX_DEPTH {
        return Err(ReplyError::TooDeep);
    }
    let rest = buf.get(at..).unwrap_or_default();
    for common in [OK, QUEUED] {
        if rest.starts_with(common) {
            return Ok(Some(at + common.len()));
        }
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let after = end + 2;
    match kind {
        b'+' | b'-' => Ok(Some(after)),
        b':' => number(buf, at, end).map(|_| Some(after)),
        b'$' => {
            let n = number(buf, at, end)?;
            if n < 0 {
                return Ok(Some(after));
            }
            if n > MAX_BULK {
                return Err(ReplyError::Syntax {
                    offset: at,
                    what: "bulk length too large",
                });
            }
            let stop = after + n as usize;
            match buf.get(stop..stop + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(stop + 2)),
                Some(_) => Err(ReplyError::Syntax {
                    offset: stop,
                    what: "bulk string not followed by CRLF",
                }),
            }
        }
        b'*' => {
            let n = number(buf, at, end)?;
            let mut pos = after;
            for _ in 0..n.max(0) {
                match measure(buf, pos, depth + 1)? {
                    Some(p) => pos = p,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(ReplyError::Syntax {
            offset: at,
            what: "unknown reply type",
        }),
    }
}

/// Builds the reply `measure` accepted at `*at` in `buf`, and moves `at`
/// past it. Reads in place: only what a reply keeps is copied (an error
/// line, a bulk string), and the statuses a run gets by the thousand are
/// static, so the thousands of `+QUEUED` and `+OK` of a run allocate
/// nothing and touch no reference count.
fn build(buf: &[u8], at: &mut usize) -> Reply {
    let rest = buf.get(*at..).unwrap_or_default();
    for (common, status) in [(OK, "OK"), (QUEUED, "QUEUED")] {
        if rest.starts_with(common) {
            *at += common.len();
            return Reply::Status(Bytes::from_static(status.as_bytes()));
        }
    }
    let Some(&kind) = buf.get(*at) else {
        return Reply::Bulk(None);
    };
    let start = *at + 1;
    let end = line_end(buf, start).unwrap_or(buf.len());
    let line = buf.get(start..end).unwrap_or_default();
    *at = (end + 2).min(buf.len());
    match kind {
        b'+' => Reply::Status(Bytes::copy_from_slice(line)),
        b'-' => Reply::Error(Bytes::copy_from_slice(line)),
        b':' => Reply::Int(parse_int(line).unwrap_or(0)),
        b'$' => match parse_int(line).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => {
                let bulk = buf.get(*at..).unwrap_or_default();
                let bulk = &bulk[..n.min(bulk.len())];
                *at = (*at + bulk.len() + 2).min(buf.len());
                Reply::Bulk(Some(Bytes::copy_from_slice(bulk)))
            }
            None => Reply::Bulk(None),
        },
        _ => match parse_int(line).and_then(|n| usize::try_from(n).ok()) {
            // `measure` saw every element; each takes 3 bytes at least.
            Some(n) => Reply::Array(Some(
                (0..n.min(buf.len() / 3)).map(|_| build(buf, at)).collect(),
            )),
            None => Reply::Array(None),
        },
    }
}

/// Index of the `\r\n` at or after `from`: each `\r`, then the byte
/// after it (not every pair of bytes).
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let cr = at + buf.get(at..)?.iter().position(|&b| b == b'\r')?;
        if buf.get(cr + 1) == Some(&b'\n') {
            return Some(cr);
        }
        at = cr + 1;
    }
}

fn number(buf: &[u8], at: usize, end: usize) -> Result<i64, ReplyError> {
    parse_int(&buf[at + 1..end]).ok_or(ReplyError::Syntax {
        offset: at,
        what: "expected a decimal number",
    })
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let mut buf = BytesMut::from(bytes);
        let r = take_reply(&mut buf);
        if let Ok(Some(_)) = r {
            assert!(buf.is_empty(), "left: {buf:?}");
        }
        r
    }

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn common_statuses_read_as_any_status() {
        let status = |s: &[u8]| Ok(Some(Reply::Status(b(s))));
        assert_eq!(one(b"+OK\r\n"), status(b"OK"));
        assert_eq!(one(b"+QUEUED\r\n"), status(b"QUEUED"));
        assert_eq!(one(b"+OKAY\r\n"), status(b"OKAY"));
        assert_eq!(one(b"+QUEUE\r\n"), status(b"QUEUE"));
        assert_eq!(one(b"+OK\rX\r\n"), status(b"OK\rX"));
        assert_eq!(one(b"+OK\r"), Ok(None));
        assert_eq!(one(b"+QUEUED"), Ok(None));
        assert_eq!(
            one(b"*4\r\n+OK\r\n+QUEUED\r\n:1\r\n+OKAY\r\n"),
            Ok(Some(Reply::Array(Some(vec![
                Reply::Status(b(b"OK")),
                Reply::Status(b(b"QUEUED")),
                Reply::Int(1),
                Reply::Status(b(b"OKAY")),
            ]))))
        );
        assert_eq!(one(b"*2\r\n+OK\r\n+OK\r"), Ok(None));
    }

    #[test]
    fn every_type() {
        assert_eq!(one(b"+OK\r\n"), Ok(Some(Reply::Status(b(b"OK")))));
        assert_eq!(one(b":-12\r\n"), Ok(Some(Reply::Int(-12))));
        assert_eq!(
            one(b"$3\r\na\r\n\r\n"),
            Ok(Some(Reply::Bulk(Some(b(b"a\r\n")))))
        );
        assert_eq!(one(b"$-1\r\n"), Ok(Some(Reply::Bulk(None))));
        assert_eq!(one(b"*-1\r\n"), Ok(Some(Reply::Array(None))));
        assert_eq!(
            one(b"*3\r\n+QUEUED\r\n-ERR x\r\n*1\r\n:1\r\n"),
            Ok(Some(Reply::Array(Some(vec![
                Reply::Status(b(b"QUEUED")),
                Reply::Error(b(b"ERR x")),
                Reply::Array(Some(vec![Reply::Int(1)])),
            ]))))
        );
    }

    #[test]
    fn error_lines_are_bytes() {
        let r = one(b"-ERR unknown command 'foo\xff\xfe'\r\n");
        let Ok(Some(Reply::Error(line))) = r else {
            panic!("{r:?}")
        };
        assert_eq!(error_code(&line), b"ERR");
        assert_eq!(escape(&line), "ERR unknown command 'foo\\xff\\xfe'");
        assert_eq!(escape("中文\\\n".as_bytes()), "中文\\\\\\x0a");
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let full = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(take_reply(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn replies_one_after_another() {
        let mut buf = BytesMut::from(&b"+OK\r\n+QUEUED\r\n:3"[..]);
        assert_eq!(take_reply(&mut buf), Ok(Some(Reply::Status(b(b"OK")))));
        assert_eq!(take_reply(&mut buf), Ok(Some(Reply::Status(b(b"QUEUED")))));
        assert_eq!(take_reply(&mut buf), Ok(None));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(take_reply(&mut buf), Ok(Some(Reply::Int(3))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b":x\r\n",
            b"$2\r\nabcd\r\n",
            b"*x\r\n",
            b"$99999999999\r\n",
        ] {
            assert!(
                matches!(one(bad), Err(ReplyError::Syntax { .. })),
                "{bad:?}"
            );
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(one(deep.as_bytes()), Err(ReplyError::TooDeep));
    }

    #[test]
    fn a_forged_array_count_reserves_nothing() {
        // A huge count with few bytes behind it is incomplete, not an
        // allocation.
        assert_eq!(one(b"*4000000000\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn queued_replies_are_counted_up_to_the_limit() {
        let mut buf = BytesMut::from(&b"+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n-ERR x\r\n+QUEUED"[..]);
        assert_eq!(skip_queued(&mut buf, 2), 2);
        assert_eq!(skip_queued(&mut buf, 5), 1);
        // An error, then a `+QUEUED` not complete: neither is skipped.
        assert_eq!(skip_queued(&mut buf, 5), 0);
        assert_eq!(take_reply(&mut buf), Ok(Some(Reply::Error(b(b"ERR x")))));
        assert_eq!(skip_queued(&mut buf, 5), 0);
        assert_eq!(&buf[..], b"+QUEUED");
    }

    fn exec(bytes: &[u8]) -> Result<Option<ExecReply>, ReplyError> {
        let mut buf = BytesMut::from(bytes);
        let r = take_exec(&mut buf);
        match &r {
            Ok(Some(_)) => assert!(buf.is_empty(), "left: {buf:?}"),
            _ => assert_eq!(&buf[..], bytes, "nothing is taken"),
        }
        r
    }

    #[test]
    fn exec_results_keep_only_their_errors() {
        let ran = exec(
            b"*5\r\n+OK\r\n-WRONGTYPE bad \xff\r\n:3\r\n*2\r\n$1\r\na\r\n-ERR in\r\n-ERR last\r\n",
        );
        assert_eq!(
            ran,
            Ok(Some(ExecReply::Ran {
                results: 5,
                // An error nested in a result is that result's value, not
                // the command's error.
                errors: vec![(1, b(b"WRONGTYPE bad \xff")), (4, b(b"ERR last"))],
            }))
        );
        assert_eq!(
            exec(b"*0\r\n"),
            Ok(Some(ExecReply::Ran {
                results: 0,
                errors: vec![]
            }))
        );
        // Anything but an array is kept whole.
        assert_eq!(
            exec(b"-EXECABORT Transaction discarded\r\n"),
            Ok(Some(ExecReply::Other(Reply::Error(b(
                b"EXECABORT Transaction discarded"
            )))))
        );
        assert_eq!(
            exec(b"*-1\r\n"),
            Ok(Some(ExecReply::Other(Reply::Array(None))))
        );
        // The same results as `take_reply` reads them.
        let bytes = b"*3\r\n+OK\r\n-ERR a\r\n$-1\r\n";
        let Ok(Some(Reply::Array(Some(all)))) = one(bytes) else {
            panic!("an array")
        };
        let errors: Vec<(usize, Bytes)> = all
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_error().map(|e| (i, b(e))))
            .collect();
        assert_eq!(
            exec(bytes),
            Ok(Some(ExecReply::Ran {
                results: all.len(),
                errors
            }))
        );
    }

    #[test]
    fn exec_results_not_all_there_take_nothing() {
        let whole = b"*3\r\n+OK\r\n-ERR a\r\n:7\r\n";
        for cut in 0..whole.len() {
            assert_eq!(exec(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        // A forged count is incomplete, not a loop over it.
        assert_eq!(exec(b"*4000000000\r\n+OK\r\n"), Ok(None));
        assert!(matches!(
            exec(b"*3\r\n+OK\r\n?\r\n"),
            Err(ReplyError::Syntax { .. })
        ));
        assert!(matches!(exec(b"*x\r\n"), Err(ReplyError::Syntax { .. })));
    }
}
