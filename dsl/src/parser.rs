//! From text to [`crate::ast::File`]: the pest grammar in `rules.pest` and one
//! `parse_<rule>` function per grammar rule.
//!
//! Syntax errors are pest's, with [`describe`] renaming grammar rules into
//! plain words ("expected a key pattern", "expected `->`"). Within one file
//! parsing stops at the first syntax error.

use std::path::Path;
use std::time::Duration;

use pest::error::LineColLocation;
use pest::iterators::Pair;
use pest::Parser;

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::matcher::{DropReason, MongoOpKind};
use crate::pattern::PatternSrc;
use crate::ruletest::InputError;
use crate::target::TargetKind;

#[derive(pest_derive::Parser, Debug)]
#[grammar = "rules.pest"]
pub struct RulesParser;

/// The words used for grammar rules in error messages.
pub fn describe(rule: &Rule) -> String {
    let s = match rule {
        Rule::EOI => "end of file",
        Rule::item => "a statement (`target`, `rule`, `default` or `test`)",
        Rule::target_name => "a target name",
        Rule::rule_name => "a rule name",
        Rule::option_name => "an option name",
        Rule::action_target => "a target name",
        Rule::kw_target => "`target`",
        Rule::kw_rule => "`rule`",
        Rule::kw_default => "`default`",
        Rule::kw_test => "`test`",
        Rule::kw_redis => "`redis`",
        Rule::kw_redis_cluster => "`redis-cluster`",
        Rule::kw_redis_sentinel => "`redis-sentinel`",
        Rule::kw_mongo => "`mongo`",
        Rule::kw_file => "`file`",
        Rule::kw_port => "`port`",
        Rule::kw_db => "`db`",
        Rule::kw_cmd => "`cmd`",
        Rule::kw_key => "`key`",
        Rule::kw_coll => "`coll`",
        Rule::kw_op => "`op`",
        Rule::kw_prefix => "`prefix`",
        Rule::kw_drop => "`drop`",
        Rule::kw_expect => "an `expect` line",
        Rule::close_quote => "a closing `\"`",
        Rule::close_slash => "a closing `/`",
        Rule::line_end => "end of line",
        Rule::arrow => "`->`",
        Rule::colon => "`:`",
        Rule::comma => "`,`",
        Rule::equals => "`=`",
        Rule::lbrace => "`{`",
        Rule::rbrace => "`}`",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::duration => "a duration (`500ms`, `2s`, `1m`, `1h`)",
        Rule::string | Rule::string_inner => "a quoted string",
        Rule::regex | Rule::regex_body => "a regex (`/.../`)",
        Rule::regex_flags => "regex flags (`i`)",
        Rule::target_decl => "a target declaration",
        Rule::target_kind => {
            "a target kind (`redis`, `redis-cluster`, `redis-sentinel`, `mongo` or `file`)"
        }
        Rule::target_url => "a quoted URL or path",
        Rule::options => "target options (`{ pool = 8, timeout = 2s }`)",
        Rule::option => "an option (`name = value`)",
        Rule::option_value => {
            "an option value (a number, a duration such as `2s`, `true`/`false` or a quoted string)"
        }
        Rule::rule_decl => "a rule",
        Rule::rule_body => "`redis` or `mongo`",
        Rule::redis_rule => "a redis rule",
        Rule::redis_cond => "a redis condition (`port`, `db`, `cmd` or `key`)",
        Rule::port_cond => "a `port` condition",
        Rule::port_item => "a port number or range (`6379`, `7000..7010`)",
        Rule::rdb_cond => "a `db` condition",
        Rule::db_item => "a db number or range (`1`, `0..15`)",
        Rule::cmd_cond => "a `cmd` condition",
        Rule::cmd_item => "a command name or `@group`",
        Rule::cmd_group => "a command group (`@write`)",
        Rule::cmd_name => "a command name",
        Rule::key_cond => "a `key` condition",
        Rule::key_pattern => "a key pattern (\"glob\" or /regex/)",
        Rule::mongo_rule => "a mongo rule",
        Rule::mongo_cond => "a mongo condition (`db`, `coll` or `op`)",
        Rule::mdb_cond => "a `db` condition",
        Rule::coll_cond => "a `coll` condition",
        Rule::name_pattern => "a name pattern (\"glob\" or /regex/)",
        Rule::op_cond => "an `op` condition",
        Rule::op_name => {
            "an operation (`insert`, `update`, `replace`, `delete`, `drop`, or one kind such as `insert_one`)"
        }
        Rule::outcome => "`drop`, `dead-letter` or a target name",
        Rule::kw_dead_letter | Rule::dead_letter => "`dead-letter`",
        Rule::dead_letter_reason => "a quoted reason",
        Rule::action => "a target name",
        Rule::action_opt => "`db`, `key`, `prefix` or `coll`",
        Rule::act_db => "`db`",
        Rule::db_value => "a db number or a quoted db name",
        Rule::act_key => "`key`",
        Rule::key_template => "a quoted key template (\"sess:{1}\")",
        Rule::act_prefix => "`prefix`",
        Rule::prefix_value => "a quoted key prefix",
        Rule::act_coll => "`coll`",
        Rule::coll_template => "a quoted collection name or template",
        Rule::default_decl => "a default",
        Rule::protocol => "`redis` or `mongo`",
        Rule::test_decl => "a test",
        Rule::test_name => "a quoted test name",
        Rule::test_input => {
            "a test input line (`redis PORT DB COMMAND ARG...` or `mongo DB COLL OPERATION`)"
        }
        Rule::input_line => "an input line",
        Rule::eol => "end of line",
        Rule::redis_input => "a redis input line",
        Rule::input_port => "a port number",
        Rule::input_db => "a db number",
        Rule::arg | Rule::bare_arg => "an argument",
        Rule::mongo_input => "a mongo input line",
        Rule::word | Rule::bare_word => "a name",
        Rule::exact_op => {
            "an operation (`insert_one`, `insert_many`, `update_one`, `update_many`, `replace_one`, `delete_one`, `delete_many` or `drop`)"
        }
        Rule::expect_line => "an `expect` line",
        Rule::expect_drop => "`drop`",
        Rule::drop_reason => "a drop reason (`rule`, `default` or `dangerous`)",
        Rule::expect_dead => "`dead-letter`",
        Rule::expect_route => "a target name",
        Rule::expect_word | Rule::bare_expect_word => "a value",
        Rule::file => "a rules file",
        Rule::WHITESPACE | Rule::COMMENT | Rule::line_comment => "whitespace",
        Rule::ident_char | Rule::ident => "a name",
        Rule::sp => "a space",
    };
    s.to_string()
}

