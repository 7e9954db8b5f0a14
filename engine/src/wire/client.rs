//! The library → proxy wire: the seed's format, kept byte for byte.
//!
//! A byte stream of frames, each `[u32 length, little-endian][payload]`.
//! The payload's first byte tells its kind:
//!
//! - an ASCII digit: Redis, `"<port>,<db>"` then a flag byte: `0x01` and
//!   one or more RESP commands (several = one transaction), or, as the
//!   original system's library wrote transactions, `0x80 | n` and
//!   `[u16 length][RESP command]` pieces;
//! - `0x02`: Mongo, `0x02 <db> 0x00 <collection> 0x00 <BSON write description>`;
//! - `{`: Mongo as the original system's library wrote it, compact JSON
//!   with Extended JSON values ([`crate::wire::mongo_json`]);
//! - `0x03`: a control frame between a client and its proxy, never
//!   forwarded: SYNC, `0x03 'S' <u64 token>`, which asks the proxy to
//!   answer once every earlier frame of the connection is in the spool
//!   (see [`sync_request`]), and SWITCH, `0x03 'W'`, after which the
//!   client's frames come through the pipe it offered (see
//!   [`switch_request`]);
//! - `0x04`..`0x1f`: reserved; refused.
//!
//! The proxy forwards payloads unchanged; the server decodes them with
//! [`decode_payload`]. Both formats of the original system decode here, to
//! the same [`Op`] as the matching new frame: the rules, `--explain`, the
//! dead-letter file and the NATS transport never see the difference.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::op::{Commands, MongoOp, Op, RedisOp};
use crate::wire::mongo::{check_write, decode_write, MongoDecodeError};
use crate::wire::mongo_json::{decode_json_write, JSON_MARK};
use crate::wire::resp::{self, RespError};

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;
/// First payload byte of a Mongo frame.
pub const MONGO_MARK: u8 = 0x02;
/// First payload byte of a control frame (client ↔ proxy only).
pub const CONTROL_MARK: u8 = 0x03;
/// Second byte of a SYNC control frame and of its reply.
pub const SYNC: u8 = b'S';
/// Bytes of a SYNC request frame, length prefix included.
pub const SYNC_REQUEST_LEN: usize = LEN_PREFIX + 10;
/// Bytes of a SYNC reply, length prefix included.
pub const SYNC_REPLY_LEN: usize = LEN_PREFIX + 14;
/// Second byte of the proxy's PIPE reply: the pipe a client offered is
/// taken.
pub const PIPE: u8 = b'P';
/// Bytes of a PIPE reply, length prefix included.
pub const PIPE_REPLY_LEN: usize = LEN_PREFIX + 4;
/// The pipe transport's version in a PIPE reply.
pub const PIPE_VERSION: u16 = 1;
/// Second byte of a SWITCH control frame.
pub const SWITCH: u8 = b'W';
/// Bytes of a SWITCH frame, length prefix included.
pub const SWITCH_LEN: usize = LEN_PREFIX + 2;
/// Ends the `<port>,<db>` header of a Redis frame: RESP commands follow.
pub const REDIS_HEADER_END: u8 = 0x01;
/// The flag byte of the original library's transactions is `0x80 | n`,
/// `n` the number of commands modulo 128; `[u16 LE length][RESP command]`
/// pieces follow.
pub const REDIS_TX_FLAG: u8 = 0x80;
/// First payload byte of an original-format (JSON) Mongo frame.
pub const MONGO_JSON_MARK: u8 = JSON_MARK;
/// The default largest payload accepted (64 MiB), configurable in the daemons.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Why a payload is not a valid operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("empty payload")]
    Empty,
    #[error(
        "bad Redis header: {0} (expected \"<port>,<db>\" then 0x01, or 0x80 | n for a transaction)"
    )]
    RedisHeader(&'static str),
    #[error("{0}")]
    Resp(#[from] RespError),
    #[error("Redis frame has no command after its header")]
    NoCommand,
    #[error(
        "bad Redis transaction (flag byte 0x80 | n, then [u16 length][RESP command] pieces): {0}"
    )]
    Transaction(String),
    #[error("command {0} is not allowed in a frame: the frame header sets the db, several commands already form a transaction, and the server's connection to the target is not the client's to change")]
    RefusedCommand(String),
    #[error("bad Mongo header: {0} (expected 0x02 <db> 0x00 <collection> 0x00 <BSON>)")]
    MongoHeader(&'static str),
    #[error("{0}")]
    Mongo(#[from] MongoDecodeError),
    #[error("bad Mongo JSON frame: {0}")]
    MongoJson(String),
    #[error("unknown payload kind 0x{0:02x} (a digit starts a Redis frame, 0x02 or `{{` a Mongo frame; 0x03 is a control frame for the proxy, 0x04..0x1f are reserved)")]
    UnknownKind(u8),
}

impl FrameError {
    /// A short stable label for counters (`reason` label of metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Empty => "empty",
            FrameError::RedisHeader(_) => "redis_header",
            FrameError::Resp(_) | FrameError::NoCommand => "bad_resp",
            FrameError::Transaction(_) => "bad_transaction",
            FrameError::RefusedCommand(_) => "refused_command",
            FrameError::MongoHeader(_) => "mongo_header",
            FrameError::Mongo(_) => "bad_bson",
            FrameError::MongoJson(_) => "bad_json",
            FrameError::UnknownKind(_) => "unknown_kind",
        }
    }
}

