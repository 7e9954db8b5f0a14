//! Operations the Redis applier tests send (shared by their test binaries).

use bytes::Bytes;
use syncs_engine::op::{Op, RedisCommand, RedisOp};

/// One Redis command in db 0, as the router would hand it over.
pub fn op(args: &[&[u8]]) -> Op {
    let args = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    Op::Redis(RedisOp {
        port: 6379,
        db: 0,
        commands: vec![RedisCommand::new(args).expect("a command")],
    })
}
