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

use crate::op::RedisCommand;

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

/// What [`walk_command`] hands each piece of a command to.
trait ArgSink<'a> {
    /// The argument count, once read (before the first argument).
    fn count(&mut self, n: usize);
    /// One argument, in order.
    fn arg(&mut self, arg: &'a [u8]);
}

impl<'a> ArgSink<'a> for Vec<&'a [u8]> {
    fn count(&mut self, n: usize) {
        self.reserve_exact(n);
    }

    fn arg(&mut self, arg: &'a [u8]) {
        self.push(arg);
    }
}

/// Keeps only the first argument (the command name).
struct NameOnly<'a>(Option<&'a [u8]>);

impl<'a> ArgSink<'a> for NameOnly<'a> {
    fn count(&mut self, _: usize) {}

    fn arg(&mut self, arg: &'a [u8]) {
        self.0.get_or_insert(arg);
    }
}

/// Reads one command at the start of `input`, handing its pieces to `sink`;
/// returns the number of bytes consumed. The one parser behind
/// [`parse_command`] and [`command_name`], so both accept and refuse
/// exactly the same input with the same errors.
fn walk_command<'a>(input: &'a [u8], sink: &mut impl ArgSink<'a>) -> Result<usize, RespError> {
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
    sink.count(count as usize);
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
        sink.arg(arg);
        rest = after;
    }
    Ok(at(rest))
}

/// Parses one command at the start of `input`; returns the argument slices
/// and the number of bytes consumed.
pub fn parse_command(input: &[u8]) -> Result<(Vec<&[u8]>, usize), RespError> {
    let mut args = Vec::new();
    let used = walk_command(input, &mut args)?;
    Ok((args, used))
}

/// The name of the command at the start of `input` and the bytes it takes,
/// read exactly as [`parse_command`] reads it (the same input accepted,
/// the same errors) without allocating.
pub fn command_name(input: &[u8]) -> Result<(&[u8], usize), RespError> {
    if let Some((used, name)) = canonical_command(input) {
        return Ok((name, used));
    }
    let mut name = NameOnly(None);
    let used = walk_command(input, &mut name)?;
    // A command has at least one argument (`*0` is an error).
    Ok((name.0.unwrap_or_default(), used))
}

/// Parses commands until `input` is used up.
pub fn parse_commands(input: &[u8]) -> Result<Vec<Vec<&[u8]>>, RespError> {
    collect_commands(input, parse_command)
}

/// What `read` makes of each command of `input` (it reads the command at
/// the start of its slice and returns the bytes it took), collected.
fn collect_commands<'a, T>(
    input: &'a [u8],
    read: impl Fn(&'a [u8]) -> Result<(T, usize), RespError>,
) -> Result<Vec<T>, RespError> {
    let mut out = Vec::new();
    walk_commands(input, |command| {
        let (item, used) = read(command)?;
        out.push(item);
        Ok(used)
    })?;
    Ok(out)
}

/// `one` over the commands of `input`, one after the other, until it is
/// used up (`one` reads the command at the start of its slice and returns
/// the bytes it took); an error's offset counts from the start of `input`.
pub fn walk_commands<'a>(
    input: &'a [u8],
    mut one: impl FnMut(&'a [u8]) -> Result<usize, RespError>,
) -> Result<(), RespError> {
    let mut pos = 0;
    while pos < input.len() {
        pos += one(&input[pos..]).map_err(|e| e.shifted(pos))?;
    }
    Ok(())
}

/// [`parse_command`] of `command`, a part of `buf`, with the command's
/// name (read on the way, a part of `command`) and the bytes it took: the
/// command shares `buf`'s allocation (no copy) when it is in canonical
/// form, as clients write it; a command written otherwise (`$03` for `$3`)
/// is encoded again, so that what goes to a target is always canonical.
pub fn parse_command_shared<'a>(
    buf: &Bytes,
    command: &'a [u8],
) -> Result<(RedisCommand, &'a [u8], usize), RespError> {
    if let Some((used, name)) = canonical_command(command) {
        let cmd = RedisCommand::from_canonical(buf.slice_ref(&command[..used]));
        return Ok((cmd, name, used));
    }
    // Not canonical, or not valid: the full parser names the error.
    let (args, used) = parse_command(command)?;
    let cmd = RedisCommand::new(&args).ok_or(RespError::Empty)?;
    Ok((cmd, args[0], used))
}

