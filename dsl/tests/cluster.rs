//! `redis-cluster` and `redis-sentinel` targets: the grammar, their URL
//! lists and options, and the checks on what rules may send them.

mod common;

use std::time::Duration;

use common::{assert_diag, errors, one_error, rules};
use syncs_dsl::*;

const C: &str = "target c = redis-cluster \"redis://127.0.0.1:7000,redis://127.0.0.1:7001\"\n";
const S: &str = "target s = redis-sentinel \"redis://127.0.0.1:26379, redis://127.0.0.1:26380\" { master = \"mymaster\" }\n";

/// `line:col: message` of every error.
fn error_lines(src: &str) -> Vec<String> {
    errors(src)
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect()
}

fn assert_starts(got: &[String], want: &[&str]) {
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "{g:?} should start with {w:?}");
    }
}

#[test]
fn both_kinds_parse_with_their_defaults() {
    let rs = rules(&format!(
        "{C}{S}target r = redis \"redis://a\"\n\
         rule a: redis db 0 -> c\nrule b: redis port 1 -> s\ndefault redis -> r\n"
    ));
    let t = rs.targets();
    assert_eq!(
        t.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [
            TargetKind::RedisCluster,
            TargetKind::RedisSentinel,
            TargetKind::Redis
        ]
    );
    assert_eq!(t[0].kind.as_str(), "redis-cluster");
    assert_eq!(t[1].kind.to_string(), "redis-sentinel");
    assert!(t.iter().all(|t| t.kind.is_redis()));
    assert!(!TargetKind::Mongo.is_redis() && !TargetKind::File.is_redis());
    assert_eq!(
        t[0].urls(),
        ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
    );
    assert_eq!(
        t[1].urls(),
        ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
    );
    assert_eq!(t[2].urls(), ["redis://a"]);
    assert_eq!(
        t.iter().map(|t| t.replicas()).collect::<Vec<_>>(),
        [1, 1, 0]
    );
    assert!(t
        .iter()
        .all(|t| t.replica_timeout() == Duration::from_secs(1)));
    assert!(!t[0].split_transactions());
    assert_eq!(t[1].sentinel_master(), Some("mymaster"));
    assert_eq!(t[0].sentinel_master(), None);
}

#[test]
fn every_option_of_the_new_kinds() {
    let rs = rules(
        "target c = redis-cluster \"redis://u:p@h1:7000, redis://u:p@h2:7000\" {\n\
         pool = 4, timeout = 5s, connect_timeout = 1s, replicas = 2,\n\
         replica_timeout = 250ms, split_transactions = true }\n\
         target s = redis-sentinel \"redis://h:26379/2\" { master = \"m1\",\n\
         sentinel_user = \"sen\", sentinel_password = \"tinel\", replicas = 0 }\n\
         target r = redis \"redis://a\" { replicas = 3, replica_timeout = 2s }\n\
         rule a: redis db 0 -> c\nrule b: redis port 1 -> s\ndefault redis -> r\n",
    );
    let [c, s, r] = rs.targets() else {
        panic!("three targets")
    };
    assert_eq!(
        c.options,
        TargetOptions {
            pool: Some(4),
            timeout: Some(Duration::from_secs(5)),
            connect_timeout: Some(Duration::from_secs(1)),
            replicas: Some(2),
            replica_timeout: Some(Duration::from_millis(250)),
            split_transactions: Some(true),
            ..TargetOptions::default()
        }
    );
    assert!(c.split_transactions());
    assert_eq!(
        (c.replicas(), c.replica_timeout()),
        (2, Duration::from_millis(250))
    );
    assert_eq!(s.options.master.as_deref(), Some("m1"));
    assert_eq!(s.options.sentinel_user.as_deref(), Some("sen"));
    assert_eq!(s.options.sentinel_password.as_deref(), Some("tinel"));
    assert_eq!(s.replicas(), 0);
    assert_eq!(
        (r.replicas(), r.replica_timeout()),
        (3, Duration::from_secs(2))
    );
}

#[test]
fn redis_alone_still_parses_next_to_the_new_words() {
    // `redis->x` (no space), and `redis` before a quote.
    let rs = rules("target r = redis\"redis://a\"\nrule a: redis->r\ndefault redis->r\n");
    assert_eq!(rs.targets()[0].kind, TargetKind::Redis);
    assert_eq!(rs.rule_count(), 1);
}

