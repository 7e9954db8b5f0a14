//! Operations written as words, for the routing tests (shared by their
//! test binaries).

use syncs_engine::op::{Op, RedisCommand, RedisOp};

/// `"SET k v"` as a command.
pub fn cmd(words: &str) -> RedisCommand {
    RedisCommand::new(&words.split(' ').collect::<Vec<_>>()).expect("non-empty")
}

/// A Redis operation (one command, or a transaction of several) from
/// application port `port`, db `db`.
pub fn redis_op(port: u16, db: u32, cmds: &[&str]) -> Op {
    Op::Redis(RedisOp {
        port,
        db,
        commands: cmds.iter().map(|c| cmd(c)).collect(),
    })
}

/// Each command of `op` as its words joined by spaces (`"SET k v"`).
pub fn words(op: &RedisOp) -> Vec<String> {
    op.commands
        .iter()
        .map(|c| {
            c.args()
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
