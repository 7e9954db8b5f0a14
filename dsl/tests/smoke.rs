use std::path::PathBuf;
use syncs_dsl::*;

#[test]
fn sketch() {
    let src = r#"
# targets
target replica = redis "redis://127.0.0.1:6380" { pool = 8, timeout = 2s }
target docs    = mongo "mongodb://127.0.0.1:27017"
target audit   = file  "/var/lib/syncs/audit.jsonl"

# rules: first match wins
rule sessions: redis port 6379 db 1 key "session:*" -> replica db 2 key "sess:{1}"
rule no_temp:  redis key /^tmp:/ -> drop
rule users:    mongo db "app" coll "users" op insert, update -> docs db "app_copy", audit
default redis -> replica
default mongo -> docs

test "sessions move to db 2" {
    redis 6379 1 SET session:7 x
    expect replica db 2: SET sess:7 x
}
"#;
    let rs = match parse_sources(&[(PathBuf::from("a.sync"), src.to_string())]) {
        Ok(r) => r,
        Err(e) => panic!("{}", render(&e)),
    };
    println!("{:#?}", rs.tests());
    println!("{:#?}", rs.warnings());
    let d = rs.decide_redis(&RedisQuery { port: 6379, db: 1, command: b"set", key: Some(b"session:7") });
    println!("{d:?}");
    if let Decision::Route { actions, .. } = d {
        assert_eq!(&*actions[0].rewrite_key(b"session:7"), b"sess:7");
        assert_eq!(actions[0].redis_db(1), 2);
    } else { panic!() }
    let d = rs.decide_redis(&RedisQuery { port: 6379, db: 1, command: b"flushall", key: None });
    println!("{d:?}");
}
