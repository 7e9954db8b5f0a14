//! Operations the Redis applier tests send (shared by their test binaries).

use syncs_engine::op::{Op, RedisCommand, RedisOp};

/// One Redis command in db 0, as the router would hand it over.
pub fn op(args: &[&[u8]]) -> Op {
    Op::Redis(RedisOp {
        port: 6379,
        db: 0,
        commands: vec![RedisCommand::new(args).expect("a command")].into(),
    })
}
