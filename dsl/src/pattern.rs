//! Key and name patterns: Redis-style globs (`"session:*"`) and regexes
//! (`/^tmp:/`), compiled once into fast byte matchers.
//!
//! Glob syntax (as Redis `KEYS`): `*` any run of bytes, `?` one byte,
//! `[abc]`, `[a-z]`, `[^a]` (or `[!a]`) one byte from / not from a set,
//! `\x` a literal `x`. Every wildcard (`*`, `?`, `[...]`) is a capture group,
//! numbered from 1 left to right, for key templates (`"sess:{1}"`); each `*`
//! takes as little as it can, so the last one takes the rest. A glob
//! with no wildcard is an exact match. Globs are anchored and case-sensitive.
//!
//! Regexes use the `regex` crate's syntax, are *not* anchored unless written
//! with `^` / `$`, and may carry the flag `i` (`/^tmp:/i`).

use regex::bytes::{Regex, RegexBuilder};
use thiserror::Error;

/// A regex compared by its source text, so that [`crate::Action`] can be
/// `PartialEq`.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRegex(Regex);

impl CompiledRegex {
    pub(crate) fn regex(&self) -> &Regex {
        &self.0
    }
}

impl PartialEq for CompiledRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A pattern as written in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternSrc {
    /// `"..."`: a glob (or an exact string when it has no wildcard).
    Glob(String),
    /// `/.../` or `/.../i`.
    Regex {
        body: String,
        case_insensitive: bool,
    },
}