#[test]
fn a_misspelt_kind_names_the_new_ones() {
    let d = one_error("target c = redis-clustr \"redis://a\"\n");
    assert_diag(&d, 1, 17, "expected a quoted string");
    let d = one_error("target c = cluster \"redis://a\"\n");
    assert_diag(
        &d,
        1,
        12,
        "a target kind (`redis`, `redis-cluster`, `redis-sentinel`, `mongo` or `file`)",
    );
}

#[test]
fn the_new_kinds_take_redis_operations_only() {
    let errs = error_lines(&format!(
        "{C}{S}rule a: mongo db \"x\" -> c\nrule b: mongo db \"y\" -> s\n\
         test \"t\" {{\n  mongo a b insert_one\n  expect c\n}}\ndefault redis -> c db 0, s\n"
    ));
    assert_starts(
        &errs,
        &[
            "3:25: rule `a` handles mongo operations but target `c` is a redis-cluster target",
            "4:25: rule `b` handles mongo operations but target `s` is a redis-sentinel target",
            "7:10: test \"t\" has a mongo input but target `c` is a redis-cluster target",
        ],
    );
}

#[test]
fn url_lists() {
    let errs = error_lines(
        "target a = redis-cluster \"redis://h1:7000,http://h2:7000\"\n\
         target b = redis-cluster \" , \"\n\
         target c = redis-cluster \"redis://h1:7000/3, redis://h2:7000\"\n\
         target d = redis-cluster \"redis://u:p@h1:7000,redis://u:q@h2:7000,redis://h3:7000\"\n\
         target e = redis-sentinel \"redis://h:x\" { master = \"m\" }\n\
         target f = redis-sentinel \"redis://h:26379/4,redis://h:26380/4\" { master = \"m\" }\n\
         target g = redis-cluster \"\"\n\
         default redis -> a db 0, b db 0, c db 0, d db 0, e, f, g db 0\n",
    );
    assert_starts(
        &errs,
        &[
            "1:26: URL 2 of redis-cluster target `a` (http://h2:7000): must start with redis:// or rediss://",
            "2:26: redis-cluster target `b` has no URL in its list",
            "3:26: URL 1 of redis-cluster target `c` (h1:7000) names db 3; a cluster has only db 0: remove `/3`",
            "4:26: URLs 1 (h1:7000) and 2 (h2:7000) of redis-cluster target `d` have different users or passwords",
            "4:26: URLs 1 (h1:7000) and 3 (h3:7000) of redis-cluster target `d` have different users or passwords",
            "5:27: URL 1 of redis-sentinel target `e` (redis://h:x): `x` is not a port",
            "7:26: target `g` has an empty URL",
        ],
    );
}

#[test]
fn tls_to_redis_is_refused_by_the_checker_as_by_the_server() {
    let errs = error_lines(
        "target a = redis \"rediss://h:6379\"\n\
         target b = redis-cluster \"redis://h1:7000, rediss://h2:7000\"\n\
         target c = redis-sentinel \"rediss://h:26379\" { master = \"m\" }\n\
         default redis -> a, b db 0, c\n",
    );
    assert_starts(
        &errs,
        &[
            "1:18: target `a`: TLS to Redis (rediss://) is not supported yet",
            "2:26: target `b`: TLS to Redis (rediss://) is not supported yet",
            "3:27: target `c`: TLS to Redis (rediss://) is not supported yet",
        ],
    );
}

#[test]
fn a_password_is_not_repeated_in_messages() {
    let d =
        one_error("target a = redis-cluster \"redis://u:secret@h1:x\"\ndefault redis -> a db 0\n");
    assert!(!d.message.contains("secret"), "{}", d.message);
    assert!(d.message.contains("redis://…@h1:x"), "{}", d.message);
}

#[test]
fn options_that_do_not_fit_the_kind() {
    let errs = error_lines(
        "target c = redis-cluster \"redis://h:1\" { master = \"m\", fsync = true, replica = 2 }\n\
         target s = redis-sentinel \"redis://h:2\" { master = \"m\", split_transactions = true }\n\
         target r = redis \"redis://h:3\" { sentinel_user = \"u\" }\n\
         target m = mongo \"mongodb://h\" { replicas = 1 }\n\
         target f = file \"/x\" { replica_timeout = 1s }\n\
         rule x: mongo -> m, f\ndefault redis -> c db 0, s, r, f\n",
    );
    assert_starts(
        &errs,
        &[
            "1:42: option `master` does not apply to redis-cluster targets (only to redis-sentinel targets)",
            "1:56: option `fsync` does not apply to redis-cluster targets (only to file targets)",
            "1:70: unknown option `replica` for a redis-cluster target (did you mean `replicas`?); known: pool, timeout, connect_timeout, replicas, replica_timeout, split_transactions",
            "2:57: option `split_transactions` does not apply to redis-sentinel targets (only to redis-cluster targets)",
            "3:34: option `sentinel_user` does not apply to redis targets (only to redis-sentinel targets)",
            "4:34: option `replicas` does not apply to mongo targets (only to redis, redis-cluster and redis-sentinel targets)",
            "5:24: option `replica_timeout` does not apply to file targets (only to redis, redis-cluster and redis-sentinel targets)",
        ],
    );
}