/// Decodes one payload (without its length prefix). Arguments and documents
/// are validated completely, so a payload that decodes here can be applied.
pub fn decode_payload(payload: &Bytes) -> Result<Op, FrameError> {
    match payload.first() {
        None => Err(FrameError::Empty),
        Some(b'0'..=b'9') => decode_redis(payload).map(Op::Redis),
        Some(&MONGO_MARK) => decode_mongo(payload).map(Op::from),
        Some(&MONGO_JSON_MARK) => decode_json_write(payload)
            .map(Op::from)
            .map_err(FrameError::MongoJson),
        Some(&other) => Err(FrameError::UnknownKind(other)),
    }
}

/// Checks a payload exactly as [`decode_payload`] does (the same payloads
/// accepted, the same errors) without building the operation: a Redis
/// payload is checked in place, without copying or sharing its arguments,
/// and a BSON Mongo payload's document is walked in place (the client
/// libraries check every frame they send with it).
pub fn check_payload(payload: &[u8]) -> Result<(), FrameError> {
    match payload.first() {
        None => Err(FrameError::Empty),
        Some(b'0'..=b'9') => {
            let (_, _, end) = redis_header(payload)?;
            // Each command's name only, as `decode_payload` reads them.
            walk_redis_body(&payload[end + 1..], payload[end], resp::command_name)
        }
        Some(&MONGO_MARK) => {
            let (_, _, write) = mongo_parts(payload)?;
            check_write(write).map_err(FrameError::from)
        }
        Some(&MONGO_JSON_MARK) => decode_json_write(payload)
            .map(|_| ())
            .map_err(FrameError::MongoJson),
        Some(&other) => Err(FrameError::UnknownKind(other)),
    }
}

/// True for a flag byte ending a Redis header: `0x01`, or `0x80 | n`.
fn is_redis_flag(b: u8) -> bool {
    b == REDIS_HEADER_END || b & REDIS_TX_FLAG != 0
}

/// Reads the commands of an original-library transaction: `body` (what
/// follows the flag byte) is `[u16 LE length][RESP command of exactly that
/// length]` pieces filling it exactly, and their number modulo 128 is the
/// flag's low seven bits (the original library counted in seven bits and
/// never checked, so 130 commands say 2). `command` reads one RESP command
/// from the start of its slice and returns the bytes it took. Byte offsets
/// in errors count from the first byte after the flag, as RESP errors do.
fn walk_transaction<'a>(
    body: &'a [u8],
    flag: u8,
    mut command: impl FnMut(&'a [u8]) -> Result<usize, RespError>,
) -> Result<(), FrameError> {
    let tx = FrameError::Transaction;
    let mut pos = 0;
    let mut count = 0usize;
    while pos < body.len() {
        let (at, n) = (pos, count + 1);
        let Some(&[lo, hi]) = body.get(pos..pos + 2) else {
            return Err(tx(format!(
                "command {n} at byte {at}: its u16 length is cut short (1 byte left)"
            )));
        };
        let len = usize::from(u16::from_le_bytes([lo, hi]));
        pos += 2;
        if len == 0 {
            return Err(tx(format!("command {n} at byte {at} is empty (length 0)")));
        }
        let Some(slot) = body.get(pos..pos + len) else {
            return Err(tx(format!(
                "command {n} at byte {at} announces {len} bytes, but only {} are left",
                body.len() - pos
            )));
        };
        let used = command(slot).map_err(|e| FrameError::Resp(e.shifted(pos)))?;
        if used != len {
            return Err(tx(format!(
                "command {n} at byte {at}: its {len} bytes hold a RESP command of {used} bytes and {} bytes more (one command per length)",
                len - used
            )));
        }
        pos += len;
        count += 1;
    }
    let announced = usize::from(flag & !REDIS_TX_FLAG);
    if count == 0 {
        return Err(tx("no command after the flag byte".into()));
    }
    if count % 128 != announced {
        return Err(tx(format!(
            "{count} commands, but the flag byte 0x{flag:02x} announces {announced} (the count modulo 128)"
        )));
    }
    Ok(())
}

