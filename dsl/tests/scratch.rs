use std::path::PathBuf;
use syncs_dsl::*;

#[test]
fn show() {
    let cases = [
        r#"target r = redis "redis://a"
target r = redis "redis://b"
target m = mongo "http://x" { pool = 0, colour = 2, fsync = true }
target f = file "/tmp/x"
rule a: redis port 7010..7000, 70000 db 1 cmd SETT, @wrte, FLUSHALL key "a[", /(/ -> replca, m
rule a: redis key "sess:*" -> r key "x:{2}" prefix "p"
rule b: redis key "sess:admin:*" -> drop
rule c: mongo db "app" -> r, m db 3 coll "{nope}"
rule d: redis port 1 port 2 -> r db "x" coll "y"
default redis -> r key "{1}"
default redis -> drop
test "t" {
  redis 6379 0 SET a b
  expect nope
  expect drop
}
test "t" {
  mongo app users insert_one
  expect r: SET a b
}
"#,
    ];
    for c in cases {
        match parse_sources(&[(PathBuf::from("t.sync"), c.to_string())]) {
            Ok(_) => println!("OK?? {c}"),
            Err(e) => println!("{}\n", render(&e)),
        }
    }
}
