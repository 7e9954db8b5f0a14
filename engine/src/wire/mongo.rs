//! The Mongo write description: one BSON document naming the write and its
//! parts, as in the MongoDB CRUD specification.
//!
//! ```text
//! { op: "insert_one",  document: {..} }
//! { op: "insert_many", documents: [ {..}, .. ] }
//! { op: "update_one" | "update_many", filter: {..}, update: {..} | [ {..}, .. ], upsert: bool? }
//! { op: "replace_one", filter: {..}, replacement: {..}, upsert: bool? }
//! { op: "delete_one" | "delete_many", filter: {..} }
//! { op: "drop" }
//! ```
//! Unknown fields are refused, so a typo (`upsret`) is an error, not a
//! silently different write.

use bson::{doc, Bson, Document, RawArray, RawBsonRef, RawDocument};

use crate::op::{MongoUpdate, MongoWrite};

/// Why a write description could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MongoDecodeError {
    #[error("bad BSON: {0}")]
    Bson(String),
    #[error("bad BSON: document length {declared} does not match the {actual} bytes given")]
    Length { declared: u64, actual: usize },
    #[error("bad Mongo write: {0}")]
    Shape(String),
    #[error("bad BSON: documents and arrays nested deeper than {max} levels")]
    TooDeep { max: usize },
}

/// Decodes a write description from exactly `bytes`.
pub fn decode_write(bytes: &[u8]) -> Result<MongoWrite, MongoDecodeError> {
    let shape = read(bytes)?;
    shape.build()
}

/// Checks a write description exactly as [`decode_write`] does (the same
/// descriptions accepted, the same errors) without building it: the BSON is
/// walked in place, nothing is allocated.
pub fn check_write(bytes: &[u8]) -> Result<(), MongoDecodeError> {
    read(bytes).map(drop)
}

/// Validates the whole document, then reads its shape.
fn read(bytes: &[u8]) -> Result<Shape<'_>, MongoDecodeError> {
    if bytes.len() < 5 {
        return Err(MongoDecodeError::Bson(format!(
            "{} bytes is shorter than the smallest document (5)",
            bytes.len()
        )));
    }
    let declared = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
    if declared != bytes.len() as u64 {
        return Err(MongoDecodeError::Length {
            declared,
            actual: bytes.len(),
        });
    }
    let raw = RawDocument::from_bytes(bytes).map_err(bson_error)?;
    // Every value, at every depth, as converting to a `Document` would.
    walk_document(raw, 1)?;
    Shape::read(raw)
}

/// Documents and arrays nested deeper than this, the write description
/// counted, are refused. MongoDB stores at most 100 levels; the description
/// adds two (`documents` and its array). Without a limit, a frame of a few
/// hundred kilobytes nested a hundred thousand deep would overflow the
/// stack of whoever reads it (the proxy, the server, a client library).
pub const MAX_DEPTH: usize = 128;

fn bson_error(e: bson::error::Error) -> MongoDecodeError {
    MongoDecodeError::Bson(e.to_string())
}

/// Reads every element of `doc` (at nesting level `depth`) and of the
/// documents and arrays in it.
fn walk_document(doc: &RawDocument, depth: usize) -> Result<(), MongoDecodeError> {
    if depth > MAX_DEPTH {
        return Err(MongoDecodeError::TooDeep { max: MAX_DEPTH });
    }
    for element in doc {
        walk_value(element.map_err(bson_error)?.1, depth)?;
    }
    Ok(())
}

