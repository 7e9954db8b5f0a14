//! Rule matching speed: `decide_redis` over 10, 100 and 1,000 rules, and
//! `decide_mongo` over 100 rules.
//!
//! Run: `cargo bench -p syncs-dsl --bench matching`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use syncs_dsl::{parse_sources, MongoOpKind, MongoQuery, RedisQuery, RuleSet};

/// A rule set of `n` Redis rules in five shapes (port + glob, db + commands +
/// glob, group + glob with a rewrite, regex drop, port range + fan-out),
/// each with its own key prefix, then a default.
fn redis_rules(n: usize) -> String {
    let mut s = String::new();
    for t in 0..4 {
        s.push_str(&format!(
            "target t{t} = redis \"redis://127.0.0.1:{}\"\n",
            6390 + t
        ));
    }
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
            3 => format!("rule r{i}: redis key /^log{i}:[0-9]+$/ -> drop"),
            _ => format!(
                "rule r{i}: redis port 7000..7100 key \"q{i}:*\" -> t{t}, t{}",
                (t + 1) % 4
            ),
        };
        s.push_str(&rule);
        s.push('\n');
    }
    s.push_str("default redis -> t0\n");
    s
}

/// Queries that hit rules spread over the whole set, plus misses (default).
fn redis_queries(n: usize) -> Vec<(u16, u32, &'static [u8], Vec<u8>)> {
    let mut q = Vec::new();
    let step = (n / 16).max(1);
    for i in (0..n).step_by(step) {
        let (port, db, cmd, key): (u16, u32, &'static [u8], String) = match i % 5 {
            0 => (
                (6379 + i % 8) as u16,
                0,
                b"SET",
                format!("tenant{i}:user:42"),
            ),
            1 => (
                6379,
                (i % 16) as u32,
                b"del",
                format!("cache{i}:page:/index"),
            ),
            2 => (6379, 0, b"hset", format!("sess{i}:abcdef")),
            3 => (6379, 0, b"set", format!("log{i}:12345")),
            _ => (7050, 3, b"lpush", format!("q{i}:jobs")),
        };
        q.push((port, db, cmd, key.into_bytes()));
    }
    // Misses: fall through to the default.
    q.push((6379, 0, b"SET", b"user:1000:profile".to_vec()));
    q.push((6379, 5, b"INCR", b"counter:visits".to_vec()));
    q.push((6380, 0, b"GET", b"tenantX:none".to_vec()));
    q.push((6379, 0, b"PING", Vec::new()));
    q
}

fn load(text: String) -> RuleSet {
    match parse_sources(&[(PathBuf::from("bench.sync"), text)]) {
        Ok(r) => r,
        Err(e) => panic!("{}", syncs_dsl::render(&e)),
    }
}

fn bench_redis(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_redis");
    for n in [10usize, 100, 1000] {
        let rules = load(redis_rules(n));
        let queries = redis_queries(n);
        let queries: Vec<RedisQuery<'_>> = queries
            .iter()
            .map(|(port, db, cmd, key)| RedisQuery {
                port: *port,
                db: *db,
                command: cmd,
                key: if key.is_empty() { None } else { Some(key) },
            })
            .collect();
        group.throughput(Throughput::Elements(queries.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &queries, |b, qs| {
            b.iter(|| {
                for q in qs {
                    black_box(rules.decide_redis(black_box(q)));
                }
            })
        });
    }
    group.finish();
}

fn bench_mongo(c: &mut Criterion) {
    let mut s = String::from("target m = mongo \"mongodb://127.0.0.1:27017\"\n");
    for i in 0..100 {
        s.push_str(&match i % 3 {
            0 => format!("rule m{i}: mongo db \"app{i}\" coll \"users\" op insert, update -> m db \"copy_{{db}}\"\n"),
            1 => format!("rule m{i}: mongo db \"app{i}\" coll \"logs_*\" -> drop\n"),
            _ => format!("rule m{i}: mongo db /^shard{i}_/ op delete -> m coll \"{{coll}}_deleted\"\n"),
        });
    }
    s.push_str("default mongo -> m\n");
    let rules = load(s);
    let names: Vec<(String, &str, MongoOpKind)> = vec![
        ("app0".into(), "users", MongoOpKind::InsertOne),
        ("app49".into(), "logs_2024", MongoOpKind::InsertMany),
        ("shard98_a".into(), "x", MongoOpKind::DeleteMany),
        ("other".into(), "x", MongoOpKind::UpdateOne),
    ];
    let mut group = c.benchmark_group("decide_mongo");
    group.throughput(Throughput::Elements(names.len() as u64));
    group.bench_function("100", |b| {
        b.iter(|| {
            for (db, coll, op) in &names {
                black_box(rules.decide_mongo(black_box(&MongoQuery { db, coll, op: *op })));
            }
        })
    });
    group.finish();
}

fn bench_load(c: &mut Criterion) {
    let text = redis_rules(1000);
    c.bench_function("parse_check_compile_1000_rules", |b| {
        b.iter(|| black_box(load(black_box(text.clone()))))
    });
}

criterion_group!(benches, bench_redis, bench_mongo, bench_load);
criterion_main!(benches);
