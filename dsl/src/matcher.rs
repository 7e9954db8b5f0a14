//! The compiled rule set and the hot path: [`RuleSet::decide_redis`] and
//! [`RuleSet::decide_mongo`].
//!
//! **Invariant:** deciding does not allocate and does no IO.
//!
//! Redis rules are indexed by bitsets (one bit per rule, in file order). For
//! the port, the db, the command and the first byte of the key there is a
//! table that maps the query's value to the bitset of rules whose condition
//! on that field can hold. ANDing the four rows leaves the candidates; they
//! are visited in order and only their key patterns are run, so the cost
//! grows with the number of *candidate* rules, not with the size of the set.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use crate::action::Action;
use crate::diagnostic::Diagnostic;
use crate::pattern::ByteMatcher;
use crate::ruletest::RuleTest;
use crate::target::{Target, TargetId};

/// Index of a rule, unique across all the files of a rule set, in matching
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub u32);

/// One Redis operation (or one key of it) to route.
#[derive(Clone, Copy, Debug)]
pub struct RedisQuery<'a> {
    /// The application's Redis port, as sent by the proxy.
    pub port: u16,
    pub db: u32,
    /// The command name in any case, e.g. `b"set"`.
    pub command: &'a [u8],
    /// The key; `None` for commands without keys. Multi-key commands are
    /// asked about once per key.
    pub key: Option<&'a [u8]>,
}

/// The kind of a Mongo write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MongoOpKind {
    InsertOne,
    InsertMany,
    UpdateOne,
    UpdateMany,
    ReplaceOne,
    DeleteOne,
    DeleteMany,
    /// A collection drop: destructive, routed only by a rule that names
    /// it (`op drop`), as dangerous Redis commands are.
    Drop,
}

impl MongoOpKind {
    pub const ALL: [MongoOpKind; 8] = [
        MongoOpKind::InsertOne,
        MongoOpKind::InsertMany,
        MongoOpKind::UpdateOne,
        MongoOpKind::UpdateMany,
        MongoOpKind::ReplaceOne,
        MongoOpKind::DeleteOne,
        MongoOpKind::DeleteMany,
        MongoOpKind::Drop,
    ];

    /// The name used in rules files: `insert_one`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            MongoOpKind::InsertOne => "insert_one",
            MongoOpKind::InsertMany => "insert_many",
            MongoOpKind::UpdateOne => "update_one",
            MongoOpKind::UpdateMany => "update_many",
            MongoOpKind::ReplaceOne => "replace_one",
            MongoOpKind::DeleteOne => "delete_one",
            MongoOpKind::DeleteMany => "delete_many",
            MongoOpKind::Drop => "drop",
        }
    }

    pub fn from_name(name: &str) -> Option<MongoOpKind> {
        MongoOpKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for MongoOpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Mongo write to route.
#[derive(Clone, Copy, Debug)]
pub struct MongoQuery<'a> {
    pub db: &'a str,
    pub coll: &'a str,
    pub op: MongoOpKind,
}

/// What to do with an operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision<'r> {
    /// Send to every action's target. `rule` is `None` when the `default`
    /// decided.
    Route {
        rule: Option<RuleId>,
        actions: &'r [Action],
    },
    /// Do not replicate.
    Drop {
        rule: Option<RuleId>,
        reason: DropReason,
    },
    /// Do not replicate, and write the operation to the dead-letter file
    /// with `reason` (`-> dead-letter "reason"`; empty when none was
    /// written). `rule` is `None` when the `default` decided.
    DeadLetter {
        rule: Option<RuleId>,
        reason: &'r str,
    },
}

/// Why an operation is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A rule with `-> drop` matched (`rule` says which).
    Rule,
    /// No rule matched and the default is `drop` (or there is no default).
    Default,
    /// A dangerous command would have been routed by a rule or the default
    /// that does not name it explicitly. `rule` is the first such rule, or
    /// `None` if it was the default.
    Dangerous,
}

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Route(Box<[Action]>),
    Drop,
    /// The reason given in the rule (may be empty).
    DeadLetter(Box<str>),
}

