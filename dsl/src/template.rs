//! Templates used by actions: `key "sess:{1}"`, `db "{db}_copy"`,
//! `coll "{coll}_v2"`.
//!
//! `{N}` is capture N of the rule's key pattern (`{0}` is the whole key),
//! `{name}` a named group of a regex key pattern; in a key template `{db}`
//! is the source Redis db number, in a Mongo template `{db}` / `{coll}` the
//! source namespace. `{{` and `}}` stand for literal braces (a Redis hash
//! tag in a key template is written `{{tag}}`).

use std::fmt;

use thiserror::Error;

/// A template split into literal text and references, before it is known
/// what the references may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawPiece {
    Lit(String),
    Ref(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum TemplateError {
    #[error("unclosed `{{` in template (write `{{{{` for a literal brace)")]
    Unclosed,
    #[error("unmatched `}}` in template (write `}}}}` for a literal brace)")]
    Unmatched,
    #[error("empty `{{}}` in template")]
    Empty,
}

/// Splits `text` into pieces. Byte offsets are not kept: templates are
/// short and errors point at the template as a whole.
pub(crate) fn split(text: &str) -> Result<Vec<RawPiece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '}' => return Err(TemplateError::Unmatched),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(TemplateError::Unclosed),
                    }
                }
                let name = name.trim().to_string();
                if name.is_empty() {
                    return Err(TemplateError::Empty);
                }
                if !lit.is_empty() {
                    pieces.push(RawPiece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(RawPiece::Ref(name));
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(RawPiece::Lit(lit));
    }
    Ok(pieces)
}

/// A key template, resolved against the rule's key patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyPiece {
    Lit(Box<[u8]>),
    /// `{0}` (whole key) or `{N}`.
    Group(usize),
    /// `{name}` of a regex pattern.
    Named(Box<str>),
    /// `{db}`: the source db number, in decimal.
    Db,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyTemplate {
    pub(crate) pieces: Box<[KeyPiece]>,
    pub(crate) source: Box<str>,
}

impl KeyTemplate {
    /// True when only literals, `{0}` and `{db}` are used: no pattern
    /// captures are needed to expand it.
    pub(crate) fn whole_key_only(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| matches!(p, KeyPiece::Lit(_) | KeyPiece::Group(0) | KeyPiece::Db))
    }
}

/// A Mongo namespace template: literals, `{db}` and `{coll}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NsPiece {
    Lit(Box<str>),
    Db,
    Coll,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NsTemplate {
    pub(crate) pieces: Box<[NsPiece]>,
}

impl NsTemplate {
    pub(crate) fn expand(&self, db: &str, coll: &str) -> String {
        let mut out = String::new();
        for p in self.pieces.iter() {
            match p {
                NsPiece::Lit(s) => out.push_str(s),
                NsPiece::Db => out.push_str(db),
                NsPiece::Coll => out.push_str(coll),
            }
        }
        out
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_refs() {
        assert_eq!(
            split("sess:{1}:{{x}}").ok(),
            Some(vec![
                RawPiece::Lit("sess:".into()),
                RawPiece::Ref("1".into()),
                RawPiece::Lit(":{x}".into()),
            ])
        );
        assert_eq!(split("a{1"), Err(TemplateError::Unclosed));
        assert_eq!(split("a}"), Err(TemplateError::Unmatched));
        assert_eq!(split("{}"), Err(TemplateError::Empty));
    }
}