/// The port, the db and the position of the flag byte ending the header
/// (`0x01`, or `0x80 | n` for an original-library transaction).
fn redis_header(payload: &[u8]) -> Result<(u16, u32, usize), FrameError> {
    match plain_redis_header(payload) {
        Some(header) => Ok(header),
        None => general_redis_header(payload),
    }
}

/// [`redis_header`] for any payload, naming what is wrong. The header is
/// the digits and commas at the start; the byte after them is the flag.
fn general_redis_header(payload: &[u8]) -> Result<(u16, u32, usize), FrameError> {
    let end = payload
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b','))
        .ok_or(FrameError::RedisHeader("nothing after the header"))?;
    let header = &payload[..end];
    let comma = header
        .iter()
        .position(|&b| b == b',')
        .ok_or(FrameError::RedisHeader("no comma between port and db"))?;
    let port = parse_decimal(&header[..comma])
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(FrameError::RedisHeader("port is not a number in 0..=65535"))?;
    let db = parse_decimal(&header[comma + 1..])
        .and_then(|d| u32::try_from(d).ok())
        .ok_or(FrameError::RedisHeader("db is not a number"))?;
    if !is_redis_flag(payload[end]) {
        return Err(FrameError::RedisHeader(
            "the byte after the header is neither 0x01 (commands follow) nor 0x80 | n (a transaction of n commands)",
        ));
    }
    Ok((port, db, end))
}

/// [`redis_header`] in one pass for the headers the libraries write: 1 to
/// 5 digits, a comma, 1 to 10 digits, a flag byte, in range. A flag byte
/// is neither a digit nor a comma, so what this accepts the general
/// reading accepts with the same values; anything else (`None`) is left to
/// it, which also names the error.
fn plain_redis_header(payload: &[u8]) -> Option<(u16, u32, usize)> {
    let (port, comma) = leading_decimal(payload, 5)?;
    if payload.get(comma) != Some(&b',') {
        return None;
    }
    let (db, digits) = leading_decimal(payload.get(comma + 1..)?, 10)?;
    let end = comma + 1 + digits;
    if !is_redis_flag(*payload.get(end)?) {
        return None;
    }
    Some((u16::try_from(port).ok()?, u32::try_from(db).ok()?, end))
}

/// The value of the 1 to `max` ASCII digits starting `input`, and how many
/// there are; `None` for none or more than `max`.
fn leading_decimal(input: &[u8], max: usize) -> Option<(u64, usize)> {
    let mut n = 0u64;
    let mut used = 0;
    for &b in input {
        if !b.is_ascii_digit() {
            break;
        }
        if used == max {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
        used += 1;
    }
    (used > 0).then_some((n, used))
}

fn decode_redis(payload: &Bytes) -> Result<RedisOp, FrameError> {
    let (port, db, end) = redis_header(payload)?;
    let flag = payload[end];
    let body = &payload[end + 1..];
    let mut commands = Commands::new();
    walk_redis_body(body, flag, |command| {
        let (cmd, name, used) = resp::parse_command_shared(payload, command)?;
        commands.push(cmd);
        Ok((name, used))
    })?;
    Ok(RedisOp { port, db, commands })
}

/// Reads every command of a Redis payload's `body` (what follows its
/// `flag` byte): one or more commands, or an original-library transaction.
/// `one` reads the command at the start of its slice and returns its name
/// and the bytes it took. A refused name is reported only once every
/// command is read: a syntax error later in the payload wins.
fn walk_redis_body<'a>(
    body: &'a [u8],
    flag: u8,
    mut one: impl FnMut(&'a [u8]) -> Result<(&'a [u8], usize), RespError>,
) -> Result<(), FrameError> {
    let mut refused = None;
    let mut each = |command| {
        let (name, used) = one(command)?;
        if refused.is_none() && is_refused(name) {
            refused = Some(name);
        }
        Ok(used)
    };
    if flag == REDIS_HEADER_END {
        if body.is_empty() {
            return Err(FrameError::NoCommand);
        }
        resp::walk_commands(body, &mut each)?;
    } else {
        walk_transaction(body, flag, &mut each)?;
    }
    match refused {
        Some(bad) => Err(refused_command(bad)),
        None => Ok(()),
    }
}

/// What [`check_payload`] finds wrong with a Redis payload that
/// [`put_redis_payload`] encoded from `commands` (each its arguments, name
/// first, none empty): the encoder's output always parses, so only a
/// refused name can be — the first, as [`check_payload`] reports it. The
/// client libraries check the frames they encode with it, without parsing
/// them back.
pub fn check_command_names<C, A>(commands: &[C]) -> Result<(), FrameError>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    let names = commands.iter().filter_map(|c| c.as_ref().first());
    match names.map(AsRef::as_ref).find(|name| is_refused(name)) {
        Some(bad) => Err(refused_command(bad)),
        None => Ok(()),
    }
}