/// Parses one file. The error is the first syntax error, as a diagnostic.
pub fn parse_file(path: &Path, text: &str) -> Result<File, Box<Diagnostic>> {
    let pairs = match RulesParser::parse(Rule::file, text) {
        Ok(p) => p,
        Err(e) => return Err(Box::new(syntax_error(path, e))),
    };
    let mut items = Vec::new();
    for p in pairs {
        if p.as_rule() == Rule::item {
            items.extend(parse_item(p));
        }
    }
    Ok(File {
        path: path.to_path_buf(),
        source: text.to_string(),
        items,
    })
}

/// Parses one test input line on its own, as `syncs-check --explain` takes
/// it: the grammar's `test_input`, so quoting works as in a `test` block.
pub fn parse_input_line(text: &str) -> Result<TestInputAst, InputError> {
    let syntax = |e: pest::error::Error<Rule>| {
        let e = e.renamed_rules(describe);
        let col = match e.line_col {
            LineColLocation::Pos((_, c)) | LineColLocation::Span((_, c), _) => c,
        };
        InputError::Syntax {
            col,
            message: e.variant.message().into_owned(),
        }
    };
    let pairs = RulesParser::parse(Rule::input_line, text).map_err(syntax)?;
    pairs
        .into_iter()
        .find(|p| p.as_rule() == Rule::test_input)
        .and_then(parse_test_input)
        .map(|s| s.node)
        .ok_or(InputError::Empty)
}