impl std::fmt::Display for PatternSrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternSrc::Glob(g) => write!(f, "{g:?}"),
            PatternSrc::Regex {
                body,
                case_insensitive,
            } => write!(f, "/{body}/{}", if *case_insensitive { "i" } else { "" }),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum PatternError {
    #[error("invalid glob {glob:?}: unclosed `[`")]
    UnclosedClass { glob: String },
    #[error("invalid glob {glob:?}: trailing `\\`")]
    TrailingEscape { glob: String },
    #[error("invalid glob {glob:?}: only ASCII is supported inside `[...]`")]
    NonAsciiClass { glob: String },
    #[error("invalid glob {glob:?}: bad range `{from}-{to}` in `[...]`")]
    BadRange { glob: String, from: char, to: char },
    #[error("invalid regex /{body}/: {reason}")]
    Regex { body: String, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GlobTok {
    Lit(u8),
    Star,
    One,
    /// (negated, items) where an item is an inclusive byte range.
    Class(bool, Vec<(u8, u8)>),
}

fn tokenize(glob: &str) -> Result<Vec<GlobTok>, PatternError> {
    let b = glob.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' => {
                // `**` is the same as `*`; keep one group.
                if toks.last() != Some(&GlobTok::Star) {
                    toks.push(GlobTok::Star);
                }
                i += 1;
            }
            b'?' => {
                toks.push(GlobTok::One);
                i += 1;
            }
            b'\\' => {
                let Some(&c) = b.get(i + 1) else {
                    return Err(PatternError::TrailingEscape { glob: glob.into() });
                };
                toks.push(GlobTok::Lit(c));
                i += 2;
            }
            b'[' => {
                let mut j = i + 1;
                let negated = matches!(b.get(j), Some(b'^') | Some(b'!'));
                if negated {
                    j += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = b.get(j) else {
                        return Err(PatternError::UnclosedClass { glob: glob.into() });
                    };
                    if c == b']' && !first {
                        j += 1;
                        break;
                    }
                    first = false;
                    let mut lo = c;
                    if c == b'\\' {
                        let Some(&e) = b.get(j + 1) else {
                            return Err(PatternError::UnclosedClass { glob: glob.into() });
                        };
                        lo = e;
                        j += 1;
                    }
                    if !lo.is_ascii() {
                        return Err(PatternError::NonAsciiClass { glob: glob.into() });
                    }
                    j += 1;
                    let mut hi = lo;
                    if b.get(j) == Some(&b'-') && b.get(j + 1).is_some_and(|&n| n != b']') {
                        hi = b[j + 1];
                        if !hi.is_ascii() {
                            return Err(PatternError::NonAsciiClass { glob: glob.into() });
                        }
                        if hi < lo {
                            return Err(PatternError::BadRange {
                                glob: glob.into(),
                                from: lo as char,
                                to: hi as char,
                            });
                        }
                        j += 2;
                    }
                    items.push((lo, hi));
                }
                toks.push(GlobTok::Class(negated, items));
                i = j;
            }
            c => {
                toks.push(GlobTok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

fn push_byte(re: &mut String, c: u8) {
    if c.is_ascii_alphanumeric() || c == b'_' {
        re.push(c as char);
    } else {
        re.push_str(&format!("\\x{c:02X}"));
    }
}

/// Translates a glob to an anchored, byte-oriented regex in which each
/// wildcard is a capture group.
fn glob_to_regex(toks: &[GlobTok]) -> String {
    let mut re = String::from("(?s-u)^");
    for t in toks {
        match t {
            GlobTok::Lit(c) => push_byte(&mut re, *c),
            GlobTok::Star => re.push_str("(.*?)"),
            GlobTok::One => re.push_str("(.)"),
            GlobTok::Class(neg, items) => {
                re.push_str(if *neg { "([^" } else { "([" });
                for &(lo, hi) in items {
                    push_byte(&mut re, lo);
                    if hi != lo {
                        re.push('-');
                        push_byte(&mut re, hi);
                    }
                }
                re.push_str("])");
            }
        }
    }
    re.push('$');
    re
}

/// A compiled pattern: a fast path for the common glob shapes, a regex
/// otherwise.
#[derive(Clone, Debug)]
pub(crate) enum ByteMatcher {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    PrefixSuffix(Box<[u8]>, Box<[u8]>),
    /// A regex and a literal prefix every match starts with (maybe empty),
    /// checked first to reject most strings without running the regex.
    Regex(Box<[u8]>, Regex),
}

impl ByteMatcher {
    #[inline]
    pub(crate) fn is_match(&self, s: &[u8]) -> bool {
        match self {
            ByteMatcher::Any => true,
            ByteMatcher::Exact(e) => s == &e[..],
            ByteMatcher::Prefix(p) => s.starts_with(p),
            ByteMatcher::Suffix(x) => s.ends_with(x),
            ByteMatcher::PrefixSuffix(p, x) => {
                s.len() >= p.len() + x.len() && s.starts_with(p) && s.ends_with(x)
            }
            ByteMatcher::Regex(p, r) => s.starts_with(p) && r.is_match(s),
        }
    }
}

/// Facts about a pattern used by the checker and the compiler.
#[derive(Clone, Debug)]
pub(crate) struct Analyzed {
    pub(crate) matcher: ByteMatcher,
    /// Source of the regex with captures: the translated glob (anchored, one
    /// group per wildcard) or the user's regex. Compiled on demand by
    /// [`Analyzed::capture_regex`]: only key templates need it.
    regex_src: String,
    case_insensitive: bool,
    /// Number of capture groups, not counting group 0.
    pub(crate) captures: usize,
    /// Named groups (regexes only).
    pub(crate) names: Vec<String>,
    /// Bytes every matching string starts with (may be empty).
    pub(crate) literal_prefix: Vec<u8>,
    /// For globs: their shape, for the shadowing check.
    pub(crate) glob: Option<GlobShape>,
}

impl Analyzed {
    /// The regex whose groups a key template refers to.
    pub(crate) fn capture_regex(&self) -> Result<CompiledRegex, PatternError> {
        if let ByteMatcher::Regex(_, r) = &self.matcher {
            if r.as_str() == self.regex_src {
                return Ok(CompiledRegex(r.clone()));
            }
        }
        RegexBuilder::new(&self.regex_src)
            .case_insensitive(self.case_insensitive)
            .build()
            .map(CompiledRegex)
            .map_err(|e| regex_error(&self.regex_src, e))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GlobShape {
    pub(crate) prefix: Vec<u8>,
    pub(crate) suffix: Vec<u8>,
    pub(crate) exact: bool,
    /// `LIT*` or `*` (one star, at the end).
    pub(crate) prefix_star: bool,
    /// `*LIT`.
    pub(crate) star_suffix: bool,
}

fn regex_error(body: &str, e: regex::Error) -> PatternError {
    let reason = match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .map(|l| l.trim_start_matches("error:").trim().to_string())
            .unwrap_or(s),
        other => other.to_string(),
    };
    PatternError::Regex {
        body: body.into(),
        reason,
    }
}

/// The literal bytes every match of a regex starts with, found
/// conservatively: only `^` followed by plain characters (or escaped
/// punctuation), without alternation anywhere and without the `i` flag.
pub(crate) fn regex_literal_prefix(body: &str, case_insensitive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(rest) = body.strip_prefix('^') else {
        return out;
    };
    if case_insensitive || body.contains('|') {
        return out;
    }
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let lit = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => e,
                _ => break,
            },
            '.' | '[' | ']' | '(' | ')' | '{' | '}' | '|' | '?' | '*' | '+' | '^' | '$' => break,
            c => c,
        };
        let mut buf = [0u8; 4];
        let enc = lit.encode_utf8(&mut buf).as_bytes();
        match chars.peek() {
            Some('?' | '*' | '{') => break,
            Some('+') => {
                out.extend_from_slice(enc);
                break;
            }
            _ => out.extend_from_slice(enc),
        }
    }
    out
}

pub(crate) fn analyze(src: &PatternSrc) -> Result<Analyzed, PatternError> {
    match src {
        PatternSrc::Glob(glob) => {
            let toks = tokenize(glob)?;
            let regex_src = glob_to_regex(&toks);
            let captures = toks
                .iter()
                .filter(|t| !matches!(t, GlobTok::Lit(_)))
                .count();
            let lits = |it: &mut dyn Iterator<Item = &GlobTok>| -> Vec<u8> {
                it.map_while(|t| match t {
                    GlobTok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect()
            };
            let prefix = lits(&mut toks.iter());
            let mut suffix = lits(&mut toks.iter().rev());
            suffix.reverse();
            let exact = captures == 0;
            let stars = toks.iter().filter(|t| **t == GlobTok::Star).count();
            let prefix_star = captures == 1 && toks.last() == Some(&GlobTok::Star);
            let star_suffix = captures == 1 && toks.first() == Some(&GlobTok::Star);
            let matcher = if exact {
                ByteMatcher::Exact(prefix.clone().into())
            } else if captures == 1 && stars == 1 && toks.len() == 1 {
                ByteMatcher::Any
            } else if prefix_star {
                ByteMatcher::Prefix(prefix.clone().into())
            } else if star_suffix {
                ByteMatcher::Suffix(suffix.clone().into())
            } else if captures == 1 && stars == 1 {
                ByteMatcher::PrefixSuffix(prefix.clone().into(), suffix.clone().into())
            } else {
                let re = Regex::new(&regex_src).map_err(|e| regex_error(&regex_src, e))?;
                ByteMatcher::Regex(prefix.clone().into(), re)
            };
            Ok(Analyzed {
                matcher,
                regex_src,
                case_insensitive: false,
                captures,
                names: Vec::new(),
                literal_prefix: prefix.clone(),
                glob: Some(GlobShape {
                    prefix,
                    suffix,
                    exact,
                    prefix_star,
                    star_suffix,
                }),
            })
        }
        PatternSrc::Regex {
            body,
            case_insensitive,
        } => {
            let regex = RegexBuilder::new(body)
                .case_insensitive(*case_insensitive)
                .build()
                .map_err(|e| regex_error(body, e))?;
            let captures = regex.captures_len().saturating_sub(1);
            let names = regex.capture_names().flatten().map(String::from).collect();
            let literal_prefix = regex_literal_prefix(body, *case_insensitive);
            Ok(Analyzed {
                matcher: ByteMatcher::Regex(literal_prefix.clone().into(), regex),
                regex_src: body.clone(),
                case_insensitive: *case_insensitive,
                captures,
                names,
                literal_prefix,
                glob: None,
            })
        }
    }
}

/// True when every string `b` matches is provably also matched by `a`
/// (conservative: false means "could not prove it").
pub(crate) fn covers(a_src: &PatternSrc, a: &Analyzed, b_src: &PatternSrc, b: &Analyzed) -> bool {
    if a_src == b_src {
        return true;
    }
    let Some(ga) = &a.glob else { return false };
    if matches!(a.matcher, ByteMatcher::Any) {
        return true;
    }
    let Some(gb) = &b.glob else { return false };
    if ga.exact {
        return gb.exact && ga.prefix == gb.prefix;
    }
    if ga.prefix_star {
        return gb.prefix.starts_with(&ga.prefix);
    }
    if ga.star_suffix {
        return gb.suffix.ends_with(&ga.suffix);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> Analyzed {
        match analyze(&PatternSrc::Glob(s.into())) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn glob_shapes() {
        assert!(matches!(glob("abc").matcher, ByteMatcher::Exact(_)));
        assert!(matches!(glob("*").matcher, ByteMatcher::Any));
        assert!(matches!(glob("a:*").matcher, ByteMatcher::Prefix(_)));
        assert!(matches!(glob("*:a").matcher, ByteMatcher::Suffix(_)));
        assert!(matches!(glob("a*b").matcher, ByteMatcher::PrefixSuffix(..)));
        assert!(matches!(glob("a?b*").matcher, ByteMatcher::Regex(..)));
        assert!(!glob("ab*ba").matcher.is_match(b"aba"));
        assert!(glob("ab*ba").matcher.is_match(b"abba"));
    }

    #[test]
    fn glob_regex_and_captures() {
        let g = glob("u:[a-c]?:*\\*");
        assert_eq!(g.captures, 3);
        assert!(g.matcher.is_match(b"u:bx:zz*"));
        assert!(!g.matcher.is_match(b"u:dx:zz*"));
        assert!(!g.matcher.is_match(b"u:bx:zz"));
        let n = glob("[^a]");
        assert!(n.matcher.is_match(b"b"));
        assert!(!n.matcher.is_match(b"a"));
        assert!(glob("caf\u{e9}:*")
            .matcher
            .is_match("caf\u{e9}:1".as_bytes()));
        assert!(glob("x?").matcher.is_match(b"x\xff"));
    }

    #[test]
    fn glob_errors() {
        assert!(matches!(
            analyze(&PatternSrc::Glob("a[bc".into())),
            Err(PatternError::UnclosedClass { .. })
        ));
        assert!(matches!(
            analyze(&PatternSrc::Glob("a\\".into())),
            Err(PatternError::TrailingEscape { .. })
        ));
        assert!(matches!(
            analyze(&PatternSrc::Glob("[z-a]".into())),
            Err(PatternError::BadRange { .. })
        ));
    }

    #[test]
    fn regex_prefixes() {
        let p = |s: &str| String::from_utf8(regex_literal_prefix(s, false)).unwrap_or_default();
        assert_eq!(p("^tmp:"), "tmp:");
        assert_eq!(p("^log1:[0-9]+$"), "log1:");
        assert_eq!(p("^ab?c"), "a");
        assert_eq!(p("^ab+c"), "ab");
        assert_eq!(p("^a\\.b"), "a.b");
        assert_eq!(p("^a\\db"), "a");
        assert_eq!(p("^a|b"), "");
        assert_eq!(p("tmp"), "");
        assert_eq!(regex_literal_prefix("^abc", true), b"");
    }

    #[test]
    fn coverage() {
        let p = |s: &str| (PatternSrc::Glob(s.into()), glob(s));
        let (sa, a) = p("session:*");
        let (sb, b) = p("session:admin:*");
        let (sc, c) = p("sess*");
        assert!(covers(&sa, &a, &sb, &b));
        assert!(!covers(&sb, &b, &sa, &a));
        assert!(covers(&sc, &c, &sa, &a));
        let (sx, x) = p("session:7");
        assert!(covers(&sa, &a, &sx, &x));
    }
}