impl Outcome {
    /// The decision of a rule (`Some`) or of the default (`None`) with
    /// this outcome.
    #[inline]
    fn decision(&self, rule: Option<RuleId>) -> Decision<'_> {
        match self {
            Outcome::Route(actions) => Decision::Route { rule, actions },
            Outcome::Drop => Decision::Drop {
                rule,
                reason: if rule.is_some() {
                    DropReason::Rule
                } else {
                    DropReason::Default
                },
            },
            Outcome::DeadLetter(reason) => Decision::DeadLetter { rule, reason },
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RuleMeta {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
}

/// A compiled, immutable set of rules from one or more files. Cheap to share
/// behind an `Arc`; swap the whole set to reload.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) targets: Vec<Target>,
    pub(crate) rules: Vec<RuleMeta>,
    pub(crate) redis: RedisMatcher,
    pub(crate) mongo: MongoMatcher,
    pub(crate) tests: Vec<RuleTest>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl RuleSet {
    /// All targets; the index is `TargetId.0`.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// # Panics
    /// If `id` does not come from this rule set.
    pub fn target(&self, id: TargetId) -> &Target {
        &self.targets[usize::from(id.0)]
    }

    /// Looks a target up by name.
    pub fn target_id(&self, name: &str) -> Option<TargetId> {
        self.targets
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(TargetId)
    }

    /// # Panics
    /// If `id` does not come from this rule set.
    pub fn rule_name(&self, id: RuleId) -> &str {
        &self.rules[id.0 as usize].name
    }

    /// Where a rule is written: file and 1-based line.
    pub fn rule_location(&self, id: RuleId) -> (&Path, usize) {
        let r = &self.rules[id.0 as usize];
        (&r.file, r.line)
    }

    /// Looks a rule up by name.
    pub fn rule_id(&self, name: &str) -> Option<RuleId> {
        self.rules
            .iter()
            .position(|r| r.name == name)
            .and_then(|i| u32::try_from(i).ok())
            .map(RuleId)
    }

    /// Number of rules (Redis and Mongo).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The tests written in the files, in file order.
    pub fn tests(&self) -> &[RuleTest] {
        &self.tests
    }

    /// Warnings found while loading (the set loaded anyway).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Decides what to do with one Redis operation (or one key of a multi-key
    /// one). First matching rule wins; see the crate docs for dangerous
    /// commands.
    pub fn decide_redis(&self, q: &RedisQuery<'_>) -> Decision<'_> {
        self.redis.decide(q)
    }

    /// Decides what to do with one Mongo write.
    pub fn decide_mongo(&self, q: &MongoQuery<'_>) -> Decision<'_> {
        self.mongo.decide(q)
    }
}

// ---------------------------------------------------------------- redis --

/// FxHash (rustc's): fast on the short byte strings that command names are.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write(&i.to_le_bytes());
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Longest command name looked up; longer names are "unknown command".
const MAX_CMD: usize = 32;

#[derive(Debug)]
pub(crate) struct RedisRule {
    pub(crate) id: RuleId,
    /// `None`: no key condition (matches key-less commands too).
    pub(crate) keys: Option<Box<[ByteMatcher]>>,
    pub(crate) outcome: Outcome,
    /// Sorted ids of the dangerous commands this rule names explicitly.
    pub(crate) explicit_dangerous: Box<[u16]>,
}

/// Interval table: `bounds[k]..bounds[k+1]` (the last one open-ended) maps to
/// row `k` of `rows`.
#[derive(Debug, Default)]
pub(crate) struct IntervalIndex<T> {
    pub(crate) bounds: Vec<T>,
    pub(crate) rows: Vec<u64>,
}

impl<T: Copy + Ord> IntervalIndex<T> {
    #[inline]
    fn row(&self, v: T, words: usize) -> &[u64] {
        let k = self.bounds.partition_point(|&b| b <= v).saturating_sub(1);
        &self.rows[k * words..(k + 1) * words]
    }
}

/// Rules indexed by the literal prefix of their key patterns: a byte trie in
/// which the node reached by a prefix lists, in order, the rules having a
/// pattern that starts with it. Walking a key down the trie visits exactly
/// the rules whose prefixes the key starts with.
#[derive(Debug, Default)]
pub(crate) struct PrefixTrie {
    pub(crate) nodes: Vec<TrieNode>,
    /// Per node, `(byte, child)` sorted by byte.
    pub(crate) edges: Vec<(u8, u32)>,
    /// Per node, rule indexes in increasing order.
    pub(crate) lists: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TrieNode {
    pub(crate) edges_start: u32,
    pub(crate) edges_len: u32,
    pub(crate) list_start: u32,
    pub(crate) list_len: u32,
}

impl PrefixTrie {
    #[inline]
    fn child(&self, node: usize, b: u8) -> Option<usize> {
        let n = self.nodes[node];
        let start = n.edges_start as usize;
        let edges = &self.edges[start..start + n.edges_len as usize];
        let found = if edges.len() <= 8 {
            edges.iter().find(|(e, _)| *e == b).map(|(_, c)| *c)
        } else {
            edges
                .binary_search_by_key(&b, |(e, _)| *e)
                .ok()
                .map(|k| edges[k].1)
        };
        found.map(|c| c as usize)
    }

    #[inline]
    fn list(&self, node: usize) -> &[u32] {
        let n = self.nodes[node];
        let start = n.list_start as usize;
        &self.lists[start..start + n.list_len as usize]
    }
}

#[derive(Debug)]
pub(crate) struct RedisMatcher {
    pub(crate) words: usize,
    pub(crate) rules: Vec<RedisRule>,
    pub(crate) ports: IntervalIndex<u16>,
    pub(crate) dbs: IntervalIndex<u32>,
    /// Upper-case command name -> command id.
    pub(crate) cmd_ids: FxMap<Box<[u8]>, u16>,
    /// Row per command id, then one row for unknown commands.
    pub(crate) cmd_rows: Vec<u64>,
    pub(crate) cmd_dangerous: Vec<bool>,
    /// For the rules *not* in `trie`: 256 rows by first key byte, then one
    /// for the empty key, then one for "no key".
    pub(crate) key_rows: Vec<u64>,
    /// The rules whose every key pattern has a literal prefix.
    pub(crate) trie: PrefixTrie,
    /// `Drop` when there is no `default redis` line.
    pub(crate) default: Outcome,
}

/// Progress of one decision: the first rule that decides, and the first
/// routing rule passed over because it does not name a dangerous command.
#[derive(Default)]
struct Scan {
    decisive: Option<usize>,
    passed: Option<usize>,
}

impl Scan {
    #[inline]
    fn before_decisive(&self, i: usize) -> bool {
        self.decisive.is_none_or(|d| i < d)
    }
}

#[inline]
fn has_bit(row: &[u64], i: usize) -> bool {
    row[i / 64] >> (i % 64) & 1 == 1
}

impl RedisMatcher {
    #[inline]
    fn command_id(&self, command: &[u8]) -> Option<u16> {
        crate::commands::with_upper::<MAX_CMD, _>(command, |up| self.cmd_ids.get(up).copied())
            .flatten()
    }

    /// Rule `i` passed the index filters; run its key patterns and record
    /// what it does.
    #[inline]
    fn consider(&self, i: usize, key: Option<&[u8]>, danger: Option<u16>, scan: &mut Scan) {
        let rule = &self.rules[i];
        if let (Some(pats), Some(key)) = (&rule.keys, key) {
            if !pats.iter().any(|p| p.is_match(key)) {
                return;
            }
        }
        if let (Outcome::Route(_), Some(c)) = (&rule.outcome, danger) {
            if rule.explicit_dangerous.binary_search(&c).is_err() {
                if scan.passed.is_none_or(|p| i < p) {
                    scan.passed = Some(i);
                }
                return;
            }
        }
        scan.decisive = Some(i);
    }

    pub(crate) fn decide(&self, q: &RedisQuery<'_>) -> Decision<'_> {
        let words = self.words;
        let cid = self.command_id(q.command);
        let (cmd_row, danger) = match cid {
            Some(c) if self.cmd_dangerous[usize::from(c)] => (usize::from(c), Some(c)),
            Some(c) => (usize::from(c), None),
            None => (self.cmd_dangerous.len(), None),
        };
        let cmd_row = &self.cmd_rows[cmd_row * words..(cmd_row + 1) * words];
        let port_row = self.ports.row(q.port, words);
        let db_row = self.dbs.row(q.db, words);
        let mut scan = Scan::default();

        // Rules indexed by key prefix: walk the key down the trie.
        if let Some(key) = q.key {
            let mut node = 0;
            for &b in key {
                let Some(next) = self.trie.child(node, b) else {
                    break;
                };
                node = next;
                for &i in self.trie.list(node) {
                    let i = i as usize;
                    if !scan.before_decisive(i) {
                        break;
                    }
                    if has_bit(cmd_row, i) && has_bit(port_row, i) && has_bit(db_row, i) {
                        self.consider(i, q.key, danger, &mut scan);
                    }
                }
            }
        }

        // The other rules: bitsets, in order, up to the best found so far.
        let key_row = match q.key {
            Some([first, ..]) => usize::from(*first),
            Some([]) => 256,
            None => 257,
        };
        let key_row = &self.key_rows[key_row * words..(key_row + 1) * words];
        'words: for w in 0..words {
            if !scan.before_decisive(w * 64) {
                break;
            }
            let mut m = cmd_row[w] & port_row[w] & db_row[w] & key_row[w];
            while m != 0 {
                let i = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                if !scan.before_decisive(i) {
                    break 'words;
                }
                self.consider(i, q.key, danger, &mut scan);
                if scan.decisive == Some(i) {
                    break 'words;
                }
            }
        }

        if let Some(i) = scan.decisive {
            let rule = &self.rules[i];
            return rule.outcome.decision(Some(rule.id));
        }
        match (&self.default, danger.is_some()) {
            (_, true) if scan.passed.is_some() => Decision::Drop {
                rule: scan.passed.map(|i| self.rules[i].id),
                reason: DropReason::Dangerous,
            },
            (Outcome::Route(_), true) => Decision::Drop {
                rule: None,
                reason: DropReason::Dangerous,
            },
            (default, _) => default.decision(None),
        }
    }
}

// ---------------------------------------------------------------- mongo --

#[derive(Debug)]
pub(crate) struct MongoRule {
    pub(crate) id: RuleId,
    /// Bit per [`MongoOpKind`]; all of them without an `op` condition.
    pub(crate) ops: u8,
    /// The `op` condition names `drop`: only then may the rule route one.
    pub(crate) names_drop: bool,
    pub(crate) dbs: Option<Box<[ByteMatcher]>>,
    pub(crate) colls: Option<Box<[ByteMatcher]>>,
    pub(crate) outcome: Outcome,
}

#[derive(Debug)]
pub(crate) struct MongoMatcher {
    pub(crate) rules: Vec<MongoRule>,
    /// `Drop` when there is no `default mongo` line.
    pub(crate) default: Outcome,
}

fn any_match(pats: &Option<Box<[ByteMatcher]>>, s: &str) -> bool {
    match pats {
        None => true,
        Some(p) => p.iter().any(|m| m.is_match(s.as_bytes())),
    }
}

impl MongoMatcher {
    /// As for Redis, a drop (destructive) is routed only by a rule that
    /// names it: a routing rule without `op drop` is passed over, the
    /// default never routes it.
    pub(crate) fn decide(&self, q: &MongoQuery<'_>) -> Decision<'_> {
        let bit = q.op.bit();
        let dangerous = q.op == MongoOpKind::Drop;
        let mut passed = None;
        for rule in &self.rules {
            if rule.ops & bit == 0 || !any_match(&rule.dbs, q.db) || !any_match(&rule.colls, q.coll)
            {
                continue;
            }
            if dangerous && !rule.names_drop && matches!(rule.outcome, Outcome::Route(_)) {
                passed.get_or_insert(rule.id);
                continue;
            }
            return rule.outcome.decision(Some(rule.id));
        }
        match (&self.default, dangerous) {
            (_, true) if passed.is_some() => Decision::Drop {
                rule: passed,
                reason: DropReason::Dangerous,
            },
            (Outcome::Route(_), true) => Decision::Drop {
                rule: None,
                reason: DropReason::Dangerous,
            },
            (default, _) => default.decision(None),
        }
    }
}