#[test]
fn option_values() {
    let errs = error_lines(
        "target a = redis-cluster \"redis://h:1\" { replicas = 17, split_transactions = 1 }\n\
         target b = redis-cluster \"redis://h:2\" { replica_timeout = 0s }\n\
         target c = redis-cluster \"redis://h:3\" { replica_timeout = 5 }\n\
         target s = redis-sentinel \"redis://h:4\" { master = \"\", sentinel_password = 3 }\n\
         target t = redis-sentinel \"redis://h:5\" { sentinel_user = \"u\" }\n\
         default redis -> a db 0, b db 0, c db 0, s, t\n",
    );
    assert_starts(
        &errs,
        &[
            "1:53: `replicas` must be a number from 0 to 16",
            "1:78: `split_transactions` must be `true` or `false`",
            "2:60: `replica_timeout` must be a non-zero duration",
            "3:60: `replica_timeout` must be a non-zero duration",
            "4:52: `master` must be a non-empty quoted string",
            "4:76: `sentinel_password` must be a non-empty quoted string",
            "5:8: redis-sentinel target `t` needs `master`, the name the sentinels monitor",
            "5:59: `sentinel_user` needs `sentinel_password`",
        ],
    );
}

#[test]
fn replica_timeout_stays_below_timeout() {
    let errs = error_lines(
        "target a = redis-cluster \"redis://h:1\" { timeout = 1s, replica_timeout = 2s }\n\
         target b = redis-sentinel \"redis://h:2\" { master = \"m\", timeout = 500ms }\n\
         target c = redis \"redis://h:3\" { replica_timeout = 30s }\n\
         target d = redis \"redis://h:4\" { replicas = 1, timeout = 1s }\n\
         target e = redis \"redis://h:5\" { timeout = 500ms }\n\
         target f = redis-cluster \"redis://h:6\" { timeout = 500ms, replicas = 0 }\n\
         target g = redis-cluster \"redis://h:7\" { timeout = 500ms, replica_timeout = 100ms }\n\
         default redis -> a db 0, b, c, d, e, f db 0, g db 0\n",
    );
    assert_starts(
        &errs,
        &[
            "1:74: `replica_timeout` (2s) must be shorter than `timeout` (1s)",
            "2:67: `timeout` (500ms) must be longer than `replica_timeout` (default 1s, since redis-sentinel target `b` waits for 1 replica)",
            "3:52: `replica_timeout` (30s) must be shorter than `timeout` (30s)",
            "4:58: `timeout` (1s) must be longer than `replica_timeout` (default 1s, since redis target `d` waits for 1 replica)",
        ],
    );
}

/// (line, col, message) of every diagnostic, errors and warnings.
fn diags(src: &str) -> Vec<(usize, usize, Severity, String)> {
    let all = match parse_sources(&[("t.sync".into(), src.to_string())]) {
        Ok(rs) => rs.warnings().to_vec(),
        Err(d) => d,
    };
    all.into_iter()
        .map(|d| (d.line, d.col, d.severity, d.message))
        .collect()
}

