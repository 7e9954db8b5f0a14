//! From checked ASTs to a [`RuleSet`]: patterns become matchers, templates
//! are resolved, and the Redis rules get their bitset indexes (see
//! [`crate::matcher`]).
//!
//! The compiler runs only after [`crate::check`] found no error, and takes
//! the patterns the checker analysed ([`Checked`]) instead of building them
//! again; anything it still cannot build is reported as a diagnostic rather
//! than a panic.

use std::collections::HashMap;

use crate::action::{Action, KeyRewrite};
use crate::ast::*;
use crate::check::{Checked, RulePatterns};
use crate::commands::{self, Group};
use crate::diagnostic::Diagnostic;
use crate::matcher::{
    FxMap, IntervalIndex, MongoMatcher, MongoRule, Outcome, PrefixTrie, RedisMatcher, RedisRule,
    RuleId, RuleMeta, RuleSet, TrieNode,
};
use crate::pattern::{Analyzed, ByteMatcher};
use crate::ruletest::{Expected, ExpectedOutput, ExpectedRoute, RuleTest, TestInput};
use crate::target::TargetId;
use crate::template::{split, KeyPiece, KeyTemplate, NsPiece, NsTemplate, RawPiece};

/// A Redis rule before indexing.
struct RedisPre {
    id: RuleId,
    ports: Option<Vec<(u64, u64)>>,
    dbs: Option<Vec<(u64, u64)>>,
    /// `None`: any command.
    cmds: Option<CmdPre>,
    keys: Option<Vec<Analyzed>>,
    outcome: Outcome,
}

struct CmdPre {
    names: Vec<String>,
    groups: Vec<Group>,
}

struct Compiler<'a> {
    files: &'a [File],
    target_ids: &'a HashMap<String, TargetId>,
    errors: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn error(&mut self, fi: usize, span: Span, message: String) {
        let f = &self.files[fi];
        self.errors.push(Diagnostic::error(
            &f.path,
            span.line,
            span.col,
            message,
            f.line_text(span.line),
        ));
    }

    fn outcome(&mut self, fi: usize, outcome: &OutcomeAst, keys: Option<&[Analyzed]>) -> Outcome {
        let actions = match outcome {
            OutcomeAst::Drop => return Outcome::Drop,
            OutcomeAst::DeadLetter(reason) => {
                return Outcome::DeadLetter(reason.as_deref().unwrap_or_default().into())
            }
            OutcomeAst::Route(actions) => actions,
        };
        let mut out = Vec::with_capacity(actions.len());
        for a in actions {
            let Some(&target) = self.target_ids.get(&a.target.node) else {
                self.error(
                    fi,
                    a.target.span,
                    format!("unknown target `{}`", a.target.node),
                );
                continue;
            };
            let mut action = Action::plain(target);
            if let Some(db) = &a.db {
                match &db.node {
                    DbValue::Number(n) => action.db = u32::try_from(*n).ok(),
                    DbValue::Name(t) => action.mongo_db = self.ns_template(fi, t, db.span),
                }
            }
            if let Some(c) = &a.coll {
                action.mongo_coll = self.ns_template(fi, &c.node, c.span);
            }
            if let Some(p) = &a.prefix {
                action.key = KeyRewrite::Prefix(p.node.as_bytes().into());
            }
            if let Some(k) = &a.key {
                if let Some(template) = self.key_template(fi, &k.node, k.span) {
                    let mut patterns = Vec::new();
                    if !template.whole_key_only() {
                        for a in keys.unwrap_or_default() {
                            match a.capture_regex() {
                                Ok(r) => patterns.push(r),
                                Err(e) => self.error(fi, k.span, e.to_string()),
                            }
                        }
                    }
                    action.key = KeyRewrite::Template {
                        patterns: patterns.into(),
                        template,
                    };
                }
            }
            out.push(action);
        }
        Outcome::Route(out.into())
    }

    fn key_template(&mut self, fi: usize, text: &str, span: Span) -> Option<KeyTemplate> {
        let raw = match split(text) {
            Ok(r) => r,
            Err(e) => {
                self.error(fi, span, e.to_string());
                return None;
            }
        };
        let pieces = raw
            .into_iter()
            .map(|p| match p {
                RawPiece::Lit(l) => KeyPiece::Lit(l.into_bytes().into()),
                RawPiece::Ref(r) if r == "db" => KeyPiece::Db,
                RawPiece::Ref(r) => match r.parse::<usize>() {
                    Ok(n) => KeyPiece::Group(n),
                    Err(_) => KeyPiece::Named(r.into()),
                },
            })
            .collect();
        Some(KeyTemplate {
            pieces,
            source: text.into(),
        })
    }

    fn ns_template(&mut self, fi: usize, text: &str, span: Span) -> Option<NsTemplate> {
        let raw = match split(text) {
            Ok(r) => r,
            Err(e) => {
                self.error(fi, span, e.to_string());
                return None;
            }
        };
        let pieces = raw
            .into_iter()
            .map(|p| match p {
                RawPiece::Lit(l) => NsPiece::Lit(l.into()),
                RawPiece::Ref(r) if r == "db" => NsPiece::Db,
                RawPiece::Ref(_) => NsPiece::Coll,
            })
            .collect();
        Some(NsTemplate { pieces })
    }
}