/// True for a command name a frame may not carry (any case).
///
/// The frame itself says the db and whether the commands form a
/// transaction, and the server's connection to the target is its own:
/// these would fight it (`RESET` inside the server's MULTI discards the run
/// and leaves its marker outside the transaction; `CLIENT REPLY OFF` makes
/// replies go missing; `QUIT`, `SUBSCRIBE` and `HELLO 3` change or end the
/// connection).
///
/// The refused names of the name's length, compared ignoring case (no
/// copy): the proxy and the server ask it of every command, and comparing
/// against each refused name in turn was ~80 instructions per SET. (This
/// module is built into the client libraries too, without the rules'
/// crate and its `with_upper`.)
fn is_refused(name: &[u8]) -> bool {
    let same_length: &[&[u8]] = match name.len() {
        4 => &[b"EXEC", b"QUIT", b"AUTH", b"SYNC"],
        5 => &[b"MULTI", b"WATCH", b"RESET", b"HELLO", b"PSYNC"],
        6 => &[b"SELECT", b"CLIENT", b"ASKING"],
        7 => &[b"DISCARD", b"UNWATCH", b"MONITOR"],
        8 => &[b"REPLCONF", b"READONLY"],
        9 => &[b"SUBSCRIBE", b"READWRITE"],
        10 => &[b"PSUBSCRIBE", b"SSUBSCRIBE"],
        11 => &[b"UNSUBSCRIBE"],
        12 => &[b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"],
        _ => return false,
    };
    same_length.iter().any(|r| name.eq_ignore_ascii_case(r))
}

fn refused_command(name: &[u8]) -> FrameError {
    FrameError::RefusedCommand(String::from_utf8_lossy(name).to_uppercase())
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn decode_mongo(payload: &Bytes) -> Result<MongoOp, FrameError> {
    let (db, coll, write) = mongo_parts(payload)?;
    let write = decode_write(write)?;
    Ok(MongoOp {
        db: db.to_owned(),
        coll: coll.to_owned(),
        write,
    })
}

/// A Mongo payload's db name, collection name and write description bytes.
fn mongo_parts(payload: &[u8]) -> Result<(&str, &str, &[u8]), FrameError> {
    let rest = &payload[1..];
    let (db, rest) = take_name(rest).ok_or(FrameError::MongoHeader("no 0x00 after the db name"))?;
    let (coll, write) =
        take_name(rest).ok_or(FrameError::MongoHeader("no 0x00 after the collection name"))?;
    let db = valid_name(db).ok_or(FrameError::MongoHeader("db name is empty or not UTF-8"))?;
    let coll = valid_name(coll).ok_or(FrameError::MongoHeader(
        "collection name is empty or not UTF-8",
    ))?;
    Ok((db, coll, write))
}

fn take_name(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = input.iter().position(|&b| b == 0)?;
    Some((&input[..nul], &input[nul + 1..]))
}

fn valid_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok().filter(|s| !s.is_empty())
}

/// Appends a Redis payload (no prefix) for `commands` to `out`.
pub fn put_redis_payload<C, A>(out: &mut impl BufMut, port: u16, db: u32, commands: &[C])
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    // One piece: "<port>,<db>\x01", at most 5 + 1 + 10 + 1 bytes.
    let mut header = [0u8; 17];
    let mut len = 0;
    let mut decimal = itoa::Buffer::new();
    for (n, end) in [(u32::from(port), b','), (db, REDIS_HEADER_END)] {
        let digits = decimal.format(n).as_bytes();
        header[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
        header[len] = end;
        len += 1;
    }
    out.put_slice(&header[..len]);
    for cmd in commands {
        resp::encode_command(out, cmd.as_ref());
    }
}

/// Bytes of `"<port>,<db>\x01"`: with [`resp::encoded_len`] of each
/// command, the exact size of a [`put_redis_payload`] (a caller reserves
/// them, or refuses a frame too large, before encoding).
pub fn redis_header_len(port: u16, db: u32) -> usize {
    resp::digits(usize::from(port)) + 1 + resp::digits(db as usize) + 1
}

/// A whole Redis frame, length prefix included.
pub fn redis_frame<C, A>(port: u16, db: u32, commands: &[C]) -> Vec<u8>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    let mut out = vec![0u8; LEN_PREFIX];
    put_redis_payload(&mut out, port, db, commands);
    seal(out)
}