fn syntax_error(path: &Path, e: pest::error::Error<Rule>) -> Diagnostic {
    let e = e
        .with_path(&path.display().to_string())
        .renamed_rules(describe);
    let (line, col) = match e.line_col {
        LineColLocation::Pos(p) => p,
        LineColLocation::Span(p, _) => p,
    };
    let message = e.variant.message().into_owned();
    Diagnostic::error(
        path,
        line,
        col,
        message,
        // pest shows a line's end as ␊ (and ␍): the excerpt is the text.
        e.line().trim_end_matches(['\r', '\n', '␊', '␍']),
    )
}

fn span(pair: &Pair<'_, Rule>) -> Span {
    let (line, col) = pair.line_col();
    Span { line, col }
}

fn spanned<T>(pair: &Pair<'_, Rule>, node: T) -> Spanned<T> {
    Spanned {
        node,
        span: span(pair),
    }
}

fn parse_item(pair: Pair<'_, Rule>) -> Option<Item> {
    let inner = pair.into_inner().next()?;
    Some(match inner.as_rule() {
        Rule::target_decl => Item::Target(parse_target_decl(inner)?),
        Rule::rule_decl => Item::Rule(parse_rule_decl(inner)?),
        Rule::default_decl => Item::Default(parse_default_decl(inner)?),
        Rule::test_decl => Item::Test(parse_test_decl(inner)?),
        r => unreachable!("parse_item: {r:?}"),
    })
}

/// Saturating: out-of-range numbers are reported by the checker.
fn parse_number(pair: &Pair<'_, Rule>) -> u64 {
    pair.as_str().parse().unwrap_or(u64::MAX)
}

/// The content of a `string` pair, unescaped.
fn parse_string(pair: Pair<'_, Rule>) -> String {
    let raw = pair
        .into_inner()
        .find(|p| p.as_rule() == Rule::string_inner)
        .map(|p| p.as_str())
        .unwrap_or("");
    unescape(raw)
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn parse_regex(pair: Pair<'_, Rule>) -> PatternSrc {
    let mut body = String::new();
    let mut case_insensitive = false;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::regex_body => body = p.as_str().replace("\\/", "/"),
            Rule::regex_flags => case_insensitive = p.as_str() == "i",
            Rule::close_slash => {}
            r => unreachable!("parse_regex: {r:?}"),
        }
    }
    PatternSrc::Regex {
        body,
        case_insensitive,
    }
}

/// `key_pattern` / `name_pattern`: a string (glob) or a regex.
fn parse_pattern(pair: Pair<'_, Rule>) -> Option<Spanned<PatternSrc>> {
    let sp = span(&pair);
    let inner = pair.into_inner().next()?;
    let node = match inner.as_rule() {
        Rule::string => PatternSrc::Glob(parse_string(inner)),
        Rule::regex => parse_regex(inner),
        r => unreachable!("parse_pattern: {r:?}"),
    };
    Some(Spanned { node, span: sp })
}

// ------------------------------------------------------------- targets --

fn parse_target_decl(pair: Pair<'_, Rule>) -> Option<TargetDecl> {
    let mut name = None;
    let mut kind = TargetKind::Redis;
    let mut url = None;
    let mut options = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::target_name => name = Some(spanned(&p, p.as_str().to_string())),
            Rule::target_kind => kind = parse_target_kind(p),
            Rule::target_url => {
                let sp = span(&p);
                let s = p.into_inner().next().map(parse_string).unwrap_or_default();
                url = Some(Spanned { node: s, span: sp });
            }
            Rule::options => options = parse_options(p),
            Rule::kw_target | Rule::equals => {}
            r => unreachable!("parse_target_decl: {r:?}"),
        }
    }
    Some(TargetDecl {
        name: name?,
        kind,
        url: url?,
        options,
    })
}

fn parse_target_kind(pair: Pair<'_, Rule>) -> TargetKind {
    match pair.into_inner().next().map(|p| p.as_rule()) {
        Some(Rule::kw_redis_cluster) => TargetKind::RedisCluster,
        Some(Rule::kw_redis_sentinel) => TargetKind::RedisSentinel,
        Some(Rule::kw_mongo) => TargetKind::Mongo,
        Some(Rule::kw_file) => TargetKind::File,
        Some(Rule::kw_redis) => TargetKind::Redis,
        r => unreachable!("parse_target_kind: {r:?}"),
    }
}

