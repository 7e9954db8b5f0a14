"""Mongo writes end to end: intc_mg → proxy → server → FerretDB (real MongoDB wire)."""

from __future__ import annotations

import datetime

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions

from conftest import Ferret, default_rules, wait_for

DB, COLL = "shop", "orders"


@pytest.fixture
def mongo_path(syncs_factory, mongo_target, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    client = mongo_target.client()
    # Keep int32/int64 apart when reading back.
    coll = client.get_database(DB, codec_options=CodecOptions(tz_aware=True))[COLL]
    return s, intc.IncClient(), coll


def send(s, ic, op, coll=COLL, db=DB):
    ic.mongo_exec(s.socket, db, coll, op)


def test_every_operation(mongo_path):
    from intc_mg import (mg_delete_many, mg_delete_one, mg_insert_many, mg_insert_one, mg_replace_one,
                         mg_update_many, mg_update_one)

    s, ic, coll = mongo_path
    send(s, ic, mg_insert_one({"_id": 1, "n": 1, "tags": ["a"], "gone": True}))
    send(s, ic, mg_insert_many([{"_id": 2, "n": 2, "grp": "x"}, {"_id": 3, "n": 3, "grp": "x"},
                                {"_id": 4, "n": 4, "grp": "y"}]))
    send(s, ic, mg_update_one({"_id": 1}, {"$set": {"name": "one"}, "$inc": {"n": 10},
                                           "$unset": {"gone": ""}, "$push": {"tags": "b"}}))
    send(s, ic, mg_update_many({"grp": "x"}, {"$inc": {"n": 100}}))
    send(s, ic, mg_update_one({"_id": 5}, {"$set": {"n": 5}}, upsert=True))
    send(s, ic, mg_replace_one({"_id": 4}, {"replaced": True}))
    send(s, ic, mg_replace_one({"_id": 6}, {"n": 6}, upsert=True))
    send(s, ic, mg_delete_one({"grp": "x", "n": 102}))
    send(s, ic, mg_delete_many({"n": {"$in": [5, 6, 103]}}))
    send(s, ic, mg_insert_one({"_id": "done"}))
    wait_for(lambda: coll.find_one({"_id": "done"}), interval=0.25, what="last write")
    docs = {d["_id"]: d for d in coll.find({"_id": {"$ne": "done"}})}
    assert docs[1] == {"_id": 1, "n": 11, "tags": ["a", "b"], "name": "one"}
    assert docs[4] == {"_id": 4, "replaced": True}
    # 2 (n 102 after update_many) went by delete_one; 3 (n 103) and the
    # upserted 5 and 6 by delete_many.
    assert sorted(docs) == [1, 4], docs
    assert s.dead_letters() == []


def test_bson_types_survive(mongo_path):
    from intc_mg import mg_insert_one

    s, ic, coll = mongo_path
    oid = ObjectId()
    when = datetime.datetime(2026, 11, 25, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc)
    # Decimal128 is covered by the two tests below: FerretDB v1 cannot store it.
    doc = {
        "_id": oid,
        "when": when,
        "blob": b"\x00\x01\xff",  # binary subtype 0 (pymongo reads it back as bytes)
        "nested": {"a": {"b": [1, {"c": "中文"}]}},
        "i32": 7,
        "i64": Int64(7),
        "dbl": 7.0,
        "big": 2**40,
    }
    send(s, ic, mg_insert_one(doc))
    got = wait_for(lambda: coll.find_one({"_id": oid}), interval=0.25, what="document")
    assert got == doc
    assert type(got["i32"]) is int and type(got["i64"]) is Int64 and type(got["dbl"]) is float
    assert isinstance(got["blob"], bytes)


def test_every_bson_type_reaches_a_file_target_exactly(syncs_factory, tmp_path):
    """Decimal128 and friends, end to end, as canonical Extended JSON."""
    import json

    import intc
    from bson import json_util
    from intc_mg import mg_insert_one

    audit = tmp_path / "mongo.jsonl"
    s = syncs_factory(f'target audit = file "{audit}"\ndefault mongo -> audit\ndefault redis -> drop\n')
    doc = {"_id": ObjectId(), "price": Decimal128("1234.5678"), "i32": 7, "i64": Int64(7), "dbl": 7.0,
           "when": datetime.datetime(2026, 11, 25, 1, 2, 3, 4000, tzinfo=datetime.timezone.utc),
           "blob": b"\x00\xff", "uuid": Binary(b"0123456789abcdef", 4), "nested": [{"a": [1, "中文"]}]}
    intc.IncClient().mongo_exec(s.socket, DB, COLL, mg_insert_one(doc))
    line = wait_for(lambda: audit.exists() and audit.read_text().strip(), what="audit line")
    write = json.loads(line)["op"]["write"]
    opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True,
                                 tzinfo=datetime.timezone.utc)
    back = json_util.loads(json.dumps(write["document"]), json_options=opts)
    assert back == doc
    assert write["document"]["price"] == {"$numberDecimal": "1234.5678"}
    assert write["document"]["i32"] == {"$numberInt": "7"} and write["document"]["i64"] == {"$numberLong": "7"}