/// The length and the name (first argument) of the command at the start
/// of `input` when it is in canonical RESP (every number without a leading
/// zero, at most 19 digits, every length within the bytes present); `None`
/// for anything else, which [`walk_command`] then reads (or refuses). What
/// this accepts, `walk_command` accepts with the same length (a test checks
/// it on mutated input).
fn canonical_command(input: &[u8]) -> Option<(usize, &[u8])> {
    let (count, mut rest) = canonical_header(b'*', input)?;
    if count == 0 || count > rest.len() / 6 {
        return None;
    }
    let mut name: &[u8] = &[];
    for i in 0..count {
        let (len, after) = canonical_header(b'$', rest)?;
        let arg = after.get(..len)?;
        if i == 0 {
            name = arg;
        }
        rest = after[len..].strip_prefix(b"\r\n")?;
    }
    Some((input.len() - rest.len(), name))
}

/// `<sigil><n>\r\n` with `n` in canonical decimal (no leading zero, 1 to
/// 19 digits): `n` and what follows.
///
/// One pass over the digits: it runs several times for every command the
/// server routes (the name, the key, the argument count), ~7 % of the
/// server's CPU when it counted the digits first and then folded them.
#[inline]
fn canonical_header(sigil: u8, input: &[u8]) -> Option<(usize, &[u8])> {
    // One or two digits, the usual case (argument counts, names, keys,
    // small values), read without the loop.
    match *input {
        [s, d, b'\r', b'\n', ref rest @ ..] if s == sigil && d.is_ascii_digit() => {
            return Some((usize::from(d - b'0'), rest));
        }
        [s, d1, d2, b'\r', b'\n', ref rest @ ..]
            if s == sigil && (b'1'..=b'9').contains(&d1) && d2.is_ascii_digit() =>
        {
            return Some((usize::from((d1 - b'0') * 10 + (d2 - b'0')), rest));
        }
        _ => {}
    }
    let rest = input.strip_prefix(&[sigil])?;
    let mut n = 0u64;
    let mut digits = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        if digits == 19 {
            return None;
        }
        // 19 digits stay below u64::MAX.
        n = n * 10 + u64::from(b - b'0');
        digits += 1;
    }
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    Some((
        usize::try_from(n).ok()?,
        rest[digits..].strip_prefix(b"\r\n")?,
    ))
}

/// The arguments of a command in canonical RESP, in order
/// ([`canonical_args`]).
#[derive(Debug, Clone)]
pub struct CanonicalArgs<'a> {
    rest: &'a [u8],
    left: usize,
}

/// Reads the arguments of `resp`, one command in canonical RESP (a
/// [`RedisCommand`]'s bytes). Bytes that are not one (which a
/// `RedisCommand` never holds) end the arguments early rather than fail.
pub fn canonical_args(resp: &[u8]) -> CanonicalArgs<'_> {
    match canonical_header(b'*', resp) {
        Some((left, rest)) => CanonicalArgs { rest, left },
        None => CanonicalArgs { rest: &[], left: 0 },
    }
}

