//! The original system's Mongo frame: compact JSON naming the namespace and
//! the write, its values in MongoDB Extended JSON.
//!
//! ```text
//! {"db": "<db>", "tab": "<collection>", "o": {"mtd": "<method>", "v": <value>}}
//! ```
//!
//! | `mtd`     | `v`                                        | write         |
//! |-----------|--------------------------------------------|---------------|
//! | `insert`  | a document                                 | `InsertOne`   |
//! | `insertm` | a non-empty array of documents             | `InsertMany`  |
//! | `del`     | a filter                                   | `DeleteMany`  |
//! | `update`  | `{"c": filter, "new": update, "iine": bool}` | `UpdateOne`   |
//! | `updatem` | the same                                   | `UpdateMany`  |
//! | `drop`    | anything, or nothing (ignored)             | `Drop`        |
//!
//! `new` whose first key is an update operator (`$set`, `$inc`, ...) is
//! used as is; without operators it means "set these fields", `{"$set":
//! new}`. `iine` ("insert if not exists") is upsert; left out or `null`, it
//! is false. Any other field, at any level of the envelope, is refused.
//!
//! Values are canonical or relaxed Extended JSON: an object holding
//! `$oid`, `$date`, `$numberLong`, `$numberDecimal`, `$binary`, ... is the
//! BSON value it names, read by the bson crate; the legacy binary form
//! `{"$binary": "<base64>", "$type": "<hex>"}` too. Other `$` keys (`$set`,
//! `$in`, `$regex` with `$options`) stay documents, which is what they mean
//! in updates and filters. Plain integers are int32 when they fit, else
//! int64; numbers with a fraction or an exponent are doubles.
//!
//! Field order is kept, as libbson's reader (the original server's) kept
//! it: JSON is read into an ordered tree, not a `serde_json::Map` (which
//! sorts its keys unless serde_json's `preserve_order` is on for the whole
//! build).

use std::fmt;

use bson::{doc, Bson, Document};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::op::{MongoOp, MongoUpdate, MongoWrite};

/// First byte of an original-format Mongo payload.
pub const JSON_MARK: u8 = b'{';

/// Keys that make an object an Extended JSON value rather than a document
/// (the bson crate's list).
const EXTJSON_KEYS: [&str; 17] = [
    "$oid",
    "$symbol",
    "$regularExpression",
    "$numberInt",
    "$numberLong",
    "$numberDouble",
    "$numberDecimal",
    "$binary",
    "$uuid",
    "$code",
    "$scope",
    "$timestamp",
    "$date",
    "$minKey",
    "$maxKey",
    "$dbPointer",
    "$undefined",
];

/// Decodes an original-format Mongo payload (starting with `{`). The error
/// names what is wrong.
pub fn decode_json_write(payload: &[u8]) -> Result<MongoOp, String> {
    let top = serde_json::from_slice::<Json>(payload).map_err(|e| format!("not JSON: {e}"))?;
    let mut top = Fields::of(top, "the frame")?;
    let db = top.name("db")?;
    let coll = top.name("tab")?;
    let mut o = Fields::of(top.take("o")?, "`o`")?;
    top.finish()?;
    let mtd = match o.take("mtd")? {
        Json::String(s) => s,
        other => return Err(format!("`o.mtd` must be a string, not {}", other.kind())),
    };
    let v = o.take_opt("v");
    o.finish()?;
    let need = |v: Option<Json>| v.ok_or_else(|| format!("missing `o.v` (the value of {mtd})"));
    let write = match mtd.as_str() {
        "insert" => MongoWrite::InsertOne {
            document: document("`o.v`", need(v)?)?,
        },
        "insertm" => {
            let documents = match need(v)? {
                Json::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| document(&format!("`o.v[{i}]`"), d))
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(format!(
                        "`o.v` of insertm must be an array of documents, not {}",
                        other.kind()
                    ))
                }
            };
            if documents.is_empty() {
                return Err("`o.v` of insertm is an empty array".into());
            }
            MongoWrite::InsertMany { documents }
        }
        "del" => MongoWrite::DeleteMany {
            filter: document("`o.v`", need(v)?)?,
        },
        "update" | "updatem" => {
            let mut v = Fields::of(need(v)?, "`o.v`")?;
            let filter = document("`o.v.c`", v.take("c")?)?;
            let new = document("`o.v.new`", v.take("new")?)?;
            let upsert = match v.take_opt("iine") {
                None | Some(Json::Null) => false,
                Some(Json::Bool(b)) => b,
                Some(other) => {
                    return Err(format!(
                        "`o.v.iine` must be true or false, not {}",
                        other.kind()
                    ))
                }
            };
            v.finish()?;
            let update = match new.keys().next() {
                None => return Err("`o.v.new` is empty: nothing to update".into()),
                Some(first) if first.starts_with('$') => new,
                Some(_) => doc! { "$set": new },
            };
            let update = MongoUpdate::Document(update);
            if mtd == "update" {
                MongoWrite::UpdateOne {
                    filter,
                    update,
                    upsert,
                }
            } else {
                MongoWrite::UpdateMany {
                    filter,
                    update,
                    upsert,
                }
            }
        }
        "drop" => MongoWrite::Drop,
        other => {
            return Err(format!(
                "unknown `o.mtd` {other:?} (expected insert, insertm, del, update, updatem or drop)"
            ))
        }
    };
    Ok(MongoOp { db, coll, write })
}

