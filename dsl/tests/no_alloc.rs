//! The architecture invariant "deciding does not allocate"
//! (docs/ARCHITECTURE.md, `dsl/`): `decide_redis` and `decide_mongo` are
//! called under a counting global allocator, over a rule set that uses every
//! kind of condition and pattern (exact, prefix, suffix, prefix and suffix,
//! globs with `?` and `[...]`, regexes with and without `i`, ports, dbs,
//! commands and groups, dangerous commands, fan-out, drop, dead-letter,
//! defaults) and more than 64 Redis rules (several bitset words).
//!
//! One exception, from the `regex` crate: each compiled regex keeps a pool
//! of search caches, and the first search with a regex on a thread creates
//! that thread's cache (tens of allocations per regex; a thread that finds
//! the pool busy at that instant may also create a transient one). So:
//! rules without regexes never allocate, not even on a thread's first call;
//! with regexes, deciding does not allocate once each regex has run on the
//! thread (`/.../` patterns are regexes, and so are globs with more than
//! one wildcard or with `?` or `[...]`).
//!
//! Allocations are counted per thread, only while a thread asks it to, so
//! the test harness and other tests running meanwhile are not counted.

// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards
// to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::PathBuf;

use syncs_dsl::{parse_sources, render, Decision, MongoOpKind, MongoQuery, RedisQuery, RuleSet};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted now.
    static ON: Cell<bool> = const { Cell::new(false) };
    /// Allocations (alloc, alloc_zeroed, realloc) counted on this thread.
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// Counts one allocation of the current thread, if it is counting. Const
/// thread-locals without destructors: no allocation, no recursion, and
/// `try_with` never panics (not even while the thread is being torn down).
fn note() {
    let on = ON.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above; `ptr` was allocated by `System` through us.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = COUNT.with(Cell::get);
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    COUNT.with(Cell::get) - before
}

/// Redis rules in every shape, then `n` generated ones (the generated part
/// follows `dsl/benches/matching.rs`), then a default. Without `regexes`,
/// the same shapes with globs that compile to no regex.
fn redis_rules(n: usize, regexes: bool) -> String {
    let mut s = String::new();
    for t in 0..4 {
        s.push_str(&format!(
            "target t{t} = redis \"redis://127.0.0.1:{}\"\n",
            6390 + t
        ));
    }
    s.push_str("target f = file \"/tmp/syncs-no-alloc.jsonl\"\n");
    s.push_str(
        "target m = mongo \"mongodb://127.0.0.1:27017\"\n\
         rule exact: redis key \"config\" -> t1\n\
         rule suffix: redis key \"*:scratch\" -> drop\n\
         rule both: redis key \"pre:*:post\" -> t2 key \"{1}\"\n\
         rule keyless: redis cmd PING, MULTI -> drop\n\
         rule poison: redis key \"poison:*\" -> dead-letter \"poisoned keys\"\n\
         rule admin_flush: redis port 6390 cmd FLUSHDB -> t0\n\
         rule groups: redis cmd @hash, EXPIRE key \"h:*\" -> t0 db 3\n",
    );
    s.push_str(if regexes {
        "rule one_char: redis key \"slot?:x\", \"[a-c]set:*\" -> t3 prefix \"g:\"\n\
         rule regex_i: redis key /^ci:[0-9]+$/i -> t1, f\n\
         rule captures: redis key /^cart:(?P<user>[0-9]+):(?P<item>[a-z]+)$/ -> t2 key \"c:{user}:{item}\"\n\
         rule unanchored: redis db 7 key /mid[0-9]/ -> t3 db 1\n"
    } else {
        "rule one_char: redis key \"slot*:x\", \"bset:*\" -> t3 prefix \"g:\"\n\
         rule ci: redis key \"CI:*\", \"ci:*\" -> t1, f\n\
         rule captures: redis key \"cart:*\" -> t2 key \"c:{1}\"\n\
         rule unanchored: redis db 7 key \"mid*\" -> t3 db 1\n"
    });
    for i in 0..n {
        let t = i % 4;
        let rule = match i % 5 {
            0 => format!(
                "rule r{i}: redis port {} key \"tenant{i}:*\" -> t{t}",
                6379 + i % 8
            ),
            1 => format!(
                "rule r{i}: redis db {} cmd SET, DEL, EXPIRE key \"cache{i}:*\" -> t{t} db 2",
                i % 16
            ),
            2 => {
                format!("rule r{i}: redis cmd @write key \"sess{i}:*\" -> t{t} key \"s{i}:{{1}}\"")
            }
            3 if regexes => format!("rule r{i}: redis key /^log{i}:[0-9]+$/ -> drop"),
            3 => format!("rule r{i}: redis key \"log{i}:*5\" -> drop"),
            _ => format!(
                "rule r{i}: redis port 7000..7100 key \"q{i}:*\" -> t{t}, t{}",
                (t + 1) % 4
            ),
        };
        s.push_str(&rule);
        s.push('\n');
    }
    s.push_str("rule no_reads: redis cmd @read -> drop\n");
    s.push_str("default redis -> t0\n");
    s
}