impl<'a> Iterator for CanonicalArgs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let Some((len, after)) = canonical_header(b'$', self.rest) else {
            self.left = 0;
            return None;
        };
        let Some(arg) = after.get(..len) else {
            self.left = 0;
            return None;
        };
        self.rest = after.get(len + 2..).unwrap_or_default();
        self.left -= 1;
        Some(arg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for CanonicalArgs<'_> {}

/// Appends one command in RESP to `out`.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut impl BufMut, args: &[A]) {
    // Few, larger pieces: the `\r\n` ending an argument goes out with the
    // header of the next one.
    let mut scratch = [0u8; HEADER_MAX];
    out.put_slice(put_header(&mut scratch, false, b'*', args.len()));
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.as_ref();
        out.put_slice(put_header(&mut scratch, i > 0, b'$', arg.len()));
        out.put_slice(arg);
    }
    if !args.is_empty() {
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
    /// The same error with its offset moved `by` bytes further.
    pub(crate) fn shifted(self, by: usize) -> Self {
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

/// The longest [`put_header`] output: `\r\n`, sigil, 20 digits, `\r\n`.
const HEADER_MAX: usize = 2 + 1 + 20 + 2;

/// Writes `[\r\n]<sigil><n>\r\n` into `scratch`; returns it.
fn put_header(scratch: &mut [u8; HEADER_MAX], crlf_first: bool, sigil: u8, n: usize) -> &[u8] {
    let mut len = 0;
    if crlf_first {
        scratch[..2].copy_from_slice(b"\r\n");
        len = 2;
    }
    scratch[len] = sigil;
    len += 1;
    // Lengths under 100 (argument counts, names, most keys and small
    // values) written directly: the general formatting was ~70
    // instructions a header, four headers in a SET.
    if n < 10 {
        scratch[len] = b'0' + n as u8;
        len += 1;
    } else if n < 100 {
        scratch[len] = b'0' + (n / 10) as u8;
        scratch[len + 1] = b'0' + (n % 10) as u8;
        len += 2;
    } else {
        let mut decimal = itoa::Buffer::new();
        let digits = decimal.format(n).as_bytes();
        scratch[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    scratch[len..len + 2].copy_from_slice(b"\r\n");
    &scratch[..len + 2]
}

/// Digits of `n` in decimal. Numbers under 100 (argument counts, names,
/// most keys and small values; ports and dbs of frame headers are the
/// rest) without the logarithm: a client sizes every frame it encodes
/// with it, ~30 instructions a number through `ilog10`.
pub(crate) fn digits(n: usize) -> usize {
    if n < 10 {
        1
    } else if n < 100 {
        2
    } else {
        n.ilog10() as usize + 1
    }
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
    fn shared_commands_keep_canonical_bytes_and_reencode_the_rest() {
        // Two commands as clients write them, behind some other bytes.
        let mut buf = b"xx".to_vec();
        encode_command(&mut buf, &["SET", "k", "v\r\n"]);
        encode_command(&mut buf, &["DEL", ""]);
        let buf = Bytes::from(buf);
        let (first, name, used) = parse_command_shared(&buf, &buf[2..]).expect("valid");
        assert_eq!(name, b"SET");
        assert_eq!(first.args().to_vec(), [&b"SET"[..], b"k", b"v\r\n"]);
        assert_eq!(first.resp(), &buf[2..2 + used]);
        // Shared, not copied.
        assert_eq!(first.resp().as_ptr(), buf[2..].as_ptr());
        let (second, name, _) = parse_command_shared(&buf, &buf[2 + used..]).expect("valid");
        assert_eq!(name, b"DEL");
        assert_eq!(second.args().to_vec(), [&b"DEL"[..], b""]);
        assert_eq!(second.name(), b"DEL");

        // Leading zeros are RESP to our parser but not to Redis: the
        // command is encoded again, canonically.
        let odd = Bytes::from_static(b"*02\r\n$3\r\nGET\r\n$001\r\nk\r\n");
        let (cmd, name, used) = parse_command_shared(&odd, &odd).expect("valid");
        assert_eq!(name, b"GET");
        assert_eq!(used, odd.len());
        assert_eq!(cmd.args().to_vec(), [&b"GET"[..], b"k"]);
        assert_eq!(cmd.resp(), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(cmd, RedisCommand::new(&["GET", "k"]).expect("a command"));

        // A rewrite encodes the command again with the new argument.
        let renamed = first.with_args_replaced(&[(1, b"app:k".to_vec())]);
        assert_eq!(renamed.args().to_vec(), [&b"SET"[..], b"app:k", b"v\r\n"]);
        let mut expected = Vec::new();
        encode_command(&mut expected, &["SET", "app:k", "v\r\n"]);
        assert_eq!(renamed.resp(), &expected[..]);
    }

    #[test]
    fn walk_stops_at_the_first_error_with_its_offset_from_the_start() {
        let mut buf = Vec::new();
        encode_command(&mut buf, &["SET", "a", "1"]);
        encode_command(&mut buf, &["INCR", "b"]);
        let bad_at = buf.len();
        // `*1` then a bulk header missing its `$`, then a good command
        // that must not be read.
        buf.extend_from_slice(b"*1\r\n3\r\nGET\r\n");
        encode_command(&mut buf, &["DEL", "c"]);
        let mut seen = Vec::new();
        let err = walk_commands(&buf, |command| {
            let (args, used) = parse_command(command)?;
            seen.push(args[0]);
            Ok(used)
        })
        .expect_err("the third command is bad");
        assert_eq!(seen, [&b"SET"[..], b"INCR"]);
        // The offset counts from the start of the whole input, as
        // `parse_commands` reports it.
        assert_eq!(parse_commands(&buf).expect_err("bad"), err);
        match err {
            RespError::Syntax { offset, .. } => assert_eq!(offset, bad_at + 4),
            other => panic!("unexpected error {other:?}"),
        }
        // Used up exactly: no error, every command read once.
        let mut count = 0;
        walk_commands(&buf[..bad_at], |command| {
            count += 1;
            command_name(command).map(|(_, used)| used)
        })
        .expect("two good commands");
        assert_eq!(count, 2);
    }

    #[test]
    fn headers_and_lengths_in_decimal() {
        let mut scratch = [0u8; HEADER_MAX];
        assert_eq!(put_header(&mut scratch, false, b'*', 0), b"*0\r\n");
        assert_eq!(put_header(&mut scratch, true, b'$', 9), b"\r\n$9\r\n");
        assert_eq!(put_header(&mut scratch, false, b'$', 10), b"$10\r\n");
        assert_eq!(put_header(&mut scratch, true, b'$', 99), b"\r\n$99\r\n");
        assert_eq!(put_header(&mut scratch, false, b'$', 100), b"$100\r\n");
        for n in 0..1000 {
            let expected = format!("${n}\r\n");
            assert_eq!(
                put_header(&mut scratch, false, b'$', n),
                expected.as_bytes()
            );
        }
        assert_eq!(
            put_header(&mut scratch, true, b'$', usize::MAX),
            format!("\r\n${}\r\n", usize::MAX).as_bytes()
        );
        for n in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX / 10, usize::MAX] {
            assert_eq!(digits(n), n.to_string().len(), "{n}");
        }
        let mut buf = Vec::new();
        encode_command(&mut buf, &["SET", "key", "0123456789"]);
        assert_eq!(
            buf,
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\n"
        );
        assert_eq!(buf.len(), encoded_len(&["SET", "key", "0123456789"]));
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
    fn command_names_read_what_parse_commands_reads() {
        let mut two = Vec::new();
        encode_command(&mut two, &["SET", "a", "1"]);
        encode_command(&mut two, &["INCR", "a"]);
        let cases: Vec<Vec<u8>> = vec![
            two.clone(),
            [&two[..], b"+OK\r\n"].concat(),
            [&two[..], b"*0\r\n"].concat(),
            [&two[..], b"*1\r\n$9\r\nabc\r\n"].concat(),
            [&two[..], b"*1\r\n$3\r\nabcX\r\n"].concat(),
            [&two[..], b"*4000000000\r\n$1\r\na\r\n"].concat(),
            b"*1\r\n$0\r\n\r\n".to_vec(),
            b"*2\r\n$3\r\nGET\r\n".to_vec(),
            b"*1\r\n$3\r\nGET".to_vec(),
            b"*18446744073709551616\r\n".to_vec(),
            b"".to_vec(),
        ];
        for input in cases {
            let parsed = parse_commands(&input).map(|c| c.into_iter().map(|a| a[0]).collect());
            assert_eq!(command_names(&input), parsed, "{input:?}");
        }
    }

    /// The name of every command of `input`, read by [`command_name`].
    fn command_names(input: &[u8]) -> Result<Vec<&[u8]>, RespError> {
        collect_commands(input, command_name)
    }

    /// `canonical_command` against the nom reading, on commands mutated at
    /// random (a fixed seed: the same inputs every run).
    #[test]
    fn the_canonical_reading_agrees_with_nom() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut set = Vec::new();
        encode_command(&mut set, &["SET", "key:000000000001", "v"]);
        let seeds: [&[u8]; 4] = [
            &set,
            b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
            b"*1\r\n$18446744073709551615\r\nx\r\n",
            b"*1\r\n$0000000000000000000004\r\nPING\r\n",
        ];
        let alphabet = b"*$0123456789\r\n+-a \x00";
        let mut canonical = 0;
        for round in 0..200_000u64 {
            let mut input = seeds[(next() % 4) as usize].to_vec();
            for _ in 0..next() % 4 {
                let pos = (next() % (input.len() as u64 + 1)) as usize;
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 4 {
                    0 if pos < input.len() => input[pos] = c,
                    1 => input.insert(pos, c),
                    2 if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ if round % 2 == 0 => input.extend_from_slice(&set),
                    _ => {}
                }
            }
            let mut name = NameOnly(None);
            let nom =
                walk_command(&input, &mut name).map(|used| (name.0.unwrap_or_default(), used));
            // The canonical reading accepts a subset, with the same length,
            // and exactly what encoding the arguments again gives back.
            if let Some((used, name)) = canonical_command(&input) {
                assert_eq!(Ok((name, used)), nom.clone());
                let (args, _) = parse_command(&input).expect("accepted above");
                let mut again = Vec::new();
                encode_command(&mut again, &args);
                assert_eq!(again, &input[..used], "{input:?}");
                assert_eq!(canonical_args(&input[..used]).collect::<Vec<_>>(), args);
                canonical += 1;
            } else if let Ok((args, used)) = parse_command(&input) {
                // Refused by the canonical reading only when not canonical.
                let mut again = Vec::new();
                encode_command(&mut again, &args);
                assert_ne!(again, &input[..used], "{input:?}");
            }
            let parsed = parse_commands(&input).map(|c| c.into_iter().map(|a| a[0]).collect());
            assert_eq!(command_names(&input), parsed, "{input:?}");
        }
        // Every reading was exercised.
        assert!(canonical > 20_000, "{canonical}");
    }

    #[test]
    fn lengths_are_plain_decimals_that_fit_a_u64() {
        // Leading zeros are read; signs, spaces and overflow are not.
        assert_eq!(
            parse_command(b"*01\r\n$003\r\nGET\r\n"),
            Ok((vec![&b"GET"[..]], 16))
        );
        for bad in [
            &b"*+1\r\n"[..],
            b"* 1\r\n",
            b"*\r\n",
            b"*1\n",
            b"*1",
            b"$1\r\n",
        ] {
            assert!(
                matches!(parse_command(bad), Err(RespError::Syntax { offset: 0, .. })),
                "{bad:?}"
            );
        }
        let max = b"*1\r\n$18446744073709551615\r\nx\r\n";
        assert!(matches!(
            parse_command(max),
            Err(RespError::TooLong {
                offset: 27,
                what: "bulk length",
                value: u64::MAX,
                ..
            })
        ));
        let over = b"*1\r\n$18446744073709551616\r\nx\r\n";
        assert!(matches!(
            parse_command(over),
            Err(RespError::Syntax { offset: 4, .. })
        ));
    }

    #[test]
    fn empty_array_is_not_a_command() {
        assert_eq!(parse_command(b"*0\r\n"), Err(RespError::Empty));
    }
}