def test_write_the_target_cannot_store_is_dead_lettered(mongo_path):
    """FerretDB v1 drops the connection on Decimal128; syncs finds that write
    (the target still answers pings), dead-letters it, and goes on."""
    from intc_mg import mg_insert_one

    s, ic, coll = mongo_path
    send(s, ic, mg_insert_one({"_id": "before"}))
    send(s, ic, mg_insert_one({"_id": "poison", "price": Decimal128("1.5")}))
    send(s, ic, mg_insert_one({"_id": "after"}))
    wait_for(lambda: coll.find_one({"_id": "after"}), timeout=30, interval=0.25, what="the write after the poison one")
    assert coll.find_one({"_id": "before"}) == {"_id": "before"}
    dead = s.dead_letters()
    assert len(dead) == 1 and dead[0]["op"]["write"]["document"]["_id"] == "poison", dead
    assert "closed the connection" in dead[0]["reason"]


def test_order_of_mixed_writes_on_one_collection(mongo_path):
    from intc_mg import mg_delete_one, mg_insert_one, mg_update_one

    s, ic, coll = mongo_path
    n = 300
    for i in range(n):
        send(s, ic, mg_insert_one({"_id": i, "v": 0, "log": []}))
        send(s, ic, mg_update_one({"_id": i}, {"$inc": {"v": 1}, "$push": {"log": "u1"}}))
        send(s, ic, mg_update_one({"_id": i}, {"$mul": {"v": 10}, "$push": {"log": "u2"}}))
        if i % 3 == 0:
            send(s, ic, mg_delete_one({"_id": i}))
            send(s, ic, mg_insert_one({"_id": i, "v": -1, "log": ["re"]}))
    send(s, ic, mg_insert_one({"_id": "end"}))
    wait_for(lambda: coll.find_one({"_id": "end"}), timeout=30, interval=0.25, what="last write")
    for d in coll.find({"_id": {"$ne": "end"}}):
        if d["_id"] % 3 == 0:
            assert (d["v"], d["log"]) == (-1, ["re"]), d
        else:
            assert (d["v"], d["log"]) == (10, ["u1", "u2"]), d
    assert coll.count_documents({}) == n + 1


def test_redis_and_mongo_from_one_client_keep_their_order(mongo_path, redis_target):
    from intc_mg import mg_update_one

    s, ic, coll = mongo_path
    for i in range(200):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "events", str(i)))
        send(s, ic, mg_update_one({"_id": "events"}, {"$push": {"seq": i}}, upsert=True))
    r = redis_target.client(0)
    wait_for(lambda: r.llen("events") == 200, timeout=30, what="redis list")

    doc = wait_for(lambda: (d := coll.find_one({"_id": "events"})) and len(d["seq"]) == 200 and d,
                   timeout=30, interval=0.25, what="mongo array")
    assert r.lrange("events", 0, -1) == [str(i).encode() for i in range(200)]
    assert doc["seq"] == list(range(200))


def test_refused_write_is_dead_lettered_and_duplicate_insert_is_counted(mongo_path):
    from intc_mg import mg_insert_one, mg_update_one

    s, ic, coll = mongo_path
    send(s, ic, mg_insert_one({"_id": "dup", "v": 1}))
    send(s, ic, mg_insert_one({"_id": "dup", "v": 2}))  # duplicate key: counted, not fatal
    send(s, ic, mg_update_one({"_id": "dup"}, {"$inc": {"v": "not a number"}}))  # refused by the server
    send(s, ic, mg_insert_one({"_id": "after"}))
    wait_for(lambda: coll.find_one({"_id": "after"}), interval=0.25, what="writes after the errors")
    assert coll.find_one({"_id": "dup"}) == {"_id": "dup", "v": 1}
    dead = wait_for(s.dead_letters, what="dead letter")
    assert len(dead) == 1 and dead[0]["op"]["write"]["op"] == "update_one", dead
    assert dead[0]["target"] == "local_mongo"
    assert s.server_metric('syncs_server_mongo_duplicate_keys_total{target="local_mongo"}') == 1


def test_target_down_is_retried_without_loss(syncs_factory, redis_target, tmp_path):
    import intc
    from intc_mg import mg_insert_one

    ferret = Ferret(tmp_path)
    try:
        s = syncs_factory(default_rules(redis_target.url, ferret.url))
        ic = intc.IncClient()
        port = ferret.port
        ferret.proc.stop()
        for i in range(50):
            ic.mongo_exec(s.socket, DB, "down", mg_insert_one({"_id": i}))
        wait_for(lambda: "retrying" in s.server.text(), timeout=30, what="server retrying")
        ferret.proc.start()  # same port, same SQLite directory
        coll = ferret.client()[DB]["down"]
        wait_for(lambda: coll.count_documents({}) == 50, timeout=30, interval=0.25, what="writes after the target is back")
        assert [d["_id"] for d in coll.find().sort("_id")] == list(range(50))
        assert port == ferret.port
    finally:
        ferret.stop()