fn mongo_rules(n: usize, regexes: bool) -> String {
    let mut s = String::from(
        "rule no_sessions: mongo coll \"sessions\" -> drop\n\
         rule users: mongo db \"app\" coll \"users\" op insert, update -> m db \"app_copy\", f\n\
         rule odd: mongo coll \"poison_*\" -> dead-letter \"poisoned\"\n",
    );
    s.push_str(if regexes {
        "rule tenants: mongo db /^tenant_[0-9]+$/ coll \"orders\", \"invoices\" -> m db \"{db}_mirror\"\n\
         rule upper: mongo db /^UP/i -> m\n"
    } else {
        "rule tenants: mongo db \"tenant_*\" coll \"orders\", \"invoices\" -> m db \"{db}_mirror\"\n\
         rule upper: mongo db \"UP*\", \"up*\" -> m\n"
    });
    for i in 0..n {
        s.push_str(&match i % 3 {
            0 => format!("rule m{i}: mongo db \"app{i}\" coll \"users\" op insert, update -> m db \"copy_{{db}}\"\n"),
            1 => format!("rule m{i}: mongo db \"app{i}\" coll \"logs_*\" -> drop\n"),
            _ if regexes => format!("rule m{i}: mongo db /^shard{i}_/ op delete -> m coll \"{{coll}}_deleted\"\n"),
            _ => format!("rule m{i}: mongo db \"shard{i}_*\" op delete -> m coll \"{{coll}}_deleted\"\n"),
        });
    }
    s.push_str("default mongo -> m\n");
    s
}

fn load(n: usize, regexes: bool) -> RuleSet {
    let sources = [
        (PathBuf::from("redis.sync"), redis_rules(n, regexes)),
        (PathBuf::from("mongo.sync"), mongo_rules(n, regexes)),
    ];
    match parse_sources(&sources) {
        Ok(r) => r,
        Err(e) => panic!("{}", render(&e)),
    }
}

/// Port, db, command and key of a [`RedisQuery`].
type OwnedRedisQuery = (u16, u32, Vec<u8>, Option<Vec<u8>>);

/// Queries over the whole set: hits of every rule shape, misses, key-less
/// and unknown commands, over-long command names, dangerous commands with
/// and without a rule naming them, empty and long keys.
fn redis_queries(n: usize) -> Vec<OwnedRedisQuery> {
    let mut q: Vec<OwnedRedisQuery> = Vec::new();
    let mut add = |port: u16, db: u32, cmd: &str, key: Option<String>| {
        q.push((
            port,
            db,
            cmd.as_bytes().to_vec(),
            key.map(String::into_bytes),
        ));
    };
    for i in 0..n {
        match i % 5 {
            0 => add(
                (6379 + i % 8) as u16,
                0,
                "SET",
                Some(format!("tenant{i}:user:42")),
            ),
            1 => add(
                6379,
                (i % 16) as u32,
                "del",
                Some(format!("cache{i}:page:/index")),
            ),
            2 => add(6379, 0, "hset", Some(format!("sess{i}:abcdef"))),
            3 => add(6379, 0, "set", Some(format!("log{i}:12345"))),
            _ => add(7050, 3, "lpush", Some(format!("q{i}:jobs"))),
        }
        // Near misses: the prefix but not the rest, the wrong port or db.
        add(6378, 1, "SET", Some(format!("tenant{i}")));
        add(6379, 0, "set", Some(format!("log{i}:12a45")));
    }
    for (cmd, key) in [
        ("SET", Some("config")),
        ("set", Some("user:1:scratch")),
        ("SET", Some("pre:abc:post")),
        ("SET", Some("pre:post")),
        ("GETSET", Some("slot7:x")),
        ("SADD", Some("bset:members")),
        ("INCR", Some("CI:42")),
        ("HINCRBY", Some("cart:42:apple")),
        ("HINCRBY", Some("cart:x:apple")),
        ("SET", Some("poison:1")),
        ("HSET", Some("h:user")),
        ("EXPIRE", Some("h:user")),
        ("GET", Some("h:user")),
        ("SET", Some("")),
        ("SET", Some("user:1000:profile")),
        ("PING", None),
        ("MULTI", None),
        ("FLUSHALL", None),
        ("FLUSHDB", None),
        ("CONFIG", None),
        ("NOSUCHCOMMAND", Some("tenant0:a")),
        ("ANAMEFARLONGERTHANANYREDISCOMMANDISEVER", Some("k")),
    ] {
        add(6379, 0, cmd, key.map(str::to_string));
    }
    add(6390, 0, "FLUSHDB", None);
    add(6379, 7, "SET", Some("amid5b".to_string()));
    add(6379, 0, "SET", Some("x".repeat(4096)));
    add(
        6379,
        0,
        "SET",
        Some(format!("tenant0:{}", "y".repeat(4096))),
    );
    q
}