#[test]
fn a_cluster_has_only_db_0() {
    let src = format!(
        "{C}\
         rule all: redis -> c\n\
         rule three: redis port 2 db 3 -> c db 3\n\
         rule some: redis port 3 db 0..3, 9 -> c\n\
         rule zero: redis port 4 db 0 -> c\n\
         rule moved: redis port 5 db 5 -> c db 0\n\
         rule merged: redis port 6 db 1, 4 -> c db 0 prefix \"x:\"\n\
         rule apart: redis port 7 -> c db 0 key \"{{db}}:{{0}}\"\n\
         rule fan: redis port 8 db 2 -> c, c db 0\n\
         default redis -> c\n"
    );
    let got = diags(&src);
    let want = [
        (2, 20, Severity::Error, "rule `all` may route redis db 1 and above into redis-cluster target `c`, which has only db 0: write `c db 0` (dbs merge; `key \"{db}:{0}\"` keeps them apart) or add `db 0` to the rule"),
        (3, 36, Severity::Error, "redis-cluster target `c` has only db 0: `db 3` cannot be written there"),
        (4, 39, Severity::Error, "rule `some` may route redis db 1..3, 9 into redis-cluster target `c`"),
        (7, 40, Severity::Warning, "rule `merged` writes keys of db 1, 4 into db 0 of redis-cluster target `c`, where they merge (a key of one db overwrites the same key of another); `key \"{db}:{0}\"` keeps them apart"),
        (9, 32, Severity::Error, "rule `fan` may route redis db 2 into redis-cluster target `c`"),
        (10, 18, Severity::Error, "the redis default may route redis db 1 and above into redis-cluster target `c`, which has only db 0: write `c db 0` (dbs merge; `key \"{db}:{0}\"` keeps them apart)"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{g:?}");
        assert!(
            g.3.starts_with(w.3),
            "{:?} should start with {:?}",
            g.3,
            w.3
        );
    }
    // The default cannot get a condition: no "add `db 0` to the rule".
    assert!(got[5].3.ends_with("keeps them apart)"), "{}", got[5].3);
    // Rendered with its file and line.
    let d = errors(&src);
    assert!(d[0].to_string().contains("t.sync:2:20"), "{}", d[0]);
}

#[test]
fn db_0_merging_every_db_is_a_warning_and_the_set_loads() {
    let rs = rules(&format!("{C}default redis -> c db 0\n"));
    let w: Vec<_> = rs
        .warnings()
        .iter()
        .map(|d| (d.line, d.col, d.message.as_str()))
        .collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (2, 20));
    assert!(
        w[0].2.starts_with(
            "the redis default writes keys of every db into db 0 of redis-cluster target `c`"
        ),
        "{}",
        w[0].2
    );
    // `{db}` in the key keeps them apart: no warning.
    let rs = rules(&format!(
        "{C}default redis -> c db 0 key \"{{db}}/{{0}}\"\n"
    ));
    assert!(rs.warnings().is_empty(), "{}", render(rs.warnings()));
}

#[test]
fn other_redis_kinds_keep_their_dbs() {
    let rs = rules(&format!(
        "{S}target r = redis \"redis://a\"\nrule a: redis port 1 -> s db 3\ndefault redis -> r db 0\n"
    ));
    assert!(rs.warnings().is_empty(), "{}", render(rs.warnings()));
}

#[test]
fn a_constant_hash_tag_puts_every_key_in_one_slot() {
    let got = diags(&format!(
        "{C}\
         rule p: redis port 1 db 0 -> c prefix \"{{app}}:\"\n\
         rule k: redis port 2 db 0 key \"u:*\" -> c key \"{{{{u}}}}:{{1}}\"\n\
         rule t: redis port 3 db 0 key \"u:*\" -> c key \"{{{{{{1}}}}}}:x\"\n\
         rule e: redis port 4 db 0 -> c prefix \"{{}}\"\n\
         default redis -> drop\n"
    ));
    assert_eq!(
        got,
        [
            (2, 32, Severity::Warning, "every key rule `p` sends to redis-cluster target `c` has the hash tag `{app}`: they all land in one slot, on one node".to_string()),
            (3, 42, Severity::Warning, "every key rule `k` sends to redis-cluster target `c` has the hash tag `{u}`: they all land in one slot, on one node".to_string()),
        ]
    );
}

#[test]
fn merge_sets_is_on_unless_turned_off_and_only_for_single_masters() {
    let rs = rules(
        "target a = redis \"redis://h:1\"\n\
         target b = redis \"redis://h:2\" { merge_sets = false }\n\
         target s = redis-sentinel \"redis://h:3\" { master = \"m\", merge_sets = true }\n\
         default redis -> a, b, s\n",
    );
    let t = rs.targets();
    assert!(t[0].merge_sets());
    assert!(!t[1].merge_sets());
    assert!(t[2].merge_sets());
    let errs = error_lines(
        "target c = redis-cluster \"redis://h:1\" { merge_sets = true }\n\
         target r = redis \"redis://h:2\" { merge_sets = 1 }\n\
         default redis -> c db 0, r\n",
    );
    assert_starts(
        &errs,
        &[
            "1:42: option `merge_sets` does not apply to redis-cluster targets (only to redis and redis-sentinel targets)",
            "2:47: `merge_sets` must be `true` or `false`",
        ],
    );
}
