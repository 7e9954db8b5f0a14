//! The Redis command table: which groups (`@write`, `@admin`, ...) each
//! command belongs to, and which commands syncs treats as dangerous.
//!
//! The groups follow Redis' ACL categories (`ACL CAT`), at the level of the
//! command name (a command with subcommands, like `CLIENT` or `XGROUP`, gets
//! the union of what matters for replication). `@fast` and `@slow` are not
//! offered: they say nothing about where an operation should go.
//!
//! `@dangerous` is syncs' own list, narrower than Redis' category of the same
//! name: it holds the commands that damage or reconfigure a *target* when
//! replayed there (flushes, server configuration, replication and cluster
//! control, persistence control, script/function/module management, client
//! control). Redis also puts read-only but slow commands such as `KEYS`,
//! `INFO` or `SORT` into its `@dangerous`; replaying them cannot change a
//! target, so syncs does not (they are in `@read`; `cmd @read -> drop`
//! handles them).

/// A command group, written `@name` in rules files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    Keyspace,
    Read,
    Write,
    String,
    Bitmap,
    List,
    Hash,
    Set,
    SortedSet,
    HyperLogLog,
    Geo,
    Stream,
    PubSub,
    Transaction,
    Scripting,
    Connection,
    Admin,
    Blocking,
    Dangerous,
    /// Every command, including ones missing from this table. Naming `@all`
    /// does not count as naming a dangerous command explicitly.
    All,
}

const KS: u32 = 1 << 0;
const R: u32 = 1 << 1;
const W: u32 = 1 << 2;
const STR: u32 = 1 << 3;
const BIT: u32 = 1 << 4;
const LST: u32 = 1 << 5;
const HSH: u32 = 1 << 6;
const SET: u32 = 1 << 7;
const ZS: u32 = 1 << 8;
const HLL: u32 = 1 << 9;
const GEO: u32 = 1 << 10;
const XS: u32 = 1 << 11;
const PS: u32 = 1 << 12;
const TX: u32 = 1 << 13;
const SC: u32 = 1 << 14;
const CN: u32 = 1 << 15;
const ADM: u32 = 1 << 16;
const BLK: u32 = 1 << 17;
const DNG: u32 = 1 << 18;

impl Group {
    /// Every group, in the order used by the documentation.
    pub const ALL: [Group; 20] = [
        Group::Keyspace,
        Group::Read,
        Group::Write,
        Group::String,
        Group::Bitmap,
        Group::List,
        Group::Hash,
        Group::Set,
        Group::SortedSet,
        Group::HyperLogLog,
        Group::Geo,
        Group::Stream,
        Group::PubSub,
        Group::Transaction,
        Group::Scripting,
        Group::Connection,
        Group::Admin,
        Group::Blocking,
        Group::Dangerous,
        Group::All,
    ];

    /// The name without `@`.
    pub fn name(self) -> &'static str {
        match self {
            Group::Keyspace => "keyspace",
            Group::Read => "read",
            Group::Write => "write",
            Group::String => "string",
            Group::Bitmap => "bitmap",
            Group::List => "list",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::SortedSet => "sortedset",
            Group::HyperLogLog => "hyperloglog",
            Group::Geo => "geo",
            Group::Stream => "stream",
            Group::PubSub => "pubsub",
            Group::Transaction => "transaction",
            Group::Scripting => "scripting",
            Group::Connection => "connection",
            Group::Admin => "admin",
            Group::Blocking => "blocking",
            Group::Dangerous => "dangerous",
            Group::All => "all",
        }
    }

    /// Looks a group up by name (without `@`, any case).
    pub fn from_name(name: &str) -> Option<Group> {
        Group::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn bit(self) -> u32 {
        match self {
            Group::Keyspace => KS,
            Group::Read => R,
            Group::Write => W,
            Group::String => STR,
            Group::Bitmap => BIT,
            Group::List => LST,
            Group::Hash => HSH,
            Group::Set => SET,
            Group::SortedSet => ZS,
            Group::HyperLogLog => HLL,
            Group::Geo => GEO,
            Group::Stream => XS,
            Group::PubSub => PS,
            Group::Transaction => TX,
            Group::Scripting => SC,
            Group::Connection => CN,
            Group::Admin => ADM,
            Group::Blocking => BLK,
            Group::Dangerous => DNG,
            Group::All => u32::MAX,
        }
    }

    /// The commands of the table in this group, in table order.
    pub fn commands(self) -> impl Iterator<Item = &'static str> {
        let bit = self.bit();
        COMMANDS
            .iter()
            .filter(move |(_, g)| g & bit != 0)
            .map(|(n, _)| *n)
    }

    /// True if the command (upper case) is in this group.
    pub fn contains(self, upper_name: &str) -> bool {
        self == Group::All || command_bits(upper_name).is_some_and(|b| b & self.bit() != 0)
    }
}