fn ranges(items: &Option<Vec<Spanned<NumRange>>>) -> Option<Vec<(u64, u64)>> {
    items
        .as_ref()
        .map(|v| v.iter().map(|s| (s.node.lo, s.node.hi)).collect())
}

/// Builds the rule set. `checked` must hold no errors.
pub fn compile(files: &[File], checked: Checked) -> Result<RuleSet, Vec<Diagnostic>> {
    let Checked {
        diagnostics: warnings,
        targets,
        target_ids,
        rule_patterns,
    } = checked;
    let mut rule_patterns = rule_patterns.into_iter();
    let mut cx = Compiler {
        files,
        target_ids: &target_ids,
        errors: Vec::new(),
    };
    let mut metas = Vec::new();
    let mut redis_pre = Vec::new();
    let mut mongo_rules = Vec::new();
    let mut redis_default = Outcome::Drop;
    let mut mongo_default = Outcome::Drop;
    let mut tests = Vec::new();

    for (fi, file) in files.iter().enumerate() {
        for item in &file.items {
            match item {
                Item::Target(_) => {}
                Item::Rule(r) => {
                    let Ok(n) = u32::try_from(metas.len()) else {
                        cx.error(fi, r.span, "too many rules".into());
                        continue;
                    };
                    let id = RuleId(n);
                    // The checker analysed every pattern; a rule it did
                    // not see would compile into one without conditions.
                    let Some(patterns) = rule_patterns.next() else {
                        cx.error(
                            fi,
                            r.span,
                            format!("rule `{}` was not checked", r.name.node),
                        );
                        continue;
                    };
                    metas.push(RuleMeta {
                        name: r.name.node.clone(),
                        file: file.path.clone(),
                        line: r.span.line,
                    });
                    match &r.conds {
                        Conditions::Redis(c) => {
                            let keys = patterns.keys;
                            let outcome = cx.outcome(fi, &r.outcome.node, keys.as_deref());
                            let cmds = c.cmds.as_ref().map(|items| {
                                let mut pre = CmdPre {
                                    names: Vec::new(),
                                    groups: Vec::new(),
                                };
                                for it in items {
                                    match &it.node {
                                        CmdItem::Name(n) => pre.names.push(n.clone()),
                                        CmdItem::Group(g) => pre.groups.extend(Group::from_name(g)),
                                    }
                                }
                                pre
                            });
                            redis_pre.push(RedisPre {
                                id,
                                ports: ranges(&c.ports),
                                dbs: ranges(&c.dbs),
                                cmds,
                                keys,
                                outcome,
                            });
                        }
                        Conditions::Mongo(c) => {
                            let RulePatterns { dbs, colls, .. } = patterns;
                            let ops = c.op_bits();
                            let outcome = cx.outcome(fi, &r.outcome.node, None);
                            let m = |v: Option<Vec<Analyzed>>| {
                                v.map(|v| v.into_iter().map(|a| a.matcher).collect())
                            };
                            mongo_rules.push(MongoRule {
                                id,
                                ops,
                                names_drop: c.names_drop(),
                                dbs: m(dbs),
                                colls: m(colls),
                                outcome,
                            });
                        }
                    }
                }
                Item::Default(d) => {
                    let outcome = cx.outcome(fi, &d.outcome.node, None);
                    match d.protocol {
                        Protocol::Redis => redis_default = outcome,
                        Protocol::Mongo => mongo_default = outcome,
                    }
                }
                Item::Test(t) => {
                    if let Some(test) = compile_test(file, t, &target_ids) {
                        tests.push(test);
                    }
                }
            }
        }
    }
    if !cx.errors.is_empty() {
        let mut all = cx.errors;
        all.extend(warnings);
        return Err(all);
    }
    let mut redis = build_redis(redis_pre);
    redis.default = redis_default;
    Ok(RuleSet {
        targets,
        rules: metas,
        redis,
        mongo: MongoMatcher {
            rules: mongo_rules,
            default: mongo_default,
        },
        tests,
        warnings,
    })
}