fn parse_options(pair: Pair<'_, Rule>) -> Vec<OptionDecl> {
    pair.into_inner()
        .filter(|p| p.as_rule() == Rule::option)
        .filter_map(parse_option)
        .collect()
}

fn parse_option(pair: Pair<'_, Rule>) -> Option<OptionDecl> {
    let mut name = None;
    let mut value = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::option_name => name = Some(spanned(&p, p.as_str().to_string())),
            Rule::option_value => value = Some(parse_option_value(p)?),
            Rule::equals => {}
            r => unreachable!("parse_option: {r:?}"),
        }
    }
    Some(OptionDecl {
        name: name?,
        value: value?,
    })
}

fn parse_option_value(pair: Pair<'_, Rule>) -> Option<Spanned<OptionValue>> {
    let sp = span(&pair);
    let inner = pair.into_inner().next()?;
    let node = match inner.as_rule() {
        Rule::number => OptionValue::Number(parse_number(&inner)),
        Rule::boolean => OptionValue::Bool(inner.as_str() == "true"),
        Rule::string => OptionValue::Str(parse_string(inner)),
        Rule::duration => OptionValue::Duration(parse_duration(inner.as_str())),
        r => unreachable!("parse_option_value: {r:?}"),
    };
    Some(Spanned { node, span: sp })
}

/// `500ms`, `2s`, `1m`, `1h` (the grammar's `duration`; one too large to
/// hold is the longest there is).
fn parse_duration(s: &str) -> Duration {
    crate::duration::parse_duration(s).unwrap_or(Duration::MAX)
}

// --------------------------------------------------------------- rules --

fn parse_rule_decl(pair: Pair<'_, Rule>) -> Option<RuleDecl> {
    let sp = span(&pair);
    let mut name = None;
    let mut body = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::rule_name => name = Some(spanned(&p, p.as_str().to_string())),
            Rule::rule_body => body = parse_rule_body(p),
            Rule::kw_rule | Rule::colon => {}
            r => unreachable!("parse_rule_decl: {r:?}"),
        }
    }
    let (conds, outcome) = body?;
    Some(RuleDecl {
        name: name?,
        span: sp,
        conds,
        outcome,
    })
}

fn parse_rule_body(pair: Pair<'_, Rule>) -> Option<(Conditions, Spanned<OutcomeAst>)> {
    let inner = pair.into_inner().next()?;
    match inner.as_rule() {
        Rule::redis_rule => parse_redis_rule(inner),
        Rule::mongo_rule => parse_mongo_rule(inner),
        r => unreachable!("parse_rule_body: {r:?}"),
    }
}

fn parse_redis_rule(pair: Pair<'_, Rule>) -> Option<(Conditions, Spanned<OutcomeAst>)> {
    let mut conds = RedisConds::default();
    let mut outcome = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::redis_cond => {
                if let Some(c) = p.into_inner().next() {
                    parse_redis_cond(c, &mut conds);
                }
            }
            Rule::outcome => outcome = parse_outcome(p),
            Rule::kw_redis | Rule::arrow => {}
            r => unreachable!("parse_redis_rule: {r:?}"),
        }
    }
    Some((Conditions::Redis(conds), outcome?))
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    what: &'static str,
    sp: Span,
    repeated: &mut Vec<Spanned<&'static str>>,
) {
    if slot.is_some() {
        repeated.push(Spanned {
            node: what,
            span: sp,
        });
    } else {
        *slot = Some(value);
    }
}