/// Every command syncs knows, upper case, with its groups.
pub(crate) const COMMANDS: &[(&str, u32)] = &[
    // keyspace
    ("COPY", KS | W),
    ("DBSIZE", KS | R),
    ("DEL", KS | W),
    ("DUMP", KS | R),
    ("EXISTS", KS | R),
    ("EXPIRE", KS | W),
    ("EXPIREAT", KS | W),
    ("EXPIRETIME", KS | R),
    ("FLUSHALL", KS | W | DNG),
    ("FLUSHDB", KS | W | DNG),
    ("KEYS", KS | R),
    ("MIGRATE", KS | W | DNG),
    ("MOVE", KS | W),
    ("OBJECT", KS | R),
    ("PERSIST", KS | W),
    ("PEXPIRE", KS | W),
    ("PEXPIREAT", KS | W),
    ("PEXPIRETIME", KS | R),
    ("PTTL", KS | R),
    ("RANDOMKEY", KS | R),
    ("RENAME", KS | W),
    ("RENAMENX", KS | W),
    ("RESTORE", KS | W),
    ("RESTORE-ASKING", KS | W | DNG),
    ("SCAN", KS | R),
    ("SORT", KS | W | LST | SET | ZS),
    ("SORT_RO", KS | R | LST | SET | ZS),
    ("SWAPDB", KS | W | DNG),
    ("TOUCH", KS | R),
    ("TTL", KS | R),
    ("TYPE", KS | R),
    ("UNLINK", KS | W),
    ("WAIT", CN),
    ("WAITAOF", CN),
    // strings
    ("APPEND", STR | W),
    ("DECR", STR | W),
    ("DECRBY", STR | W),
    ("GET", STR | R),
    ("GETDEL", STR | W),
    ("GETEX", STR | W),
    ("GETRANGE", STR | R),
    ("GETSET", STR | W),
    ("INCR", STR | W),
    ("INCRBY", STR | W),
    ("INCRBYFLOAT", STR | W),
    ("LCS", STR | R),
    ("MGET", STR | R),
    ("MSET", STR | W),
    ("MSETNX", STR | W),
    ("PSETEX", STR | W),
    ("SET", STR | W),
    ("SETEX", STR | W),
    ("SETNX", STR | W),
    ("SETRANGE", STR | W),
    ("STRLEN", STR | R),
    ("SUBSTR", STR | R),
    // bitmaps
    ("BITCOUNT", BIT | R),
    ("BITFIELD", BIT | W),
    ("BITFIELD_RO", BIT | R),
    ("BITOP", BIT | W),
    ("BITPOS", BIT | R),
    ("GETBIT", BIT | R),
    ("SETBIT", BIT | W),
    // lists
    ("BLMOVE", LST | W | BLK),
    ("BLMPOP", LST | W | BLK),
    ("BLPOP", LST | W | BLK),
    ("BRPOP", LST | W | BLK),
    ("BRPOPLPUSH", LST | W | BLK),
    ("LINDEX", LST | R),
    ("LINSERT", LST | W),
    ("LLEN", LST | R),
    ("LMOVE", LST | W),
    ("LMPOP", LST | W),
    ("LPOP", LST | W),
    ("LPOS", LST | R),
    ("LPUSH", LST | W),
    ("LPUSHX", LST | W),
    ("LRANGE", LST | R),
    ("LREM", LST | W),
    ("LSET", LST | W),
    ("LTRIM", LST | W),
    ("RPOP", LST | W),
    ("RPOPLPUSH", LST | W),
    ("RPUSH", LST | W),
    ("RPUSHX", LST | W),
    // hashes
    ("HDEL", HSH | W),
    ("HEXISTS", HSH | R),
    ("HEXPIRE", HSH | W),
    ("HEXPIREAT", HSH | W),
    ("HEXPIRETIME", HSH | R),
    ("HGET", HSH | R),
    ("HGETALL", HSH | R),
    ("HGETDEL", HSH | W),
    ("HGETEX", HSH | W),
    ("HINCRBY", HSH | W),
    ("HINCRBYFLOAT", HSH | W),
    ("HKEYS", HSH | R),
    ("HLEN", HSH | R),
    ("HMGET", HSH | R),
    ("HMSET", HSH | W),
    ("HPERSIST", HSH | W),
    ("HPEXPIRE", HSH | W),
    ("HPEXPIREAT", HSH | W),
    ("HPEXPIRETIME", HSH | R),
    ("HPTTL", HSH | R),
    ("HRANDFIELD", HSH | R),
    ("HSCAN", HSH | R),
    ("HSET", HSH | W),
    ("HSETEX", HSH | W),
    ("HSETNX", HSH | W),
    ("HSTRLEN", HSH | R),
    ("HTTL", HSH | R),
    ("HVALS", HSH | R),
    // sets
    ("SADD", SET | W),
    ("SCARD", SET | R),
    ("SDIFF", SET | R),
    ("SDIFFSTORE", SET | W),
    ("SINTER", SET | R),
    ("SINTERCARD", SET | R),
    ("SINTERSTORE", SET | W),
    ("SISMEMBER", SET | R),
    ("SMEMBERS", SET | R),
    ("SMISMEMBER", SET | R),
    ("SMOVE", SET | W),
    ("SPOP", SET | W),
    ("SRANDMEMBER", SET | R),
    ("SREM", SET | W),
    ("SSCAN", SET | R),
    ("SUNION", SET | R),
    ("SUNIONSTORE", SET | W),
    // sorted sets
    ("BZMPOP", ZS | W | BLK),
    ("BZPOPMAX", ZS | W | BLK),
    ("BZPOPMIN", ZS | W | BLK),
    ("ZADD", ZS | W),
    ("ZCARD", ZS | R),
    ("ZCOUNT", ZS | R),
    ("ZDIFF", ZS | R),
    ("ZDIFFSTORE", ZS | W),
    ("ZINCRBY", ZS | W),
    ("ZINTER", ZS | R),
    ("ZINTERCARD", ZS | R),
    ("ZINTERSTORE", ZS | W),
    ("ZLEXCOUNT", ZS | R),
    ("ZMPOP", ZS | W),
    ("ZMSCORE", ZS | R),
    ("ZPOPMAX", ZS | W),
    ("ZPOPMIN", ZS | W),
    ("ZRANDMEMBER", ZS | R),
    ("ZRANGE", ZS | R),
    ("ZRANGEBYLEX", ZS | R),
    ("ZRANGEBYSCORE", ZS | R),
    ("ZRANGESTORE", ZS | W),
    ("ZRANK", ZS | R),
    ("ZREM", ZS | W),
    ("ZREMRANGEBYLEX", ZS | W),
    ("ZREMRANGEBYRANK", ZS | W),
    ("ZREMRANGEBYSCORE", ZS | W),
    ("ZREVRANGE", ZS | R),
    ("ZREVRANGEBYLEX", ZS | R),
    ("ZREVRANGEBYSCORE", ZS | R),
    ("ZREVRANK", ZS | R),
    ("ZSCAN", ZS | R),
    ("ZSCORE", ZS | R),
    ("ZUNION", ZS | R),
    ("ZUNIONSTORE", ZS | W),
    // hyperloglog
    ("PFADD", HLL | W),
    ("PFCOUNT", HLL | R),
    ("PFDEBUG", HLL | W | ADM | DNG),
    ("PFMERGE", HLL | W),
    ("PFSELFTEST", HLL | ADM | DNG),
    // geo
    ("GEOADD", GEO | W),
    ("GEODIST", GEO | R),
    ("GEOHASH", GEO | R),
    ("GEOPOS", GEO | R),
    ("GEORADIUS", GEO | W),
    ("GEORADIUSBYMEMBER", GEO | W),
    ("GEORADIUSBYMEMBER_RO", GEO | R),
    ("GEORADIUS_RO", GEO | R),
    ("GEOSEARCH", GEO | R),
    ("GEOSEARCHSTORE", GEO | W),
    // streams
    ("XACK", XS | W),
    ("XADD", XS | W),
    ("XAUTOCLAIM", XS | W),
    ("XCLAIM", XS | W),
    ("XDEL", XS | W),
    ("XGROUP", XS | W),
    ("XINFO", XS | R),
    ("XLEN", XS | R),
    ("XPENDING", XS | R),
    ("XRANGE", XS | R),
    ("XREAD", XS | R | BLK),
    ("XREADGROUP", XS | W | BLK),
    ("XREVRANGE", XS | R),
    ("XSETID", XS | W),
    ("XTRIM", XS | W),
    // pub/sub
    ("PSUBSCRIBE", PS),
    ("PUBLISH", PS),
    ("PUBSUB", PS),
    ("PUNSUBSCRIBE", PS),
    ("SPUBLISH", PS),
    ("SSUBSCRIBE", PS),
    ("SUBSCRIBE", PS),
    ("SUNSUBSCRIBE", PS),
    ("UNSUBSCRIBE", PS),
    // transactions
    ("DISCARD", TX),
    ("EXEC", TX),
    ("MULTI", TX),
    ("UNWATCH", TX),
    ("WATCH", TX),
    // scripting (not in @write, as in Redis: name them or @scripting)
    ("EVAL", SC),
    ("EVALSHA", SC),
    ("EVALSHA_RO", SC),
    ("EVAL_RO", SC),
    ("FCALL", SC),
    ("FCALL_RO", SC),
    ("FUNCTION", SC | W | DNG),
    ("SCRIPT", SC | DNG),
    // connection
    ("AUTH", CN),
    ("CLIENT", CN | ADM | DNG),
    ("ECHO", CN),
    ("HELLO", CN),
    ("PING", CN),
    ("QUIT", CN),
    ("READONLY", CN),
    ("READWRITE", CN),
    ("RESET", CN),
    ("SELECT", CN),
    // server administration
    ("ACL", ADM | DNG),
    ("BGREWRITEAOF", ADM | DNG),
    ("BGSAVE", ADM | DNG),
    ("CLUSTER", ADM | DNG),
    ("COMMAND", CN),
    ("CONFIG", ADM | DNG),
    ("DEBUG", ADM | DNG),
    ("FAILOVER", ADM | DNG),
    ("INFO", R),
    ("LASTSAVE", ADM),
    ("LATENCY", ADM | DNG),
    ("LOLWUT", R),
    ("MEMORY", R),
    ("MODULE", ADM | DNG),
    ("MONITOR", ADM | DNG),
    ("PSYNC", ADM | DNG),
    ("REPLCONF", ADM | DNG),
    ("REPLICAOF", ADM | DNG),
    ("ROLE", R),
    ("SAVE", ADM | DNG),
    ("SHUTDOWN", ADM | DNG),
    ("SLAVEOF", ADM | DNG),
    ("SLOWLOG", ADM | DNG),
    ("SYNC", ADM | DNG),
    ("TIME", R),
];