fn walk_value(value: RawBsonRef<'_>, depth: usize) -> Result<(), MongoDecodeError> {
    match value {
        RawBsonRef::Document(d) => walk_document(d, depth + 1),
        RawBsonRef::Array(a) => {
            if depth + 1 > MAX_DEPTH {
                return Err(MongoDecodeError::TooDeep { max: MAX_DEPTH });
            }
            for item in a {
                walk_value(item.map_err(bson_error)?, depth + 1)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => walk_document(c.scope, depth + 1),
        _ => Ok(()),
    }
}

/// A valid write description's parts, still in the bytes it came in.
struct Shape<'a> {
    op: &'a str,
    /// The op's fields, by [`Field`] index: the last value of each (a
    /// repeated key keeps its last value, as a `Document` would).
    fields: [Option<RawBsonRef<'a>>; FIELDS.len()],
}

/// The fields a write description may have besides `op`.
const FIELDS: [&str; 6] = [
    "document",
    "documents",
    "filter",
    "update",
    "replacement",
    "upsert",
];

#[derive(Clone, Copy)]
enum Field {
    Document = 0,
    Documents = 1,
    Filter = 2,
    Update = 3,
    Replacement = 4,
    Upsert = 5,
}

impl<'a> Shape<'a> {
    /// Reads `op` and the fields its write takes; refuses a missing or
    /// mistyped part, an unknown op and any other field, in that order.
    fn read(raw: &'a RawDocument) -> Result<Self, MongoDecodeError> {
        // The last `op`, as a `Document` keeps it.
        let mut op = None;
        for element in raw {
            let (key, value) = element.map_err(bson_error)?;
            if key.as_str() == "op" {
                op = Some(value);
            }
        }
        let op = match op {
            Some(RawBsonRef::String(s)) => s,
            Some(other) => {
                return Err(shape(format!(
                    "`op` must be a string, not {:?}",
                    other.element_type()
                )))
            }
            None => return Err(shape("missing `op`".into())),
        };
        let takes: &[Field] = match op {
            "insert_one" => &[Field::Document],
            "insert_many" => &[Field::Documents],
            "update_one" | "update_many" => &[Field::Filter, Field::Update, Field::Upsert],
            "replace_one" => &[Field::Filter, Field::Replacement, Field::Upsert],
            "delete_one" | "delete_many" => &[Field::Filter],
            "drop" => &[],
            other => {
                // Its fields are not read: the op is the error.
                return Err(shape(format!(
                    "unknown op `{other}` (expected insert_one, insert_many, update_one, update_many, replace_one, delete_one, delete_many or drop)"
                )));
            }
        };
        let mut fields = [None; FIELDS.len()];
        let mut extra = None;
        for element in raw {
            let (key, value) = element.map_err(bson_error)?;
            let key = key.as_str();
            match takes.iter().find(|f| FIELDS[**f as usize] == key) {
                Some(f) => fields[*f as usize] = Some(value),
                None if key == "op" => {}
                None => {
                    extra.get_or_insert(key);
                }
            }
        }
        let shape_ = Shape { op, fields };
        // The parts' types, in the order `build` takes them.
        for f in takes {
            shape_.check(*f)?;
        }
        if let Some(extra) = extra {
            return Err(shape(format!("unknown field `{extra}` in a {op} write")));
        }
        Ok(shape_)
    }

    fn get(&self, f: Field) -> Option<RawBsonRef<'a>> {
        self.fields[f as usize]
    }

    /// Whether field `f` has a value of its type.
    fn check(&self, f: Field) -> Result<(), MongoDecodeError> {
        let key = FIELDS[f as usize];
        match (f, self.get(f)) {
            (Field::Upsert, None | Some(RawBsonRef::Null | RawBsonRef::Boolean(_))) => Ok(()),
            (Field::Upsert, Some(other)) => Err(shape(format!(
                "`upsert` must be a boolean, not {:?}",
                other.element_type()
            ))),
            (_, None) => Err(shape(format!("missing `{key}`"))),
            (Field::Update, Some(RawBsonRef::Document(_))) => Ok(()),
            (Field::Update, Some(RawBsonRef::Array(items))) => check_docs(key, items).map(drop),
            (Field::Update, Some(other)) => Err(shape(format!(
                "`update` must be a document or an array, not {:?}",
                other.element_type()
            ))),
            (Field::Documents, Some(RawBsonRef::Array(items))) => {
                if check_docs(key, items)? == 0 {
                    return Err(shape("`documents` of insert_many is empty".into()));
                }
                Ok(())
            }
            (Field::Documents, Some(other)) => Err(shape(format!(
                "`{key}` must be an array, not {:?}",
                other.element_type()
            ))),
            (_, Some(RawBsonRef::Document(_))) => Ok(()),
            (_, Some(other)) => Err(shape(format!(
                "`{key}` must be a document, not {:?}",
                other.element_type()
            ))),
        }
    }

    /// The write, once [`Shape::read`] accepted it.
    fn build(&self) -> Result<MongoWrite, MongoDecodeError> {
        let doc = |f: Field| match self.get(f) {
            Some(RawBsonRef::Document(d)) => Document::try_from(d).map_err(bson_error),
            _ => Err(shape(format!("missing `{}`", FIELDS[f as usize]))),
        };
        let docs = |f: Field| match self.get(f) {
            Some(RawBsonRef::Array(items)) => items
                .into_iter()
                .map(|item| match item.map_err(bson_error)? {
                    RawBsonRef::Document(d) => Document::try_from(d).map_err(bson_error),
                    _ => Err(shape(format!(
                        "`{}` holds a non-document",
                        FIELDS[f as usize]
                    ))),
                })
                .collect::<Result<Vec<_>, _>>(),
            _ => Err(shape(format!("missing `{}`", FIELDS[f as usize]))),
        };
        let upsert = matches!(self.get(Field::Upsert), Some(RawBsonRef::Boolean(true)));
        let update = || match self.get(Field::Update) {
            Some(RawBsonRef::Array(_)) => docs(Field::Update).map(MongoUpdate::Pipeline),
            _ => doc(Field::Update).map(MongoUpdate::Document),
        };
        Ok(match self.op {
            "insert_one" => MongoWrite::InsertOne {
                document: doc(Field::Document)?,
            },
            "insert_many" => MongoWrite::InsertMany {
                documents: docs(Field::Documents)?,
            },
            "update_one" => MongoWrite::UpdateOne {
                filter: doc(Field::Filter)?,
                update: update()?,
                upsert,
            },
            "update_many" => MongoWrite::UpdateMany {
                filter: doc(Field::Filter)?,
                update: update()?,
                upsert,
            },
            "replace_one" => MongoWrite::ReplaceOne {
                filter: doc(Field::Filter)?,
                replacement: doc(Field::Replacement)?,
                upsert,
            },
            "delete_one" => MongoWrite::DeleteOne {
                filter: doc(Field::Filter)?,
            },
            "delete_many" => MongoWrite::DeleteMany {
                filter: doc(Field::Filter)?,
            },
            _ => MongoWrite::Drop,
        })
    }
}

/// Checks that every item of array `key` is a document; returns how many.
fn check_docs(key: &str, items: &RawArray) -> Result<usize, MongoDecodeError> {
    let mut n = 0;
    for (i, item) in items.into_iter().enumerate() {
        match item.map_err(bson_error)? {
            RawBsonRef::Document(_) => n += 1,
            other => {
                return Err(shape(format!(
                    "`{key}[{i}]` must be a document, not {:?}",
                    other.element_type()
                )))
            }
        }
    }
    Ok(n)
}

/// Encodes a write description (the inverse of [`decode_write`]).
pub fn encode_write(write: &MongoWrite) -> Vec<u8> {
    let doc = to_document(write);
    // Encoding a Document built from valid parts cannot fail except for
    // documents over the BSON size limit, which the frame limit refuses later.
    doc.to_vec().unwrap_or_default()
}

/// The write description as a document.
pub fn to_document(write: &MongoWrite) -> Document {
    let mut out = doc! { "op": write.name() };
    match write {
        MongoWrite::InsertOne { document } => {
            out.insert("document", document.clone());
        }
        MongoWrite::InsertMany { documents } => {
            out.insert(
                "documents",
                documents
                    .iter()
                    .cloned()
                    .map(Bson::Document)
                    .collect::<Vec<_>>(),
            );
        }
        MongoWrite::UpdateOne {
            filter,
            update,
            upsert,
        }
        | MongoWrite::UpdateMany {
            filter,
            update,
            upsert,
        } => {
            out.insert("filter", filter.clone());
            out.insert("update", update.to_bson());
            out.insert("upsert", *upsert);
        }
        MongoWrite::ReplaceOne {
            filter,
            replacement,
            upsert,
        } => {
            out.insert("filter", filter.clone());
            out.insert("replacement", replacement.clone());
            out.insert("upsert", *upsert);
        }
        MongoWrite::DeleteOne { filter } | MongoWrite::DeleteMany { filter } => {
            out.insert("filter", filter.clone());
        }
        MongoWrite::Drop => {}
    }
    out
}

fn shape(msg: String) -> MongoDecodeError {
    MongoDecodeError::Shape(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document with keys in the order given, repeats included (`doc!`
    /// would keep one of each).
    fn raw(kvs: &[(&str, Bson)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in kvs {
            let one = doc! { *k: v.clone() }.to_vec().expect("encodable");
            body.extend_from_slice(&one[4..one.len() - 1]);
        }
        let mut out = u32::try_from(body.len() + 5)
            .expect("small")
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(&body);
        out.push(0);
        out
    }

    fn decoded(kvs: &[(&str, Bson)]) -> Result<MongoWrite, MongoDecodeError> {
        let bytes = raw(kvs);
        let got = decode_write(&bytes);
        // The check agrees with the decoder, error for error.
        assert_eq!(check_write(&bytes), got.clone().map(drop), "{kvs:?}");
        got
    }

    fn shape_error(kvs: &[(&str, Bson)]) -> String {
        match decoded(kvs) {
            Err(MongoDecodeError::Shape(why)) => why,
            other => panic!("{kvs:?}: {other:?}"),
        }
    }

    #[test]
    fn every_write_round_trips() {
        let f = doc! { "_id": 1 };
        let writes = [
            MongoWrite::InsertOne {
                document: doc! { "a": [1, { "b": "c" }] },
            },
            MongoWrite::InsertMany {
                documents: vec![doc! { "_id": 1 }, doc! {}],
            },
            MongoWrite::UpdateOne {
                filter: f.clone(),
                update: MongoUpdate::Document(doc! { "$set": { "n": 1 } }),
                upsert: true,
            },
            MongoWrite::UpdateMany {
                filter: f.clone(),
                update: MongoUpdate::Pipeline(vec![doc! { "$set": { "m": "$n" } }]),
                upsert: false,
            },
            MongoWrite::ReplaceOne {
                filter: f.clone(),
                replacement: doc! { "n": 2 },
                upsert: false,
            },
            MongoWrite::DeleteOne { filter: f.clone() },
            MongoWrite::DeleteMany { filter: f },
            MongoWrite::Drop,
        ];
        for w in writes {
            let bytes = encode_write(&w);
            assert_eq!(check_write(&bytes), Ok(()));
            assert_eq!(decode_write(&bytes), Ok(w));
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_a_document_would() {
        let got = decoded(&[
            ("op", "drop".into()),
            ("filter", doc! { "a": 1 }.into()),
            ("op", "delete_one".into()),
            ("filter", doc! { "b": 2 }.into()),
        ]);
        assert_eq!(
            got,
            Ok(MongoWrite::DeleteOne {
                filter: doc! { "b": 2 }
            })
        );
        // The first, mistyped `upsert` is replaced by the second.
        let got = decoded(&[
            ("op", "delete_one".into()),
            ("upsert", 1.into()),
            ("op", "update_one".into()),
            ("filter", doc! {}.into()),
            ("update", doc! {}.into()),
            ("upsert", Bson::Null),
        ]);
        assert!(matches!(
            got,
            Ok(MongoWrite::UpdateOne { upsert: false, .. })
        ));
    }

    #[test]
    fn shape_errors_come_in_the_decoders_order() {
        // The op first, then its parts in order, then unknown fields.
        assert_eq!(shape_error(&[("x", 1.into())]), "missing `op`");
        assert_eq!(
            shape_error(&[("op", 1.into())]),
            "`op` must be a string, not Int32"
        );
        assert!(shape_error(&[("op", "upsert_one".into()), ("x", 1.into())])
            .starts_with("unknown op `upsert_one`"));
        assert_eq!(
            shape_error(&[
                ("x", 1.into()),
                ("update", 2.into()),
                ("op", "update_one".into())
            ]),
            "missing `filter`"
        );
        assert_eq!(
            shape_error(&[
                ("op", "update_one".into()),
                ("filter", doc! {}.into()),
                ("update", 2.into()),
            ]),
            "`update` must be a document or an array, not Int32"
        );
        assert_eq!(
            shape_error(&[
                ("op", "update_many".into()),
                ("filter", doc! {}.into()),
                ("update", Bson::Array(vec![doc! {}.into(), 3.into()])),
            ]),
            "`update[1]` must be a document, not Int32"
        );
        assert_eq!(
            shape_error(&[
                ("op", "replace_one".into()),
                ("filter", doc! {}.into()),
                ("replacement", doc! {}.into()),
                ("upsert", "yes".into()),
            ]),
            "`upsert` must be a boolean, not String"
        );
        assert_eq!(
            shape_error(&[
                ("op", "insert_many".into()),
                ("documents", Bson::Array(vec![]))
            ]),
            "`documents` of insert_many is empty"
        );
        assert_eq!(
            shape_error(&[("op", "insert_many".into()), ("documents", doc! {}.into())]),
            "`documents` must be an array, not EmbeddedDocument"
        );
        // A field another write takes is unknown to this one.
        assert_eq!(
            shape_error(&[
                ("op", "insert_one".into()),
                ("filter", doc! {}.into()),
                ("document", doc! {}.into()),
                ("upsret", true.into()),
            ]),
            "unknown field `filter` in a insert_one write"
        );
        assert_eq!(
            shape_error(&[("op", "drop".into()), ("documents", 1.into())]),
            "unknown field `documents` in a drop write"
        );
    }

    /// `{op: "insert_one", document: {a: {a: … {} … }}}`, `levels` deep
    /// in all, built inside out.
    fn nested(levels: usize) -> Vec<u8> {
        // `{a: …}` around `{}`, `wraps` times: each wrap adds 8 bytes (its
        // length, the element's type and key, its trailing 0).
        let wraps = levels.saturating_sub(2);
        let mut inner = Vec::with_capacity(8 * wraps + 5);
        for j in (1..=wraps).rev() {
            let len = u32::try_from(5 + 8 * j).expect("small");
            inner.extend_from_slice(&len.to_le_bytes());
            inner.extend_from_slice(b"\x03a\0");
        }
        inner.extend_from_slice(&doc! {}.to_vec().expect("encodable"));
        inner.resize(inner.len() + wraps, 0);
        let mut body = doc! { "op": "insert_one" }.to_vec().expect("encodable");
        body.pop();
        let mut out = Vec::new();
        let len = u32::try_from(body.len() - 4 + 1 + 9 + inner.len() + 1 + 4).expect("small");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&body[4..]);
        out.extend_from_slice(b"\x03document\0");
        out.extend_from_slice(&inner);
        out.push(0);
        out
    }

    #[test]
    fn nesting_is_refused_past_the_limit_without_exhausting_the_stack() {
        let ok = nested(MAX_DEPTH);
        assert_eq!(check_write(&ok), Ok(()));
        assert!(matches!(
            decode_write(&ok),
            Ok(MongoWrite::InsertOne { .. })
        ));
        let too_deep = nested(MAX_DEPTH + 1);
        let refused = Err(MongoDecodeError::TooDeep { max: MAX_DEPTH });
        assert_eq!(check_write(&too_deep), refused);
        // A hostile frame: 100,000 levels (800 kB) on a small stack.
        let hostile = nested(100_000);
        let on_small_stack = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || (check_write(&hostile), decode_write(&hostile).map(drop)))
            .expect("thread");
        let (checked, decoded) = on_small_stack.join().expect("no stack overflow");
        assert_eq!(checked, refused);
        assert_eq!(decoded, refused);
    }

    #[test]
    fn bad_bson_anywhere_is_refused_before_the_shape() {
        let mut bytes = raw(&[
            ("op", "nope".into()),
            ("x", doc! { "deep": ["ok", "bad"] }.into()),
        ]);
        // The last string's bytes: "bad" becomes invalid UTF-8.
        let at = bytes.len() - 7;
        assert_eq!(&bytes[at..at + 3], b"bad");
        bytes[at] = 0xff;
        assert!(matches!(
            decode_write(&bytes),
            Err(MongoDecodeError::Bson(_))
        ));
        assert_eq!(check_write(&bytes), decode_write(&bytes).map(drop));
    }
}