fn parse_redis_cond(pair: Pair<'_, Rule>, conds: &mut RedisConds) {
    let sp = span(&pair);
    match pair.as_rule() {
        Rule::port_cond => {
            let v = parse_ranges(pair, Rule::port_item);
            set_once(&mut conds.ports, v, "port", sp, &mut conds.repeated);
        }
        Rule::rdb_cond => {
            let v = parse_ranges(pair, Rule::db_item);
            set_once(&mut conds.dbs, v, "db", sp, &mut conds.repeated);
        }
        Rule::cmd_cond => {
            let v = pair
                .into_inner()
                .filter(|p| p.as_rule() == Rule::cmd_item)
                .filter_map(parse_cmd_item)
                .collect();
            set_once(&mut conds.cmds, v, "cmd", sp, &mut conds.repeated);
        }
        Rule::key_cond => {
            let v = pair
                .into_inner()
                .filter(|p| p.as_rule() == Rule::key_pattern)
                .filter_map(parse_pattern)
                .collect();
            set_once(&mut conds.keys, v, "key", sp, &mut conds.repeated);
        }
        r => unreachable!("parse_redis_cond: {r:?}"),
    }
}

fn parse_ranges(pair: Pair<'_, Rule>, item_rule: Rule) -> Vec<Spanned<NumRange>> {
    pair.into_inner()
        .filter(|p| p.as_rule() == item_rule)
        .map(|p| {
            let sp = span(&p);
            let nums: Vec<u64> = p.into_inner().map(|n| parse_number(&n)).collect();
            let lo = nums.first().copied().unwrap_or(0);
            let hi = nums.get(1).copied().unwrap_or(lo);
            Spanned {
                node: NumRange { lo, hi },
                span: sp,
            }
        })
        .collect()
}

fn parse_cmd_item(pair: Pair<'_, Rule>) -> Option<Spanned<CmdItem>> {
    let sp = span(&pair);
    let inner = pair.into_inner().next()?;
    let node = match inner.as_rule() {
        Rule::cmd_group => CmdItem::Group(inner.as_str()[1..].to_string()),
        Rule::cmd_name => CmdItem::Name(inner.as_str().to_ascii_uppercase()),
        r => unreachable!("parse_cmd_item: {r:?}"),
    };
    Some(Spanned { node, span: sp })
}

fn parse_mongo_rule(pair: Pair<'_, Rule>) -> Option<(Conditions, Spanned<OutcomeAst>)> {
    let mut conds = MongoConds::default();
    let mut outcome = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::mongo_cond => {
                if let Some(c) = p.into_inner().next() {
                    parse_mongo_cond(c, &mut conds);
                }
            }
            Rule::outcome => outcome = parse_outcome(p),
            Rule::kw_mongo | Rule::arrow => {}
            r => unreachable!("parse_mongo_rule: {r:?}"),
        }
    }
    Some((Conditions::Mongo(conds), outcome?))
}

fn parse_mongo_cond(pair: Pair<'_, Rule>, conds: &mut MongoConds) {
    let sp = span(&pair);
    let patterns = |pair: Pair<'_, Rule>| -> Vec<Spanned<PatternSrc>> {
        pair.into_inner()
            .filter(|p| p.as_rule() == Rule::name_pattern)
            .filter_map(parse_pattern)
            .collect()
    };
    match pair.as_rule() {
        Rule::mdb_cond => {
            let v = patterns(pair);
            set_once(&mut conds.dbs, v, "db", sp, &mut conds.repeated);
        }
        Rule::coll_cond => {
            let v = patterns(pair);
            set_once(&mut conds.colls, v, "coll", sp, &mut conds.repeated);
        }
        Rule::op_cond => {
            let v = pair
                .into_inner()
                .filter(|p| p.as_rule() == Rule::op_name)
                .map(|p| spanned(&p, parse_op_name(p.as_str())))
                .collect();
            set_once(&mut conds.ops, v, "op", sp, &mut conds.repeated);
        }
        r => unreachable!("parse_mongo_cond: {r:?}"),
    }
}

fn parse_op_name(s: &str) -> OpItem {
    match s {
        "insert" => OpItem::Insert,
        "update" => OpItem::Update,
        "replace" => OpItem::Replace,
        "delete" => OpItem::Delete,
        other => match MongoOpKind::from_name(other) {
            Some(k) => OpItem::Exact(k),
            None => unreachable!("parse_op_name: {other}"),
        },
    }
}