/// The groups of a command given in upper case; `None` if unknown.
pub(crate) fn command_bits(upper_name: &str) -> Option<u32> {
    COMMANDS
        .iter()
        .find(|(n, _)| *n == upper_name)
        .map(|(_, b)| *b)
}

/// `f` of `name` in ASCII upper case, made on the stack (no allocation:
/// the router and the frame checks ask it of every command); `None` when
/// `name` is longer than `N` bytes.
#[inline]
pub fn with_upper<const N: usize, T>(name: &[u8], f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    if name.len() > N {
        return None;
    }
    let mut buf = [0u8; N];
    let upper = &mut buf[..name.len()];
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    Some(f(upper))
}

/// True if syncs knows the command (any case).
pub fn is_known_command(name: &str) -> bool {
    command_bits(&name.to_ascii_uppercase()).is_some()
}

/// True if the command (any case) is in syncs' `@dangerous` group.
pub fn is_dangerous(name: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    command_bits(&s.to_ascii_uppercase()).is_some_and(|b| b & DNG != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_within_sections_and_unique() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|(n, _)| *n).collect();
        let len = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), len, "duplicate command in the table");
    }

    #[test]
    fn groups() {
        assert!(Group::Write.contains("SET"));
        assert!(!Group::Write.contains("GET"));
        assert!(Group::Dangerous.contains("FLUSHALL"));
        assert!(!Group::Dangerous.contains("KEYS"));
        assert!(Group::Read.contains("KEYS"));
        assert!(Group::All.contains("NOTACOMMAND"));
        assert_eq!(Group::from_name("SortedSet"), Some(Group::SortedSet));
        assert!(is_dangerous(b"flushdb"));
        assert!(!is_dangerous(b"set"));
    }
}