/// A whole Mongo frame, length prefix included, from an encoded write
/// description. Names must be non-empty and free of NUL bytes.
pub fn mongo_frame(db: &str, coll: &str, write_bson: &[u8]) -> Result<Vec<u8>, FrameError> {
    if db.is_empty() || db.contains('\0') {
        return Err(FrameError::MongoHeader("db name is empty or contains NUL"));
    }
    if coll.is_empty() || coll.contains('\0') {
        return Err(FrameError::MongoHeader(
            "collection name is empty or contains NUL",
        ));
    }
    let mut out = Vec::with_capacity(LEN_PREFIX + 3 + db.len() + coll.len() + write_bson.len());
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(MONGO_MARK);
    out.extend_from_slice(db.as_bytes());
    out.push(0);
    out.extend_from_slice(coll.as_bytes());
    out.push(0);
    out.extend_from_slice(write_bson);
    Ok(seal(out))
}

/// Writes the length of `frame[4..]` into its first four bytes.
fn seal(mut frame: Vec<u8>) -> Vec<u8> {
    let len = (frame.len() - LEN_PREFIX) as u32;
    frame[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
    frame
}

/// A SYNC request: "answer once every frame I sent before this is in the
/// spool". `0x03 'S' <u64 LE token>` with its length prefix.
pub fn sync_request(token: u64) -> [u8; SYNC_REQUEST_LEN] {
    control_frame(SYNC, &[&token.to_le_bytes()])
}

/// The token of a SYNC request payload (prefix removed), if it is one.
pub fn parse_sync_request(payload: &[u8]) -> Option<u64> {
    match payload {
        [CONTROL_MARK, SYNC, token @ ..] if token.len() == 8 => {
            let mut t = [0u8; 8];
            t.copy_from_slice(token);
            Some(u64::from_le_bytes(t))
        }
        _ => None,
    }
}

/// A control frame a proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SYNC with its token.
    Sync(u64),
    /// SWITCH: the next frames come through the offered pipe.
    Switch,
}

/// The control frame of `payload` (prefix removed), if it is a known one.
pub fn parse_control(payload: &[u8]) -> Option<Control> {
    match payload {
        [CONTROL_MARK, SWITCH] => Some(Control::Switch),
        _ => parse_sync_request(payload).map(Control::Sync),
    }
}

/// SWITCH: "my next frames come through the pipe you took", sent once the
/// proxy's PIPE reply has arrived. `0x03 'W'` with its length prefix.
pub fn switch_request() -> [u8; SWITCH_LEN] {
    control_frame(SWITCH, &[])
}

/// The proxy's PIPE reply: `0x03 'P' <u16 version>` with its length
/// prefix: the pipe offered with the connection's first bytes is taken,
/// and frames may go through it after a SWITCH.
pub fn pipe_reply() -> [u8; PIPE_REPLY_LEN] {
    control_frame(PIPE, &[&PIPE_VERSION.to_le_bytes()])
}

/// The version of a PIPE reply, if `bytes` is one.
pub fn parse_pipe_reply(bytes: &[u8; PIPE_REPLY_LEN]) -> Option<u16> {
    if bytes[..4] != 4u32.to_le_bytes() || bytes[4] != CONTROL_MARK || bytes[5] != PIPE {
        return None;
    }
    Some(u16::from_le_bytes([bytes[6], bytes[7]]))
}

/// The proxy's answer to a SYNC: `0x03 'S' <u64 token> <u32 refused>` with
/// its length prefix, where `refused` counts the connection's frames
/// refused since the previous SYNC (bad frames, spool full).
pub fn sync_reply(token: u64, refused: u32) -> [u8; SYNC_REPLY_LEN] {
    control_frame(SYNC, &[&token.to_le_bytes(), &refused.to_le_bytes()])
}

