//! RESP commands: the arrays of bulk strings Redis clients send.
//!
//! Only the request form is accepted (`*<n>\r\n` then `n` times
//! `$<len>\r\n<bytes>\r\n`); inline commands and other RESP types are not
//! commands and are refused. Lengths are checked against the bytes present
//! before anything is allocated, so a forged length cannot make us reserve
//! memory.

use bytes::{BufMut, Bytes};
use nom::bytes::complete::{tag, take};
use nom::character::complete::u64 as decimal;
use nom::IResult;

/// Why a RESP command could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("bad RESP at byte {offset}: expected {expected}")]
    Syntax {
        offset: usize,
        expected: &'static str,
    },
    #[error("bad RESP at byte {offset}: {what} {value} exceeds the {limit} bytes left")]
    TooLong {
        offset: usize,
        what: &'static str,
        value: u64,
        limit: usize,
    },
    #[error("bad RESP: empty command (an array of zero arguments)")]
    Empty,
}

/// Parses one command at the start of `input`; returns the argument slices
/// and the number of bytes consumed.
pub fn parse_command(input: &[u8]) -> Result<(Vec<&[u8]>, usize), RespError> {
    let total = input.len();
    let at = |rest: &[u8]| total - rest.len();
    let (rest, count) = header(b"*", input).map_err(|_| RespError::Syntax {
        offset: 0,
        expected: "`*<count>\\r\\n` (an array of bulk strings)",
    })?;
    if count == 0 {
        return Err(RespError::Empty);
    }
    // The smallest bulk string, `$0\r\n\r\n`, takes six bytes.
    if count > (rest.len() / 6) as u64 {
        return Err(RespError::TooLong {
            offset: at(rest),
            what: "argument count",
            value: count,
            limit: rest.len(),
        });
    }
    let mut args = Vec::with_capacity(count as usize);
    let mut rest = rest;
    for _ in 0..count {
        let (after, len) = header(b"$", rest).map_err(|_| RespError::Syntax {
            offset: at(rest),
            expected: "`$<length>\\r\\n` (a bulk string)",
        })?;
        if len > after.len() as u64 {
            return Err(RespError::TooLong {
                offset: at(after),
                what: "bulk length",
                value: len,
                limit: after.len(),
            });
        }
        let (after, arg) = body(after, len as usize).map_err(|_| RespError::Syntax {
            offset: at(after) + len as usize,
            expected: "`\\r\\n` after the bulk string",
        })?;
        args.push(arg);
        rest = after;
    }
    Ok((args, at(rest)))
}

/// Parses commands until `input` is used up.
pub fn parse_commands(input: &[u8]) -> Result<Vec<Vec<&[u8]>>, RespError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let (args, used) = parse_command(&input[pos..]).map_err(|e| e.shifted(pos))?;
        out.push(args);
        pos += used;
    }
    Ok(out)
}

/// Like [`parse_commands`], but the arguments share `buf`'s allocation.
pub fn parse_commands_shared(buf: &Bytes) -> Result<Vec<Vec<Bytes>>, RespError> {
    Ok(parse_commands(buf)?
        .into_iter()
        .map(|args| args.into_iter().map(|a| buf.slice_ref(a)).collect())
        .collect())
}

/// Appends one command in RESP to `out`.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut impl BufMut, args: &[A]) {
    put_header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        put_header(out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// The exact number of bytes [`encode_command`] writes.
pub fn encoded_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    let mut n = 1 + digits(args.len()) + 2;
    for arg in args {
        let len = arg.as_ref().len();
        n += 1 + digits(len) + 2 + len + 2;
    }
    n
}

impl RespError {
    fn shifted(self, by: usize) -> Self {
        match self {
            RespError::Syntax { offset, expected } => RespError::Syntax {
                offset: offset + by,
                expected,
            },
            RespError::TooLong {
                offset,
                what,
                value,
                limit,
            } => RespError::TooLong {
                offset: offset + by,
                what,
                value,
                limit,
            },
            RespError::Empty => RespError::Empty,
        }
    }
}

fn header<'a>(sigil: &'static [u8], input: &'a [u8]) -> IResult<&'a [u8], u64> {
    let (input, _) = tag(sigil)(input)?;
    let (input, n) = decimal(input)?;
    let (input, _) = tag(&b"\r\n"[..])(input)?;
    Ok((input, n))
}

fn body(input: &[u8], len: usize) -> IResult<&[u8], &[u8]> {
    let (input, data) = take(len)(input)?;
    let (input, _) = tag(&b"\r\n"[..])(input)?;
    Ok((input, data))
}

fn put_header(out: &mut impl BufMut, sigil: u8, n: usize) {
    out.put_u8(sigil);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binary_args() {
        let args: [&[u8]; 3] = [b"SET", b"k\r\n\x00", "中文".as_bytes()];
        let mut buf = Vec::new();
        encode_command(&mut buf, &args);
        assert_eq!(buf.len(), encoded_len(&args));
        let (parsed, used) = parse_command(&buf).expect("valid");
        assert_eq!(used, buf.len());
        assert_eq!(parsed, args.to_vec());
    }

    #[test]
    fn seed_command_parses() {
        let (args, used) = parse_command(b"*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n").expect("ok");
        assert_eq!(args, vec![&b"set"[..], b"a", b"b"]);
        assert_eq!(used, 27);
    }

    #[test]
    fn forged_count_is_refused_before_allocating() {
        let err = parse_command(b"*4000000000\r\n$1\r\na\r\n").unwrap_err();
        assert!(
            matches!(
                err,
                RespError::TooLong {
                    what: "argument count",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn forged_bulk_length_is_refused() {
        let err = parse_command(b"*1\r\n$99\r\nabc\r\n").unwrap_err();
        assert_eq!(
            err,
            RespError::TooLong {
                offset: 9,
                what: "bulk length",
                value: 99,
                limit: 5
            }
        );
    }

    #[test]
    fn missing_crlf_after_bulk_reports_offset() {
        let err = parse_command(b"*1\r\n$3\r\nabcX\r\n").unwrap_err();
        assert!(
            matches!(err, RespError::Syntax { offset: 11, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn several_commands_and_offsets() {
        let mut buf = Vec::new();
        encode_command(&mut buf, &["SET", "a", "1"]);
        encode_command(&mut buf, &["INCR", "a"]);
        assert_eq!(parse_commands(&buf).expect("ok").len(), 2);
        buf.extend_from_slice(b"+OK\r\n");
        let err = parse_commands(&buf).unwrap_err();
        assert!(matches!(err, RespError::Syntax { offset, .. } if offset == buf.len() - 5));
    }

    #[test]
    fn empty_array_is_not_a_command() {
        assert_eq!(parse_command(b"*0\r\n"), Err(RespError::Empty));
    }
}