fn parse_outcome(pair: Pair<'_, Rule>) -> Option<Spanned<OutcomeAst>> {
    let sp = span(&pair);
    let mut actions = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::kw_drop => {
                return Some(Spanned {
                    node: OutcomeAst::Drop,
                    span: sp,
                })
            }
            Rule::dead_letter => {
                let reason = p
                    .into_inner()
                    .find(|r| r.as_rule() == Rule::dead_letter_reason)
                    .and_then(|r| r.into_inner().next())
                    .map(parse_string);
                return Some(Spanned {
                    node: OutcomeAst::DeadLetter(reason),
                    span: sp,
                });
            }
            Rule::action => actions.push(parse_action(p)?),
            Rule::comma => {}
            r => unreachable!("parse_outcome: {r:?}"),
        }
    }
    Some(Spanned {
        node: OutcomeAst::Route(actions),
        span: sp,
    })
}

fn parse_action(pair: Pair<'_, Rule>) -> Option<ActionAst> {
    let mut target = None;
    let mut db = None;
    let mut key = None;
    let mut prefix = None;
    let mut coll = None;
    let mut repeated = Vec::new();
    for p in pair.into_inner() {
        let sp = span(&p);
        match p.as_rule() {
            Rule::action_target => target = Some(spanned(&p, p.as_str().to_string())),
            Rule::act_db => {
                let Some(v) = p
                    .into_inner()
                    .find(|c| c.as_rule() == Rule::db_value)
                    .and_then(|c| c.into_inner().next())
                else {
                    continue;
                };
                let value = match v.as_rule() {
                    Rule::number => DbValue::Number(parse_number(&v)),
                    Rule::string => DbValue::Name(parse_string(v)),
                    r => unreachable!("parse_action: {r:?}"),
                };
                let value = Spanned {
                    node: value,
                    span: sp,
                };
                set_once(&mut db, value, "db", sp, &mut repeated);
            }
            Rule::act_key | Rule::act_prefix | Rule::act_coll => {
                let rule = p.as_rule();
                let text = p
                    .into_inner()
                    .find(|c| {
                        matches!(
                            c.as_rule(),
                            Rule::key_template | Rule::prefix_value | Rule::coll_template
                        )
                    })
                    .and_then(|c| c.into_inner().next())
                    .map(parse_string)
                    .unwrap_or_default();
                let v = Spanned {
                    node: text,
                    span: sp,
                };
                match rule {
                    Rule::act_key => set_once(&mut key, v, "key", sp, &mut repeated),
                    Rule::act_prefix => set_once(&mut prefix, v, "prefix", sp, &mut repeated),
                    _ => set_once(&mut coll, v, "coll", sp, &mut repeated),
                }
            }
            r => unreachable!("parse_action: {r:?}"),
        }
    }
    Some(ActionAst {
        target: target?,
        db,
        key,
        prefix,
        coll,
        repeated,
    })
}

fn parse_default_decl(pair: Pair<'_, Rule>) -> Option<DefaultDecl> {
    let sp = span(&pair);
    let mut protocol = Protocol::Redis;
    let mut outcome = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::protocol => {
                if p.into_inner().next().map(|k| k.as_rule()) == Some(Rule::kw_mongo) {
                    protocol = Protocol::Mongo;
                }
            }
            Rule::outcome => outcome = parse_outcome(p),
            Rule::kw_default | Rule::arrow => {}
            r => unreachable!("parse_default_decl: {r:?}"),
        }
    }
    Some(DefaultDecl {
        protocol,
        span: sp,
        outcome: outcome?,
    })
}

// --------------------------------------------------------------- tests --

fn parse_test_decl(pair: Pair<'_, Rule>) -> Option<TestDecl> {
    let sp = span(&pair);
    let mut name = String::new();
    let mut input = None;
    let mut expects = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::test_name => {
                name = p.into_inner().next().map(parse_string).unwrap_or_default();
            }
            Rule::test_input => input = parse_test_input(p),
            Rule::expect_line => expects.extend(parse_expect_line(p)),
            Rule::kw_test | Rule::lbrace | Rule::rbrace => {}
            r => unreachable!("parse_test_decl: {r:?}"),
        }
    }
    Some(TestDecl {
        name,
        span: sp,
        input: input?,
        expects,
    })
}

