//! The indexed matcher (bitsets, key-prefix trie) agrees with a plain
//! first-match-wins loop written from the documented semantics, on random
//! rule sets and queries.

use std::path::PathBuf;

use proptest::prelude::*;
use syncs_dsl::commands::{is_dangerous, Group};
use syncs_dsl::*;

const CMDS: &[&str] = &[
    "SET", "GET", "DEL", "HSET", "PING", "FLUSHALL", "FLUSHDB", "CONFIG", "FOO",
];
const GROUPS: &[&str] = &["write", "read", "dangerous", "all", "hash"];
const LITS: &[&str] = &["", "a", "ab", "b", "ba"];
const KEYS: &[&str] = &["", "a", "ab", "abc", "b", "ba", "bab", "x"];
const PORTS: &[u16] = &[1, 2, 3, 5, 8];

#[derive(Debug, Clone)]
enum Cmd {
    Name(usize),
    Group(usize),
}

#[derive(Debug, Clone)]
enum Key {
    Prefix(usize),
    Exact(usize),
    Suffix(usize),
    RegexPrefix(usize),
    RegexAnywhere(usize),
}

#[derive(Debug, Clone)]
struct Rule {
    ports: Option<Vec<(u16, u16)>>,
    dbs: Option<Vec<(u32, u32)>>,
    cmds: Option<Vec<Cmd>>,
    keys: Option<Vec<Key>>,
    drop: bool,
}

fn range<T: Copy + Ord>(a: T, b: T) -> (T, T) {
    (a.min(b), a.max(b))
}

fn rule() -> impl Strategy<Value = Rule> {
    let cmd = prop_oneof![
        (0..CMDS.len()).prop_map(Cmd::Name),
        (0..GROUPS.len()).prop_map(Cmd::Group)
    ];
    let key = prop_oneof![
        (0..LITS.len()).prop_map(Key::Prefix),
        (0..LITS.len()).prop_map(Key::Exact),
        (0..LITS.len()).prop_map(Key::Suffix),
        (1..LITS.len()).prop_map(Key::RegexPrefix),
        (1..LITS.len()).prop_map(Key::RegexAnywhere),
    ];
    (
        proptest::option::weighted(
            0.4,
            proptest::collection::vec((0u16..10, 0u16..10).prop_map(|(a, b)| range(a, b)), 1..3),
        ),
        proptest::option::weighted(
            0.3,
            proptest::collection::vec((0u32..5, 0u32..5).prop_map(|(a, b)| range(a, b)), 1..3),
        ),
        proptest::option::weighted(0.5, proptest::collection::vec(cmd, 1..3)),
        proptest::option::weighted(0.6, proptest::collection::vec(key, 1..3)),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(ports, dbs, cmds, keys, drop)| Rule {
            ports,
            dbs,
            cmds,
            keys,
            drop,
        })
}

fn render_rule(i: usize, r: &Rule) -> String {
    let mut s = format!("rule r{i}: redis");
    let list = |v: Vec<String>| v.join(", ");
    if let Some(p) = &r.ports {
        s += &format!(
            " port {}",
            list(p.iter().map(|(a, b)| format!("{a}..{b}")).collect())
        );
    }
    if let Some(d) = &r.dbs {
        s += &format!(
            " db {}",
            list(d.iter().map(|(a, b)| format!("{a}..{b}")).collect())
        );
    }
    if let Some(c) = &r.cmds {
        s += &format!(
            " cmd {}",
            list(
                c.iter()
                    .map(|c| match c {
                        Cmd::Name(n) => CMDS[*n].to_string(),
                        Cmd::Group(g) => format!("@{}", GROUPS[*g]),
                    })
                    .collect()
            )
        );
    }
    if let Some(k) = &r.keys {
        s += &format!(
            " key {}",
            list(
                k.iter()
                    .map(|k| match k {
                        Key::Prefix(l) => format!("\"{}*\"", LITS[*l]),
                        Key::Exact(l) => format!("\"{}\"", LITS[*l]),
                        Key::Suffix(l) => format!("\"*{}\"", LITS[*l]),
                        Key::RegexPrefix(l) => format!("/^{}/", LITS[*l]),
                        Key::RegexAnywhere(l) => format!("/{}/", LITS[*l]),
                    })
                    .collect()
            )
        );
    }
    s += if r.drop { " -> drop\n" } else { " -> r\n" };
    s
}

fn cmd_matches(r: &Rule, cmd: &str) -> bool {
    r.cmds.as_ref().is_none_or(|cs| {
        cs.iter().any(|c| match c {
            Cmd::Name(n) => CMDS[*n] == cmd,
            Cmd::Group(g) => Group::from_name(GROUPS[*g]).is_some_and(|g| g.contains(cmd)),
        })
    })
}

fn names_dangerous(r: &Rule, cmd: &str) -> bool {
    r.cmds.as_ref().is_some_and(|cs| {
        cs.iter().any(|c| match c {
            Cmd::Name(n) => CMDS[*n] == cmd,
            Cmd::Group(g) => GROUPS[*g] == "dangerous",
        })
    })
}

