//! `parse_sources` never panics: on arbitrary text, and on valid files with
//! small mutations (the inputs that reach deepest into the parser and the
//! checker).

use std::path::PathBuf;

use proptest::prelude::*;
use syncs_dsl::{parse_sources, Diagnostic};

const VALID: &str = include_str!("../../rules/examples/20-redis.sync");
const TARGETS: &str = include_str!("../../rules/examples/10-targets.sync");
const MONGO: &str = include_str!("../../rules/examples/30-mongo.sync");

/// Pieces of the language, to splice into valid files.
const TOKENS: &[&str] = &[
    "rule",
    "target",
    "default",
    "test",
    "redis",
    "mongo",
    "file",
    "port",
    "db",
    "cmd",
    "key",
    "coll",
    "op",
    "->",
    ",",
    ":",
    "{",
    "}",
    "\"",
    "/",
    "drop",
    "expect",
    "..",
    "@write",
    "@dangerous",
    "{1}",
    "{db}",
    "\n",
    "#",
    "*",
    "?",
    "[",
    "]",
    "\\",
    "0",
    "99999999999999999999",
    "insert",
    "dead-letter",
    "prefix",
    "=",
    "2s",
    "\u{e9}",
    "\0",
];

fn run(files: Vec<String>) {
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .enumerate()
        .map(|(i, t)| (PathBuf::from(format!("{i}.sync")), t))
        .collect();
    // Either outcome is fine; errors must carry positions inside the text.
    if let Err(diags) = parse_sources(&sources) {
        assert!(!diags.is_empty());
        for d in &diags {
            assert!(!d.message.is_empty());
            assert_position_in_text(&sources, d);
        }
    }
}

/// Every diagnostic of `parse_sources` is about a place in one of the texts
/// (the input is text, so there always is one): its file is one of the
/// sources, `line:col` (1-based, columns in characters, as pest counts them)
/// is inside that file or just past its end, and the rendered message shows
/// `file:line:col`.
fn assert_position_in_text(sources: &[(PathBuf, String)], d: &Diagnostic) {
    let Some((_, text)) = sources.iter().find(|(p, _)| *p == d.file) else {
        panic!("diagnostic about a file that is not a source: {d:?}");
    };
    // Lines end at '\n' (a "\r\n" ends one line too: the '\r' is not
    // shown); the position after a final '\n' is on an empty last line.
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&d.line),
        "line {} outside the {} line(s) of the text: {d:?}\n{text:?}",
        d.line,
        lines.len()
    );
    let line = lines[d.line - 1]
        .strip_suffix('\r')
        .unwrap_or(lines[d.line - 1]);
    let width = line.chars().count();
    assert!(
        (1..=width + 1).contains(&d.col),
        "column {} outside line {} ({width} characters): {d:?}\n{text:?}",
        d.col,
        d.line
    );
    let place = format!("{}:{}:{}", d.file.display(), d.line, d.col);
    let rendered = d.to_string();
    assert!(rendered.contains(&place), "{place} not in:\n{rendered}");
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
}

fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut t: Vec<char> = text.chars().collect();
    for m in muts {
        let len = t.len().max(1);
        match *m {
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n % 8).min(t.len());
                if at < end {
                    t.drain(at..end);
                }
            }
            Mutation::Insert(at, tok) => {
                let at = (at % len).min(t.len());
                let tok: Vec<char> = TOKENS[tok % TOKENS.len()].chars().collect();
                t.splice(at..at, tok);
            }
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n % 40).min(t.len());
                let piece: Vec<char> = t[at..end].to_vec();
                t.splice(at..at, piece);
            }
        }
    }
    t.into_iter().collect()
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Insert(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(a in "\\PC*", b in any::<String>()) {
        run(vec![a, b]);
    }

    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let text: String = toks.iter().map(|&i| TOKENS[i]).collect::<Vec<_>>().join(" ");
        run(vec![text]);
    }

    #[test]
    fn mutated_valid_files_never_panic(muts in proptest::collection::vec(mutation(), 1..6)) {
        run(vec![TARGETS.to_string(), mutate(VALID, &muts), mutate(MONGO, &muts)]);
    }
}

#[test]
fn unmutated_examples_parse() {
    let sources = vec![
        (PathBuf::from("10.sync"), TARGETS.to_string()),
        (PathBuf::from("20.sync"), VALID.to_string()),
        (PathBuf::from("30.sync"), MONGO.to_string()),
    ];
    assert!(parse_sources(&sources).is_ok());
}