fn mongo_queries(n: usize) -> Vec<(String, String, MongoOpKind)> {
    let mut q = Vec::new();
    for i in 0..n {
        let (db, coll, op) = match i % 3 {
            0 => (
                format!("app{i}"),
                "users".to_string(),
                MongoOpKind::UpdateMany,
            ),
            1 => (
                format!("app{i}"),
                "logs_2024".to_string(),
                MongoOpKind::InsertMany,
            ),
            _ => (
                format!("shard{i}_a"),
                "x".to_string(),
                MongoOpKind::DeleteOne,
            ),
        };
        q.push((db, coll, op));
    }
    for (db, coll) in [
        ("app", "sessions"),
        ("app", "users"),
        ("tenant_12", "orders"),
        ("tenant_x", "orders"),
        ("upper_case", "c"),
        ("app", "poison_1"),
        ("other", "x"),
        ("", ""),
    ] {
        for op in MongoOpKind::ALL {
            q.push((db.to_string(), coll.to_string(), op));
        }
    }
    q
}

/// Every query decides, and the decisions cover every kind of outcome (so
/// the test walks every path of the deciders, not only the cheap ones).
fn check_coverage(decisions: &[Decision<'_>]) {
    let route = decisions
        .iter()
        .any(|d| matches!(d, Decision::Route { rule: Some(_), .. }));
    let default = decisions
        .iter()
        .any(|d| matches!(d, Decision::Route { rule: None, .. }));
    let drop = decisions.iter().any(|d| matches!(d, Decision::Drop { .. }));
    let dead = decisions
        .iter()
        .any(|d| matches!(d, Decision::DeadLetter { .. }));
    assert!(route && default && drop && dead, "{decisions:?}");
}

const N: usize = 100;
const ROUNDS: usize = 200;

fn redis_view(owned: &[OwnedRedisQuery]) -> Vec<RedisQuery<'_>> {
    owned
        .iter()
        .map(|(port, db, cmd, key)| RedisQuery {
            port: *port,
            db: *db,
            command: cmd,
            key: key.as_deref(),
        })
        .collect()
}

fn mongo_view(owned: &[(String, String, MongoOpKind)]) -> Vec<MongoQuery<'_>> {
    owned
        .iter()
        .map(|(db, coll, op)| MongoQuery { db, coll, op: *op })
        .collect()
}

/// Each query on its own (a failure names the query), then every query
/// `ROUNDS` times. `warm`: every query is decided once before counting.
fn assert_no_allocation(rules: &RuleSet, warm: bool) {
    let redis_owned = redis_queries(N);
    let redis = redis_view(&redis_owned);
    let mongo_owned = mongo_queries(N);
    let mongo = mongo_view(&mongo_owned);
    if warm {
        check_coverage(
            &redis
                .iter()
                .map(|q| rules.decide_redis(q))
                .collect::<Vec<_>>(),
        );
        check_coverage(
            &mongo
                .iter()
                .map(|q| rules.decide_mongo(q))
                .collect::<Vec<_>>(),
        );
    }
    for q in &redis {
        let n = allocations_in(|| {
            black_box(rules.decide_redis(black_box(q)));
        });
        assert_eq!(n, 0, "decide_redis allocated {n} time(s) for {q:?}");
    }
    for q in &mongo {
        let n = allocations_in(|| {
            black_box(rules.decide_mongo(black_box(q)));
        });
        assert_eq!(n, 0, "decide_mongo allocated {n} time(s) for {q:?}");
    }
    if !warm {
        check_coverage(
            &redis
                .iter()
                .map(|q| rules.decide_redis(q))
                .collect::<Vec<_>>(),
        );
        check_coverage(
            &mongo
                .iter()
                .map(|q| rules.decide_mongo(q))
                .collect::<Vec<_>>(),
        );
    }
    let n = allocations_in(|| {
        for _ in 0..ROUNDS {
            for q in &redis {
                black_box(rules.decide_redis(black_box(q)));
            }
        }
    });
    assert_eq!(
        n, 0,
        "decide_redis allocated {n} time(s) in {ROUNDS} rounds"
    );
    let n = allocations_in(|| {
        for _ in 0..ROUNDS {
            for q in &mongo {
                black_box(rules.decide_mongo(black_box(q)));
            }
        }
    });
    assert_eq!(
        n, 0,
        "decide_mongo allocated {n} time(s) in {ROUNDS} rounds"
    );
}

/// Without regexes nothing is cached anywhere: not even the first call on
/// a fresh thread allocates.
#[test]
fn deciding_without_regexes_never_allocates() {
    let rules = load(N, false);
    std::thread::scope(|s| {
        s.spawn(|| assert_no_allocation(&rules, false));
    });
}

/// With regexes: nothing once each regex has run on the thread (see the
/// module's documentation for the first search).
#[test]
fn deciding_does_not_allocate_once_the_regexes_ran_on_the_thread() {
    let rules = load(N, true);
    assert_no_allocation(&rules, true);
}

/// The counter counts: an allocation inside the closure is seen, one
/// outside it is not (otherwise the tests above would prove nothing).
#[test]
fn the_counter_sees_allocations() {
    let n = allocations_in(|| {
        black_box(vec![0u8; 16]);
    });
    assert_eq!(n, 1);
    let outside = black_box(vec![1u8; 16]);
    assert_eq!(
        allocations_in(|| assert_eq!(black_box(&outside).len(), 16)),
        0
    );
}