fn key_matches(r: &Rule, key: Option<&str>) -> bool {
    let Some(ks) = &r.keys else { return true };
    let Some(key) = key else { return false };
    ks.iter().any(|k| match k {
        Key::Prefix(l) => key.starts_with(LITS[*l]),
        Key::Exact(l) => key == LITS[*l],
        Key::Suffix(l) => key.ends_with(LITS[*l]),
        Key::RegexPrefix(l) => key.starts_with(LITS[*l]),
        Key::RegexAnywhere(l) => key.contains(LITS[*l]),
    })
}

fn in_ranges<T: Copy + Ord>(rs: &Option<Vec<(T, T)>>, v: T) -> bool {
    rs.as_ref()
        .is_none_or(|rs| rs.iter().any(|&(a, b)| a <= v && v <= b))
}

/// The documented semantics, as a plain loop. Returns (rule index, reason).
fn reference(
    rules: &[(usize, Rule)],
    default: bool,
    port: u16,
    db: u32,
    cmd: &str,
    key: Option<&str>,
) -> (Option<usize>, &'static str) {
    let danger = is_dangerous(cmd.as_bytes());
    let mut passed = None;
    for (i, r) in rules {
        if !(in_ranges(&r.ports, port)
            && in_ranges(&r.dbs, db)
            && cmd_matches(r, cmd)
            && key_matches(r, key))
        {
            continue;
        }
        if r.drop {
            return (Some(*i), "rule");
        }
        if danger && !names_dangerous(r, cmd) {
            passed.get_or_insert(*i);
            continue;
        }
        return (Some(*i), "route");
    }
    match (default, danger) {
        (_, true) if passed.is_some() => (passed, "dangerous"),
        (true, true) => (None, "dangerous"),
        (true, false) => (None, "route"),
        (false, _) => (None, "default"),
    }
}

fn actual(rs: &RuleSet, d: Decision<'_>) -> (Option<usize>, &'static str) {
    let idx =
        |r: Option<RuleId>| r.map(|r| rs.rule_name(r)[1..].parse::<usize>().unwrap_or(usize::MAX));
    match d {
        Decision::Route { rule, .. } => (idx(rule), "route"),
        Decision::DeadLetter { rule, .. } => (idx(rule), "dead-letter"),
        Decision::Drop { rule, reason } => (
            idx(rule),
            match reason {
                DropReason::Rule => "rule",
                DropReason::Default => "default",
                DropReason::Dangerous => "dangerous",
            },
        ),
    }
}

/// Loads the rules, leaving out those the checker proves can never match
/// (which cannot change any decision).
fn load(
    mut rules: Vec<(usize, Rule)>,
    default: bool,
) -> Result<(RuleSet, Vec<(usize, Rule)>), String> {
    loop {
        let mut text = String::from("target r = redis \"redis://a\"\n");
        for (i, r) in &rules {
            text += &render_rule(*i, r);
        }
        if default {
            text += "default redis -> r\n";
        }
        match parse_sources(&[(PathBuf::from("p.sync"), text)]) {
            Ok(rs) => return Ok((rs, rules)),
            Err(diags) => {
                let mut shadowed = Vec::new();
                for d in diags.iter().filter(|d| d.is_error()) {
                    let Some(rest) = d.message.strip_prefix("rule `r") else {
                        return Err(render(&diags));
                    };
                    if !rest.contains("can never match") {
                        return Err(render(&diags));
                    }
                    shadowed.push(
                        rest.split('`')
                            .next()
                            .unwrap_or("")
                            .parse::<usize>()
                            .map_err(|e| e.to_string())?,
                    );
                }
                if shadowed.is_empty() {
                    return Err(render(&diags));
                }
                rules.retain(|(i, _)| !shadowed.contains(i));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn indexed_matcher_agrees_with_reference(
        rules in proptest::collection::vec(rule(), 0..80),
        default in any::<bool>(),
        queries in proptest::collection::vec(
            (0..PORTS.len(), 0u32..5, 0..CMDS.len() + 1, proptest::option::of(0..KEYS.len())),
            1..40,
        ),
    ) {
        let numbered: Vec<(usize, Rule)> = rules.into_iter().enumerate().collect();
        let (rs, kept) = match load(numbered.clone(), default) {
            Ok(x) => x,
            Err(e) => return Err(TestCaseError::fail(e)),
        };
        for (p, db, c, k) in queries {
            let cmd = if c == CMDS.len() { "UNKNOWNCMD" } else { CMDS[c] };
            let key = k.map(|k| KEYS[k]);
            let q = RedisQuery { port: PORTS[p], db, command: cmd.as_bytes(), key: key.map(str::as_bytes) };
            let want = reference(&kept, default, PORTS[p], db, cmd, key);
            // Rules reported as never matching indeed change nothing.
            prop_assert_eq!(reference(&numbered, default, PORTS[p], db, cmd, key), want);
            let got = actual(&rs, rs.decide_redis(&q));
            prop_assert_eq!(got, want, "query {:?}", (PORTS[p], db, cmd, key));
        }
    }
}
