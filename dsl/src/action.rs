//! What a matched rule (or the default) does with an operation: one
//! [`Action`] per target it is routed to.

use std::borrow::Cow;

use crate::pattern::CompiledRegex;
use crate::target::TargetId;
use crate::template::{KeyPiece, KeyTemplate, NsTemplate};

/// Send the operation to one target, possibly rewritten. A rule that fans out
/// to three targets has three actions, in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub target: TargetId,
    pub(crate) db: Option<u32>,
    pub(crate) key: KeyRewrite,
    pub(crate) mongo_db: Option<NsTemplate>,
    pub(crate) mongo_coll: Option<NsTemplate>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KeyRewrite {
    None,
    /// `prefix "copy:"`.
    Prefix(Box<[u8]>),
    /// `key "sess:{1}"`; `patterns` are the rule's key patterns (as anchored
    /// regexes with the captures the template refers to), tried in order.
    Template {
        patterns: Box<[CompiledRegex]>,
        template: KeyTemplate,
    },
}

impl Action {
    pub(crate) fn plain(target: TargetId) -> Self {
        Action {
            target,
            db: None,
            key: KeyRewrite::None,
            mongo_db: None,
            mongo_coll: None,
        }
    }

    /// The Redis db to write to: the one set with `db N`, else `source_db`.
    pub fn redis_db(&self, source_db: u32) -> u32 {
        self.db.unwrap_or(source_db)
    }

    /// The key as written to the target. Borrowed when the action does not
    /// rewrite keys. `source_db` is the db the operation came from, for a
    /// template's `{db}`.
    ///
    /// For a template with captures, `key` is matched again against the rule's
    /// key patterns (the first that matches supplies the captures). If none
    /// matches — only possible when called with a key the rule did not match —
    /// the key is returned unchanged.
    pub fn rewrite_key<'k>(&self, key: &'k [u8], source_db: u32) -> Cow<'k, [u8]> {
        match &self.key {
            KeyRewrite::None => Cow::Borrowed(key),
            KeyRewrite::Prefix(p) => {
                let mut out = Vec::with_capacity(p.len() + key.len());
                out.extend_from_slice(p);
                out.extend_from_slice(key);
                Cow::Owned(out)
            }
            KeyRewrite::Template { patterns, template } => {
                if template.whole_key_only() {
                    return Cow::Owned(expand_whole(template, key, source_db));
                }
                for re in patterns.iter() {
                    if let Some(caps) = re.regex().captures(key) {
                        let mut out = Vec::with_capacity(key.len() + 16);
                        for p in template.pieces.iter() {
                            match p {
                                KeyPiece::Lit(l) => out.extend_from_slice(l),
                                KeyPiece::Group(0) => out.extend_from_slice(key),
                                KeyPiece::Group(n) => {
                                    if let Some(m) = caps.get(*n) {
                                        out.extend_from_slice(m.as_bytes());
                                    }
                                }
                                KeyPiece::Named(name) => {
                                    if let Some(m) = caps.name(name) {
                                        out.extend_from_slice(m.as_bytes());
                                    }
                                }
                                KeyPiece::Db => push_decimal(&mut out, source_db),
                            }
                        }
                        return Cow::Owned(out);
                    }
                }
                Cow::Borrowed(key)
            }
        }
    }

    /// The Mongo namespace written to: `(db, coll)` after the action's
    /// `db "..."` / `coll "..."` templates (`{db}` and `{coll}` stand for the
    /// source names); unchanged parts are copied.
    pub fn mongo_namespace(&self, db: &str, coll: &str) -> (String, String) {
        let new_db = match &self.mongo_db {
            Some(t) => t.expand(db, coll),
            None => db.to_string(),
        };
        let new_coll = match &self.mongo_coll {
            Some(t) => t.expand(db, coll),
            None => coll.to_string(),
        };
        (new_db, new_coll)
    }

    /// True if [`Action::rewrite_key`] may change a key.
    pub fn rewrites_key(&self) -> bool {
        !matches!(self.key, KeyRewrite::None)
    }

    /// True if [`Action::mongo_namespace`] may change a namespace.
    pub fn renames_namespace(&self) -> bool {
        self.mongo_db.is_some() || self.mongo_coll.is_some()
    }
}

fn expand_whole(template: &KeyTemplate, key: &[u8], source_db: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 16);
    for p in template.pieces.iter() {
        match p {
            KeyPiece::Lit(l) => out.extend_from_slice(l),
            KeyPiece::Group(_) | KeyPiece::Named(_) => out.extend_from_slice(key),
            KeyPiece::Db => push_decimal(&mut out, source_db),
        }
    }
    out
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 15, 4_294_967_295] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