/// A control frame of `N` bytes, length prefix included: `0x03 <kind>`,
/// then the pieces of `body` back to back, which fill the rest (each
/// caller's `N` is its frame's constant length).
fn control_frame<const N: usize>(kind: u8, body: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    out[..LEN_PREFIX].copy_from_slice(&((N - LEN_PREFIX) as u32).to_le_bytes());
    out[LEN_PREFIX] = CONTROL_MARK;
    out[LEN_PREFIX + 1] = kind;
    let mut at = LEN_PREFIX + 2;
    for piece in body {
        out[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    debug_assert_eq!(at, N, "a control frame's pieces fill it");
    out
}

/// (token, refused) of a SYNC reply, if `bytes` is one.
pub fn parse_sync_reply(bytes: &[u8; SYNC_REPLY_LEN]) -> Option<(u64, u32)> {
    if bytes[..4] != 14u32.to_le_bytes() || bytes[4] != CONTROL_MARK || bytes[5] != SYNC {
        return None;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&bytes[6..14]);
    let mut r = [0u8; 4];
    r.copy_from_slice(&bytes[14..]);
    Some((u64::from_le_bytes(t), u32::from_le_bytes(r)))
}

/// What the stream decoder found.
#[derive(Debug, PartialEq)]
pub enum Framed {
    /// A complete payload (prefix removed).
    Frame(Bytes),
    /// A length prefix above the limit; its payload is being skipped so the
    /// stream stays in step.
    Oversize { len: u32 },
}

/// The most a decoder reserves ahead of the bytes that have arrived.
pub const RESERVE_AHEAD: usize = 64 * 1024;

/// Cuts a client byte stream into frames. Never buffers more than one frame
/// of at most `max_frame` bytes; oversized frames are skipped, not read.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    skip: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: u32) -> Self {
        Self { max_frame, skip: 0 }
    }

    /// Takes the next frame out of `buf`, if one is complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Framed> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        if buf.len() < LEN_PREFIX {
            return None;
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len > self.max_frame {
            buf.advance(LEN_PREFIX);
            self.skip = len as usize;
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            return Some(Framed::Oversize { len });
        }
        let total = LEN_PREFIX + len as usize;
        if buf.len() < total {
            // Room for what is coming, but never more than a read's worth
            // ahead of the bytes that arrived: a length alone reserves
            // nothing large.
            buf.reserve((total - buf.len()).min(RESERVE_AHEAD));
            return None;
        }
        buf.advance(LEN_PREFIX);
        Some(Framed::Frame(buf.split_to(len as usize).freeze()))
    }

    /// The size (prefix included) of the frame `buf` has begun and not yet
    /// completed, once its length prefix is in; `None` between frames and
    /// while an oversized frame is skipped.
    pub fn pending(&self, buf: &BytesMut) -> Option<usize> {
        if self.skip > 0 || buf.len() < LEN_PREFIX {
            return None;
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let total = LEN_PREFIX + len as usize;
        (len <= self.max_frame && buf.len() < total).then_some(total)
    }

    /// True when the decoder is between frames (nothing half-read).
    pub fn is_idle(&self, buf: &BytesMut) -> bool {
        self.skip == 0 && buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_parse_and_the_pipe_reply_round_trips() {
        let switch = switch_request();
        assert_eq!(switch.len(), SWITCH_LEN);
        assert_eq!(parse_control(&switch[LEN_PREFIX..]), Some(Control::Switch));
        let sync = sync_request(9);
        assert_eq!(parse_control(&sync[LEN_PREFIX..]), Some(Control::Sync(9)));
        // A SWITCH with more bytes, and a PIPE reply sent as a request, are
        // no control frames the proxy knows.
        assert_eq!(parse_control(&[CONTROL_MARK, SWITCH, 0]), None);
        assert_eq!(parse_control(&pipe_reply()[LEN_PREFIX..]), None);
        let reply = pipe_reply();
        assert_eq!(parse_pipe_reply(&reply), Some(PIPE_VERSION));
        let mut other = reply;
        other[5] = SYNC;
        assert_eq!(parse_pipe_reply(&other), None);
        let mut longer = reply;
        longer[0] = 5;
        assert_eq!(parse_pipe_reply(&longer), None);
    }
    use crate::op::MongoWrite;
    use bson::doc;

    const SEED: &[u8] = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";

    #[test]
    fn seed_payload_decodes() {
        let op = decode_payload(&Bytes::from_static(SEED)).expect("seed payload");
        let Op::Redis(op) = op else {
            panic!("not redis")
        };
        assert_eq!((op.port, op.db), (6379, 1));
        assert_eq!(op.commands.len(), 1);
        assert_eq!(op.commands[0].args().to_vec(), [&b"set"[..], b"a", b"b"]);
    }

    #[test]
    fn check_payload_agrees_with_decode_payload() {
        let mongo = mongo_frame(
            "db",
            "c",
            &crate::wire::mongo::encode_write(&MongoWrite::DeleteMany {
                filter: doc! { "k": 1 },
            }),
        )
        .expect("mongo");
        let cases: Vec<Vec<u8>> = vec![
            SEED.to_vec(),
            b"6379,1\x01*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nincr\r\n$1\r\nn\r\n".to_vec(),
            b"6379,1\x01*1\r\n$5\r\nmUlTi\r\n".to_vec(),
            b"6379,1\x01*1\r\n$6\r\nselect\r\n*1\r\n$3\r\nbad".to_vec(),
            b"6379,1\x01*0\r\n".to_vec(),
            b"6379,1\x01".to_vec(),
            b"6379,1*1\r\n$4\r\nPING\r\n".to_vec(),
            b"70000,1\x01*1\r\n$4\r\nPING\r\n".to_vec(),
            b"6379,x\x01*1\r\n$4\r\nPING\r\n".to_vec(),
            b"6379,1\x01*2\r\n$3\r\nset\r\n$9\r\nk\r\n".to_vec(),
            // Refused names in any case, after an accepted command, several
            // (the first is named), and one followed by a syntax error
            // (the syntax error wins, as in decode_payload).
            b"6379,1\x01*1\r\n$4\r\nPING\r\n*1\r\n$7\r\nunwatch\r\n".to_vec(),
            b"6379,1\x01*1\r\n$4\r\nExEc\r\n*1\r\n$5\r\nWATCH\r\n".to_vec(),
            b"6379,1\x01*1\r\n$7\r\ndiscard\r\n*1\r\n$4\r\nPING\r\n+OK\r\n".to_vec(),
            b"6379,1\x01*2\r\n$6\r\nselect\r\n$1\r\n1\r\n".to_vec(),
            b"6379,1\x01*1\r\n$6\r\nselects\r\n".to_vec(),
            b"6379,1\x01*1\r\n$7\r\nselects\r\n".to_vec(),
            b"6379,1\x01*1\r\n$4\r\nPING\r\n*1\r\n$99\r\nPING\r\n".to_vec(),
            b"6379,1\x01*1\r\n$4\r\nPING\r\n*0\r\n".to_vec(),
            b"".to_vec(),
            b"\x05abc".to_vec(),
            mongo[LEN_PREFIX..].to_vec(),
            mongo[LEN_PREFIX..mongo.len() - 1].to_vec(),
        ];
        for payload in cases {
            let decoded = decode_payload(&Bytes::from(payload.clone())).map(|_| ());
            assert_eq!(check_payload(&payload), decoded, "{payload:?}");
        }
    }

    #[test]
    fn redis_header_len_is_the_written_length() {
        for (port, db) in [
            (0u16, 0u32),
            (9, 10),
            (10, 9),
            (99, 100),
            (6379, 999_999_999),
            (65535, 1_000_000_000),
            (65535, u32::MAX),
        ] {
            let mut out = Vec::new();
            put_redis_payload::<[&[u8]; 0], &[u8]>(&mut out, port, db, &[]);
            assert_eq!(out, format!("{port},{db}\x01").as_bytes());
            assert_eq!(redis_header_len(port, db), out.len(), "{port},{db}");
        }
    }

    #[test]
    fn redis_headers_carry_every_port_and_db_in_decimal() {
        for (port, db, header) in [
            (0u16, 0u32, &b"0,0\x01"[..]),
            (65535, 4_294_967_295, b"65535,4294967295\x01"),
            (6379, 10, b"6379,10\x01"),
        ] {
            let frame = redis_frame(port, db, &[["ping"]]);
            assert!(frame[4..].starts_with(header), "{port},{db}");
        }
    }

    #[test]
    fn plain_redis_headers_read_as_the_general_reading_does() {
        let mut accepted = 0;
        for header in [
            "0,0",
            "6379,1",
            "65535,4294967295",
            "65536,1",
            "6379,4294967296",
            "000001,1",
            "1,00000000001",
            "1,0000000001",
            "99999,9",
            ",1",
            "1,",
            "1;1",
            "1,,1",
            "+1,1",
            "1, 1",
            "12345678901,1",
            "",
        ] {
            let tails: [&[u8]; 8] = [
                b"\x01*1\r\n",
                b"\x01",
                b"",
                b"\x02\x01",
                b",\x01",
                b"\x82\x01\x00",
                b"\x80",
                b"\x7f\x01",
            ];
            for tail in tails {
                let payload = [header.as_bytes(), tail].concat();
                let general = general_redis_header(&payload);
                if let Some(plain) = plain_redis_header(&payload) {
                    assert_eq!(Ok(plain), general, "{payload:?}");
                    accepted += 1;
                }
                assert_eq!(redis_header(&payload), general, "{payload:?}");
            }
        }
        // Four headers, each with four tails starting with a flag byte.
        assert_eq!(accepted, 16);
    }

    #[test]
    fn redis_payload_sizes_are_exact() {
        let commands: [&[&[u8]]; 3] = [&[b"set", b"k", b""], &[b"incr", &[b'x'; 1234]], &[b"ping"]];
        for (port, db) in [(0, 0), (9, 10), (6379, 1), (65535, u32::MAX)] {
            for n in 0..=commands.len() {
                let mut out = Vec::new();
                put_redis_payload(&mut out, port, db, &commands[..n]);
                let len = commands[..n]
                    .iter()
                    .map(|c| resp::encoded_len(c))
                    .sum::<usize>();
                assert_eq!(redis_header_len(port, db) + len, out.len());
            }
            assert_eq!(redis_header_len(port, db), format!("{port},{db}").len() + 1);
        }
    }

    #[test]
    fn redis_frame_matches_the_seed_bytes() {
        let frame = redis_frame(6379, 1, &[["set", "a", "b"]]);
        assert_eq!(&frame[..4], &(SEED.len() as u32).to_le_bytes());
        assert_eq!(&frame[4..], SEED);
    }

    #[test]
    fn transaction_payload_has_several_commands() {
        let frame = redis_frame(
            6379,
            2,
            &[
                vec!["set", "cool", "hello0"],
                vec!["set", "awesome", "中文你好0"],
            ],
        );
        let Ok(Op::Redis(op)) = decode_payload(&Bytes::copy_from_slice(&frame[4..])) else {
            panic!("decode")
        };
        assert!(op.is_transaction());
        assert_eq!(op.commands[1].arg(2), "中文你好0".as_bytes());
    }

    #[test]
    fn bad_headers_are_named() {
        let cases: [(&[u8], &str); 5] = [
            (b"6379;1\x01*1\r\n$4\r\nPING\r\n", "redis_header"),
            (b"99999,1\x01*1\r\n$4\r\nPING\r\n", "redis_header"),
            (b"6379,1\x01", "bad_resp"),
            (b"6379,1\x01*1\r\n$5\r\nMULTI\r\n", "refused_command"),
            (b"\x07junk", "unknown_kind"),
        ];
        for (payload, reason) in cases {
            let err = decode_payload(&Bytes::copy_from_slice(payload)).unwrap_err();
            assert_eq!(err.reason(), reason, "{payload:?}: {err}");
        }
    }

    #[test]
    fn refused_names_in_any_case_and_only_those() {
        let refused = [
            "MULTI",
            "EXEC",
            "DISCARD",
            "WATCH",
            "UNWATCH",
            "SELECT",
            "RESET",
            "QUIT",
            "HELLO",
            "AUTH",
            "CLIENT",
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
            "MONITOR",
            "SYNC",
            "PSYNC",
            "REPLCONF",
            "READONLY",
            "READWRITE",
            "ASKING",
        ];
        for name in refused {
            for spelled in [name.to_owned(), name.to_lowercase(), mixed_case(name)] {
                assert!(is_refused(spelled.as_bytes()), "{spelled}");
                let payload = format!("6379,0\x01*1\r\n${}\r\n{spelled}\r\n", spelled.len());
                let err = decode_payload(&Bytes::from(payload)).unwrap_err();
                assert_eq!(err, FrameError::RefusedCommand(name.to_owned()));
            }
        }
        for allowed in [
            "SET",
            "",
            "MULT",
            "MULTIX",
            "EXECUTE",
            "CLIENTS",
            "SYNCS",
            "PUNSUBSCRIBES",
            "MÜLTI",
        ] {
            assert!(!is_refused(allowed.as_bytes()), "{allowed}");
        }
        assert!(!is_refused(b"MULTI\0"));
    }

    fn mixed_case(name: &str) -> String {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    }

    #[test]
    fn mongo_frame_round_trips() {
        let write = MongoWrite::DeleteMany {
            filter: doc! { "key": "value" },
        };
        let frame = mongo_frame(
            "mongo_db_name",
            "mongo_col_name",
            &crate::wire::mongo::encode_write(&write),
        )
        .expect("frame");
        let Ok(Op::Mongo(op)) = decode_payload(&Bytes::copy_from_slice(&frame[4..])) else {
            panic!("decode")
        };
        assert_eq!(
            (op.db.as_str(), op.coll.as_str()),
            ("mongo_db_name", "mongo_col_name")
        );
        assert_eq!(op.write, write);
    }

    #[test]
    fn sync_frames_round_trip() {
        let req = sync_request(0x0102_0304_0506_0708);
        assert_eq!(parse_sync_request(&req[4..]), Some(0x0102_0304_0506_0708));
        assert_eq!(parse_sync_request(b"\x03S123"), None);
        let reply = sync_reply(7, 3);
        assert_eq!(parse_sync_reply(&reply), Some((7, 3)));
        // A control frame is never an operation.
        assert_eq!(
            decode_payload(&Bytes::copy_from_slice(&req[4..])).map_err(|e| e.reason()),
            Err("unknown_kind")
        );
    }

    #[test]
    fn decoder_handles_split_and_oversize_frames() {
        let mut dec = FrameDecoder::new(64);
        let mut buf = BytesMut::new();
        let good = redis_frame(6379, 0, &[["set", "k", "v"]]);
        buf.extend_from_slice(&good[..2]);
        assert_eq!(dec.decode(&mut buf), None);
        buf.extend_from_slice(&good[2..]);
        assert!(matches!(dec.decode(&mut buf), Some(Framed::Frame(_))));
        // An oversized frame arriving in pieces, then a good one.
        buf.extend_from_slice(&100u32.to_le_bytes());
        buf.extend_from_slice(&[b'x'; 40]);
        assert_eq!(dec.decode(&mut buf), Some(Framed::Oversize { len: 100 }));
        assert_eq!(dec.decode(&mut buf), None);
        buf.extend_from_slice(&[b'x'; 60]);
        buf.extend_from_slice(&good);
        assert!(matches!(dec.decode(&mut buf), Some(Framed::Frame(p)) if p[..] == good[4..]));
        assert!(dec.is_idle(&buf));
    }
}