fn set_bit(rows: &mut [u64], row: usize, words: usize, i: usize) {
    rows[row * words + i / 64] |= 1u64 << (i % 64);
}

/// Interval index over `0..=max` for one numeric field.
fn interval_index<T: Copy + Ord + TryFrom<u64>>(
    rules: &[Option<Vec<(u64, u64)>>],
    words: usize,
) -> IntervalIndex<T> {
    let mut bounds: Vec<u64> = vec![0];
    for r in rules.iter().flatten() {
        for &(lo, hi) in r {
            bounds.push(lo);
            bounds.push(hi.saturating_add(1));
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    // Bounds past the type's range cannot be looked up; drop them.
    let bounds: Vec<(u64, T)> = bounds
        .into_iter()
        .filter_map(|b| T::try_from(b).ok().map(|t| (b, t)))
        .collect();
    let mut rows = vec![0u64; bounds.len() * words];
    for (k, &(start, _)) in bounds.iter().enumerate() {
        for (i, r) in rules.iter().enumerate() {
            let hit = match r {
                None => true,
                Some(ranges) => ranges.iter().any(|&(lo, hi)| lo <= start && start <= hi),
            };
            if hit {
                set_bit(&mut rows, k, words, i);
            }
        }
    }
    IntervalIndex {
        bounds: bounds.into_iter().map(|(_, t)| t).collect(),
        rows,
    }
}

/// A trie under construction.
#[derive(Default)]
struct TrieBuilder {
    children: std::collections::BTreeMap<u8, usize>,
    list: Vec<u32>,
}

fn build_trie(entries: &[(Vec<u8>, u32)]) -> PrefixTrie {
    let mut nodes: Vec<TrieBuilder> = vec![TrieBuilder::default()];
    for (prefix, rule) in entries {
        let mut n = 0;
        for &b in prefix {
            n = match nodes[n].children.get(&b) {
                Some(&c) => c,
                None => {
                    nodes.push(TrieBuilder::default());
                    let c = nodes.len() - 1;
                    nodes[n].children.insert(b, c);
                    c
                }
            };
        }
        if nodes[n].list.last() != Some(rule) {
            nodes[n].list.push(*rule);
        }
    }
    let mut trie = PrefixTrie::default();
    for n in &nodes {
        let count = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
        trie.nodes.push(TrieNode {
            edges_start: count(trie.edges.len()),
            edges_len: count(n.children.len()),
            list_start: count(trie.lists.len()),
            list_len: count(n.list.len()),
        });
        trie.edges.extend(
            n.children
                .iter()
                .map(|(&b, &c)| (b, u32::try_from(c).unwrap_or(u32::MAX))),
        );
        trie.lists.extend_from_slice(&n.list);
    }
    trie
}

fn build_redis(pre: Vec<RedisPre>) -> RedisMatcher {
    let n = pre.len();
    let words = n.div_ceil(64);

    let ports: Vec<_> = pre.iter().map(|r| r.ports.clone()).collect();
    let dbs: Vec<_> = pre.iter().map(|r| r.dbs.clone()).collect();
    let ports = interval_index::<u16>(&ports, words);
    let dbs = interval_index::<u32>(&dbs, words);

    // Command ids: the table, then names only the rules know.
    let mut names: Vec<String> = commands::COMMANDS
        .iter()
        .map(|(c, _)| c.to_string())
        .collect();
    let mut known: std::collections::HashSet<String> = names.iter().cloned().collect();
    for r in &pre {
        if let Some(c) = &r.cmds {
            for name in &c.names {
                if known.insert(name.clone()) {
                    names.push(name.clone());
                }
            }
        }
    }
    // More than 65535 distinct names cannot be written in a sane file; extra
    // names fall into the "unknown command" row.
    names.truncate(usize::from(u16::MAX));
    let bits: Vec<u32> = names
        .iter()
        .map(|n| commands::command_bits(n).unwrap_or(0))
        .collect();
    let mut cmd_ids: FxMap<Box<[u8]>, u16> = FxMap::default();
    let mut cmd_dangerous = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        cmd_ids.insert(name.as_bytes().into(), u16::try_from(i).unwrap_or(u16::MAX));
        cmd_dangerous.push(commands::is_dangerous(name.as_bytes()));
    }
    let ncmd = names.len();
    let dangerous_bit = Group::Dangerous.bit();
    let mut cmd_rows = vec![0u64; (ncmd + 1) * words];
    let mut rules = Vec::with_capacity(n);
    let mut key_rows = vec![0u64; 258 * words];
    let mut trie_entries: Vec<(Vec<u8>, u32)> = Vec::new();

    for (i, r) in pre.into_iter().enumerate() {
        let mut explicit = Vec::new();
        match &r.cmds {
            None => {
                for row in 0..=ncmd {
                    set_bit(&mut cmd_rows, row, words, i);
                }
            }
            Some(c) => {
                let all = c.groups.contains(&Group::All);
                let mask = c
                    .groups
                    .iter()
                    .filter(|g| **g != Group::All)
                    .fold(0u32, |m, g| m | g.bit());
                let named: std::collections::HashSet<&str> =
                    c.names.iter().map(String::as_str).collect();
                for (id, name) in names.iter().enumerate() {
                    let by_name = named.contains(name.as_str());
                    if all || by_name || bits[id] & mask != 0 {
                        set_bit(&mut cmd_rows, id, words, i);
                    }
                    if cmd_dangerous[id] && (by_name || mask & dangerous_bit != 0) {
                        explicit.extend(u16::try_from(id).ok());
                    }
                }
                if all {
                    set_bit(&mut cmd_rows, ncmd, words, i);
                }
            }
        }
        match &r.keys {
            None => {
                for row in 0..258 {
                    set_bit(&mut key_rows, row, words, i);
                }
            }
            Some(keys) if keys.iter().all(|k| !k.literal_prefix.is_empty()) => {
                let idx = u32::try_from(i).unwrap_or(u32::MAX);
                for k in keys {
                    trie_entries.push((k.literal_prefix.clone(), idx));
                }
            }
            Some(keys) => {
                for k in keys {
                    match (&k.glob, k.literal_prefix.first()) {
                        (_, Some(&b)) => set_bit(&mut key_rows, usize::from(b), words, i),
                        (Some(g), None) if g.exact => set_bit(&mut key_rows, 256, words, i),
                        _ => {
                            for row in 0..257 {
                                set_bit(&mut key_rows, row, words, i);
                            }
                        }
                    }
                }
            }
        }
        explicit.sort_unstable();
        rules.push(RedisRule {
            id: r.id,
            keys: r.keys.map(|ks| {
                ks.into_iter()
                    .map(|a| a.matcher)
                    .collect::<Vec<ByteMatcher>>()
                    .into()
            }),
            outcome: r.outcome,
            explicit_dangerous: explicit.into(),
        });
    }
    RedisMatcher {
        words,
        rules,
        ports,
        dbs,
        cmd_ids,
        cmd_rows,
        cmd_dangerous,
        key_rows,
        trie: build_trie(&trie_entries),
        default: Outcome::Drop,
    }
}

fn compile_test(file: &File, t: &TestDecl, ids: &HashMap<String, TargetId>) -> Option<RuleTest> {
    // Out-of-range ports and dbs are the checker's errors.
    let input = TestInput::from_ast(&t.input.node).ok()?;
    let mut routes = Vec::new();
    let mut expect = None;
    for e in &t.expects {
        match &e.node {
            ExpectAst::Drop(reason) => expect = Some(Expected::Drop(*reason)),
            ExpectAst::DeadLetter => expect = Some(Expected::DeadLetter),
            ExpectAst::Route {
                target,
                db,
                coll,
                args,
            } => {
                let id = *ids.get(&target.node)?;
                let output = match &input {
                    TestInput::Redis {
                        db: in_db,
                        args: in_args,
                        ..
                    } => ExpectedOutput::Redis {
                        db: match db {
                            Some(d) => d.node.parse().ok()?,
                            None => *in_db,
                        },
                        args: args.clone().unwrap_or_else(|| in_args.clone()),
                    },
                    TestInput::Mongo {
                        db: in_db,
                        coll: in_coll,
                        ..
                    } => ExpectedOutput::Mongo {
                        db: db
                            .as_ref()
                            .map_or_else(|| in_db.clone(), |d| d.node.clone()),
                        coll: coll
                            .as_ref()
                            .map_or_else(|| in_coll.clone(), |c| c.node.clone()),
                    },
                };
                routes.push(ExpectedRoute {
                    target: id,
                    target_name: target.node.clone(),
                    line: e.span.line,
                    output,
                });
            }
        }
    }
    Some(RuleTest {
        name: t.name.clone(),
        file: file.path.clone(),
        line: t.span.line,
        input,
        expect: expect.unwrap_or(Expected::Routed(routes)),
    })
}