/// `arg` / `word` / `expect_word`: a quoted string or a bare token.
fn parse_token(pair: Pair<'_, Rule>) -> String {
    match pair.into_inner().next() {
        Some(p) if p.as_rule() == Rule::string => parse_string(p),
        Some(p) => p.as_str().to_string(),
        None => String::new(),
    }
}

fn parse_test_input(pair: Pair<'_, Rule>) -> Option<Spanned<TestInputAst>> {
    let sp = span(&pair);
    let inner = pair.into_inner().next()?;
    let node = match inner.as_rule() {
        Rule::redis_input => {
            let (mut port, mut db, mut args) = (0, 0, Vec::new());
            for p in inner.into_inner() {
                match p.as_rule() {
                    Rule::input_port => port = parse_number(&p),
                    Rule::input_db => db = parse_number(&p),
                    Rule::arg => args.push(parse_token(p).into_bytes()),
                    Rule::kw_redis | Rule::line_end => {}
                    r => unreachable!("parse_test_input: {r:?}"),
                }
            }
            TestInputAst::Redis { port, db, args }
        }
        Rule::mongo_input => {
            let mut words = Vec::new();
            let mut op = MongoOpKind::InsertOne;
            for p in inner.into_inner() {
                match p.as_rule() {
                    Rule::word => words.push(parse_token(p)),
                    Rule::exact_op => op = MongoOpKind::from_name(p.as_str())?,
                    Rule::kw_mongo | Rule::line_end => {}
                    r => unreachable!("parse_test_input: {r:?}"),
                }
            }
            let mut words = words.into_iter();
            TestInputAst::Mongo {
                db: words.next()?,
                coll: words.next()?,
                op,
            }
        }
        r => unreachable!("parse_test_input: {r:?}"),
    };
    Some(Spanned { node, span: sp })
}

fn parse_expect_line(pair: Pair<'_, Rule>) -> Option<Spanned<ExpectAst>> {
    let sp = span(&pair);
    let body = pair
        .into_inner()
        .find(|p| !matches!(p.as_rule(), Rule::kw_expect | Rule::line_end))?;
    let node = match body.as_rule() {
        Rule::expect_drop => {
            let reason = body
                .into_inner()
                .find(|p| p.as_rule() == Rule::drop_reason)
                .map(|p| match p.as_str() {
                    "rule" => DropReason::Rule,
                    "default" => DropReason::Default,
                    _ => DropReason::Dangerous,
                });
            ExpectAst::Drop(reason)
        }
        Rule::expect_dead => ExpectAst::DeadLetter,
        Rule::expect_route => {
            let mut target = None;
            let mut db = None;
            let mut coll = None;
            let mut args: Option<Vec<Vec<u8>>> = None;
            // Which keyword the next expect_word belongs to.
            let mut last_kw = Rule::kw_db;
            for p in body.into_inner() {
                match p.as_rule() {
                    Rule::action_target => target = Some(spanned(&p, p.as_str().to_string())),
                    Rule::kw_db | Rule::kw_coll => last_kw = p.as_rule(),
                    Rule::expect_word => {
                        let w = spanned(&p, String::new());
                        let w = Spanned {
                            node: parse_token(p),
                            span: w.span,
                        };
                        if last_kw == Rule::kw_db {
                            db = Some(w);
                        } else {
                            coll = Some(w);
                        }
                    }
                    Rule::colon => args = Some(Vec::new()),
                    Rule::arg => args
                        .get_or_insert_with(Vec::new)
                        .push(parse_token(p).into_bytes()),
                    r => unreachable!("parse_expect_line: {r:?}"),
                }
            }
            ExpectAst::Route {
                target: target?,
                db,
                coll,
                args,
            }
        }
        r => unreachable!("parse_expect_line: {r:?}"),
    };
    Some(Spanned { node, span: sp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes() {
        assert_eq!(unescape(r#"a\"b\\c\nd\*"#), "a\"b\\c\nd\\*");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Duration::from_millis(500));
        assert_eq!(parse_duration("2s"), Duration::from_secs(2));
        assert_eq!(parse_duration("3m"), Duration::from_secs(180));
        assert_eq!(parse_duration("1h"), Duration::from_secs(3600));
    }
}
