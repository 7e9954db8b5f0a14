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

use bson::{doc, Bson, Document, RawDocument};

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
}

/// Decodes a write description from exactly `bytes`.
pub fn decode_write(bytes: &[u8]) -> Result<MongoWrite, MongoDecodeError> {
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
    let raw = RawDocument::from_bytes(bytes).map_err(|e| MongoDecodeError::Bson(e.to_string()))?;
    let doc = Document::try_from(raw).map_err(|e| MongoDecodeError::Bson(e.to_string()))?;
    from_document(doc)
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

/// Reads a write description from a decoded document.
pub fn from_document(mut doc: Document) -> Result<MongoWrite, MongoDecodeError> {
    let op = match doc.remove("op") {
        Some(Bson::String(s)) => s,
        Some(other) => {
            return Err(shape(format!(
                "`op` must be a string, not {:?}",
                other.element_type()
            )))
        }
        None => return Err(shape("missing `op`".into())),
    };
    let write = match op.as_str() {
        "insert_one" => MongoWrite::InsertOne {
            document: take_doc(&mut doc, "document")?,
        },
        "insert_many" => {
            let documents = take_docs(&mut doc, "documents")?;
            if documents.is_empty() {
                return Err(shape("`documents` of insert_many is empty".into()));
            }
            MongoWrite::InsertMany { documents }
        }
        "update_one" | "update_many" => {
            let filter = take_doc(&mut doc, "filter")?;
            let update = match doc.remove("update") {
                Some(Bson::Document(d)) => MongoUpdate::Document(d),
                Some(Bson::Array(items)) => MongoUpdate::Pipeline(docs_from_array("update", items)?),
                Some(other) => {
                    return Err(shape(format!(
                        "`update` must be a document or an array, not {:?}",
                        other.element_type()
                    )))
                }
                None => return Err(shape("missing `update`".into())),
            };
            let upsert = take_upsert(&mut doc)?;
            if op == "update_one" {
                MongoWrite::UpdateOne { filter, update, upsert }
            } else {
                MongoWrite::UpdateMany { filter, update, upsert }
            }
        }
        "replace_one" => MongoWrite::ReplaceOne {
            filter: take_doc(&mut doc, "filter")?,
            replacement: take_doc(&mut doc, "replacement")?,
            upsert: take_upsert(&mut doc)?,
        },
        "delete_one" => MongoWrite::DeleteOne {
            filter: take_doc(&mut doc, "filter")?,
        },
        "delete_many" => MongoWrite::DeleteMany {
            filter: take_doc(&mut doc, "filter")?,
        },
        "drop" => MongoWrite::Drop,
        other => {
            return Err(shape(format!(
                "unknown op `{other}` (expected insert_one, insert_many, update_one, update_many, replace_one, delete_one, delete_many or drop)"
            )))
        }
    };
    if let Some(extra) = doc.keys().next() {
        return Err(shape(format!("unknown field `{extra}` in a {op} write")));
    }
    Ok(write)
}

fn shape(msg: String) -> MongoDecodeError {
    MongoDecodeError::Shape(msg)
}

fn take_doc(doc: &mut Document, key: &str) -> Result<Document, MongoDecodeError> {
    match doc.remove(key) {
        Some(Bson::Document(d)) => Ok(d),
        Some(other) => Err(shape(format!(
            "`{key}` must be a document, not {:?}",
            other.element_type()
        ))),
        None => Err(shape(format!("missing `{key}`"))),
    }
}

fn take_docs(doc: &mut Document, key: &str) -> Result<Vec<Document>, MongoDecodeError> {
    match doc.remove(key) {
        Some(Bson::Array(items)) => docs_from_array(key, items),
        Some(other) => Err(shape(format!(
            "`{key}` must be an array, not {:?}",
            other.element_type()
        ))),
        None => Err(shape(format!("missing `{key}`"))),
    }
}

fn docs_from_array(key: &str, items: Vec<Bson>) -> Result<Vec<Document>, MongoDecodeError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, b)| match b {
            Bson::Document(d) => Ok(d),
            other => Err(shape(format!(
                "`{key}[{i}]` must be a document, not {:?}",
                other.element_type()
            ))),
        })
        .collect()
}

fn take_upsert(doc: &mut Document) -> Result<bool, MongoDecodeError> {
    match doc.remove("upsert") {
        None | Some(Bson::Null) => Ok(false),
        Some(Bson::Boolean(b)) => Ok(b),
        Some(other) => Err(shape(format!(
            "`upsert` must be a boolean, not {:?}",
            other.element_type()
        ))),
    }
}
