//! The server's work per Redis record before it reaches a target: decode
//! the client payload, then route it through the rules (the shipped
//! default's shape, and a set whose rules look at the key).
//!
//! Run: `cargo bench -p syncs-engine --bench server_record`

use std::hint::black_box;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use syncs_dsl::{parse_sources, RuleSet};
use syncs_engine::route::{route, Outcome};
use syncs_engine::wire::client::{decode_payload, put_redis_payload};

/// 1,000 SET payloads, 16-byte keys and 64-byte values, as the suite sends.
fn payloads() -> Vec<Bytes> {
    let value = [b'v'; 64];
    (0..1000)
        .map(|i| {
            let key = format!("c{i:015}");
            let mut out = BytesMut::new();
            put_redis_payload(&mut out, 6379, 0, &[[&b"SET"[..], key.as_bytes(), &value]]);
            out.freeze()
        })
        .collect()
}

fn rules(text: &str) -> RuleSet {
    match parse_sources(&[(PathBuf::from("bench.sync"), text.to_owned())]) {
        Ok(rules) => rules,
        Err(e) => panic!("bench rules do not compile: {e:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let records = payloads();
    let default = rules(
        "target local_redis = redis \"redis://127.0.0.1:6380\"\n\
         default redis -> local_redis\n",
    );
    let keyed = rules(
        "target a = redis \"redis://127.0.0.1:6380\"\n\
         target b = redis \"redis://127.0.0.1:6381\"\n\
         rule sessions: redis key \"s:*\" -> b\n\
         rule logs: redis key \"log:*\" -> drop\n\
         default redis -> a\n",
    );
    let mut group = c.benchmark_group("server_record");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for r in &records {
                black_box(decode_payload(black_box(r)).is_ok());
            }
        })
    });
    for (name, rules) in [
        ("decode_route_default", &default),
        ("decode_route_keyed", &keyed),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || records.clone(),
                |records| {
                    for r in &records {
                        let Ok(op) = decode_payload(r) else {
                            panic!("a bench payload does not decode")
                        };
                        match route(rules, op) {
                            Outcome::Routed { ops, .. } => {
                                black_box(ops);
                            }
                            Outcome::Refused(why) => panic!("refused: {why}"),
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
