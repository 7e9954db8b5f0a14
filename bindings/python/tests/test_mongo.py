"""intc_mg write descriptions and IncClient.mongo_exec."""

import datetime
import uuid

import bson
import intc
import pytest
from bson import SON, Binary, Decimal128, Int64, ObjectId, Regex
from bson.raw_bson import RawBSONDocument
from intc_mg import (
    mg_delete_many,
    mg_delete_one,
    mg_insert_many,
    mg_insert_one,
    mg_replace_one,
    mg_update_many,
    mg_update_one,
)

OID = ObjectId("65a1b2c3d4e5f60718293a4b")
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
RICH = {
    "_id": OID,
    "when": WHEN,
    "price": Decimal128("12.34"),
    "blob": Binary(b"\x00\x01", 0x80),
    "big": Int64(2**40),
    "uid": UID,
    "re": Regex("^a", "i"),
    "nested": {"list": [1, "two", 3.0, None, True]},
    "text": "中文你好",
}


def split(payload: bytes):
    """(db, coll, write description) of a Mongo payload."""
    assert payload[0] == 0x02
    db, coll, doc = payload[1:].split(b"\x00", 2)
    return db.decode(), coll.decode(), doc


def decode(doc: bytes):
    return bson.decode(doc, codec_options=bson.CodecOptions(tz_aware=True, uuid_representation=4))


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: mg_insert_one(RICH), {"op": "insert_one", "document": RICH}),
        (
            lambda: mg_insert_many([{"a": 1}, SON([("b", 2), ("a", 1)])]),
            {"op": "insert_many", "documents": [{"a": 1}, {"b": 2, "a": 1}]},
        ),
        (
            lambda: mg_insert_many(({"n": i} for i in range(3))),
            {"op": "insert_many", "documents": [{"n": 0}, {"n": 1}, {"n": 2}]},
        ),
        (
            lambda: mg_update_one({"_id": OID}, {"$set": {"when": WHEN}}),
            {"op": "update_one", "filter": {"_id": OID}, "update": {"$set": {"when": WHEN}},
             "upsert": False},
        ),
        (
            lambda: mg_update_many({"k": 1}, [{"$set": {"n": {"$add": ["$n", 1]}}}], upsert=True),
            {"op": "update_many", "filter": {"k": 1},
             "update": [{"$set": {"n": {"$add": ["$n", 1]}}}], "upsert": True},
        ),
        (
            lambda: mg_replace_one({"_id": 1}, {"_id": 1, "v": Decimal128("1")}, upsert=True),
            {"op": "replace_one", "filter": {"_id": 1}, "replacement": {"_id": 1, "v": Decimal128("1")},
             "upsert": True},
        ),
        (lambda: mg_delete_one({"uid": UID}), {"op": "delete_one", "filter": {"uid": UID}}),
        (
            lambda: mg_delete_many(RawBSONDocument(bson.encode({"key": "value"}))),
            {"op": "delete_many", "filter": {"key": "value"}},
        ),
    ],
)
def test_every_write_arrives_as_built(proxy, client, make, expected):
    op = make()
    assert isinstance(op, bytes)
    assert decode(op) == expected
    client.mongo_exec(proxy.path, "app", "users", op)
    (payload,) = proxy.wait_frames(1)
    db, coll, doc = split(payload)
    assert (db, coll) == ("app", "users")
    assert doc == op, "the description is forwarded byte for byte"


def test_key_order_of_son_is_kept(proxy, client):
    op = mg_insert_one(SON([("z", 1), ("a", 2), ("m", 3)]))
    assert list(bson.decode(op)["document"].keys()) == ["z", "a", "m"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: mg_insert_one([("a", 1)]), "doc must be a document"),
        (lambda: mg_insert_many([]), "at least one document"),
        (lambda: mg_insert_many({"a": 1}), "docs must be a list"),
        (lambda: mg_insert_many([{"a": 1}, 2]), r"docs\[1\] must be a document"),
        (lambda: mg_update_one({"a": 1}, {"b": 2}), "update operators"),
        (lambda: mg_update_one({"a": 1}, {}), "update is empty"),
        (lambda: mg_update_many({"a": 1}, []), "pipeline needs at least one stage"),
        (lambda: mg_update_many({"a": 1}, "x"), "update must be a document"),
        (lambda: mg_update_one({"a": 1}, {"$set": {"b": 1}}, upsert=1), "upsert must be a bool"),
        (lambda: mg_replace_one({"a": 1}, {"$set": {"b": 2}}), "may not hold update operators"),
        (lambda: mg_delete_one(None), "filter must be a document"),
        (lambda: mg_delete_many({"x": object()}), "cannot encode the delete_many write"),
    ],
)
def test_bad_writes_raise_invalid_operation(make, message):
    with pytest.raises(intc.InvalidOperation, match=message):
        make()


@pytest.mark.parametrize(
    "op, message",
    [
        (bson.encode({"op": "delete_many", "filter": {}, "upsret": True}), "unknown field `upsret`"),
        (bson.encode({"op": "drop", "filter": {}}), "unknown field `filter` in a drop write"),
        (bson.encode({"op": "truncate"}), "unknown op `truncate`"),
        (bson.encode({"op": "insert_many", "documents": []}), "is empty"),
        (mg_delete_many({"a": 1})[:-1], "bad BSON"),
        (b"", "bad BSON"),
        ({"op": "delete_many"}, "op must be the bytes of a write description"),
        ("delete", "op must be the bytes of a write description"),
    ],
)
def test_mongo_exec_checks_the_description(proxy, client, op, message):
    with pytest.raises(intc.InvalidOperation, match=message):
        client.mongo_exec(proxy.path, "app", "users", op)


def test_mongo_exec_accepts_bytearray(proxy, client):
    op = bytearray(mg_delete_one({"a": 1}))
    client.mongo_exec(proxy.path, "app", "users", op)
    (payload,) = proxy.wait_frames(1)
    assert split(payload)[2] == bytes(op)


@pytest.mark.parametrize(
    "db, coll, message",
    [("", "c", "db name is empty"), ("d", "a\x00b", "collection name"), (1, "c", "db must be a str")],
)
def test_mongo_exec_checks_names(proxy, client, db, coll, message):
    with pytest.raises(intc.InvalidOperation, match=message):
        client.mongo_exec(proxy.path, db, coll, mg_delete_one({"a": 1}))