/// JSON as read, objects in their order.
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some(field) = map.next_entry::<String, Json>()? {
            fields.push(field);
        }
        Ok(Json::Object(fields))
    }
}

/// The fields of one envelope object (`the frame`, `o`, `o.v` of an
/// update), taken one by one; what is left over is refused.
struct Fields {
    what: &'static str,
    fields: Vec<(String, Json)>,
}

impl Fields {
    fn of(json: Json, what: &'static str) -> Result<Fields, String> {
        let Json::Object(fields) = json else {
            return Err(format!("{what} must be a JSON object, not {}", json.kind()));
        };
        for (i, (key, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("{what} has the key {key:?} twice"));
            }
        }
        Ok(Fields { what, fields })
    }

    fn take_opt(&mut self, key: &str) -> Option<Json> {
        let at = self.fields.iter().position(|(k, _)| k == key)?;
        Some(self.fields.remove(at).1)
    }

    fn take(&mut self, key: &str) -> Result<Json, String> {
        self.take_opt(key)
            .ok_or_else(|| format!("{} has no {key:?}", self.what))
    }

    /// A database or collection name: a non-empty string without NUL.
    fn name(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            Json::String(s) if !s.is_empty() && !s.contains('\0') => Ok(s),
            Json::String(_) => Err(format!("`{key}` is empty or holds a NUL character")),
            other => Err(format!("`{key}` must be a string, not {}", other.kind())),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.fields.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("{} has an unknown key {key:?}", self.what)),
        }
    }
}

/// `json` as a document (Extended JSON read); `what` names it in errors.
fn document(what: &str, json: Json) -> Result<Document, String> {
    let kind = json.kind();
    match to_bson(json).map_err(|e| format!("bad Extended JSON in {what}: {e}"))? {
        Bson::Document(d) => Ok(d),
        other if kind == "an object" => Err(format!(
            "{what} must be a document, not an Extended JSON {:?}",
            other.element_type()
        )),
        _ => Err(format!("{what} must be a document, not {kind}")),
    }
}

fn to_bson(json: Json) -> Result<Bson, String> {
    Ok(match json {
        Json::Null => Bson::Null,
        Json::Bool(b) => Bson::Boolean(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Bson::String(s),
        Json::Array(items) => {
            Bson::Array(items.into_iter().map(to_bson).collect::<Result<_, _>>()?)
        }
        Json::Object(fields)
            if fields
                .iter()
                .any(|(k, _)| EXTJSON_KEYS.contains(&k.as_str())) =>
        {
            extjson(fields)?
        }
        Json::Object(fields) => {
            let mut doc = Document::new();
            for (key, value) in fields {
                if key.contains('\0') {
                    return Err(format!("the key {key:?} holds a NUL character"));
                }
                doc.insert(key, to_bson(value)?);
            }
            Bson::Document(doc)
        }
    })
}

/// One Extended JSON value (`{"$oid": ...}`, ...), read by the bson crate.
fn extjson(fields: Vec<(String, Json)>) -> Result<Bson, String> {
    let mut map: serde_json::Map<String, Value> =
        fields.into_iter().map(|(k, v)| (k, to_value(v))).collect();
    // The legacy binary form (libbson's and pymongo's older JSON writers):
    // {"$binary": "<base64>", "$type": "<hex>"}.
    if map.len() == 2 && map.get("$binary").is_some_and(Value::is_string) {
        if let Some(Value::String(subtype)) = map.remove("$type") {
            let base64 = map.remove("$binary").unwrap_or(Value::Null);
            map.insert(
                "$binary".into(),
                serde_json::json!({ "base64": base64, "subType": subtype }),
            );
        }
    }
    Bson::try_from(Value::Object(map)).map_err(|e| e.to_string())
}

fn to_value(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => Value::Number(n),
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
        Json::Object(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, to_value(v))).collect())
        }
    }
}
