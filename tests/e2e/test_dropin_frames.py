"""The original system's client frames, written byte for byte to the proxy's
unix socket (built here from their layouts, never by syncs' libraries),
reach a real Redis and FerretDB through proxy and server with the shipped
rules (`default_rules(...)`), and through NATS JetStream too.

Redis payload: "<port>,<db>" then a flag byte F; F == 0x01: one RESP
command; F & 0x80: a transaction of n = F & 0x7f commands (modulo 128),
each [u16 LE length][RESP command]. Mongo payload: compact JSON
{"db", "tab", "o": {"mtd", "v"}} with Extended JSON values.
"""

from __future__ import annotations

import datetime
import json
import socket
import struct

import pytest

from conftest import default_rules, frame, resp, wait_for

DB, COLL = "legacy", "users"


# ---------------------------------------------------------------- frames --


def one(port: int, db: int, *args: bytes) -> bytes:
    """F == 0x01: one RESP command."""
    return frame(b"%d,%d\x01" % (port, db) + resp(*args))


def transaction(port: int, db: int, commands: list[tuple[bytes, ...]], flag: int | None = None) -> bytes:
    """F = 0x80 | (n mod 128), then [u16 LE length][RESP command] each."""
    body = b""
    for c in commands:
        r = resp(*c)
        body += struct.pack("<H", len(r)) + r
    f = 0x80 | (len(commands) % 128) if flag is None else flag
    return frame(b"%d,%d" % (port, db) + bytes([f]) + body)


def mongo(mtd: str, v=None, *, db: str = DB, tab: str = COLL, raw_v: str | None = None) -> bytes:
    """The original library's compact JSON; `raw_v` is spliced in as is."""
    o = {"mtd": mtd}
    text = json.dumps({"db": db, "tab": tab, "o": o}, separators=(",", ":"), ensure_ascii=False)
    if raw_v is not None or v is not None:
        value = raw_v if raw_v is not None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)
        text = text[:-2] + ',"v":' + value + "}}"
    return frame(text.encode())


def mongo_bson_drop(db: str, coll: str) -> bytes:
    """The new format (docs/protocol.md 1b) for a drop, as intc_mg.mg_drop()
    encodes it: 0x02 <db> 0x00 <coll> 0x00 then {op: "drop"} (18 bytes)."""
    doc = b"\x12\x00\x00\x00" + b"\x02op\x00" + b"\x05\x00\x00\x00drop\x00" + b"\x00"
    return frame(b"\x02" + db.encode() + b"\x00" + coll.encode() + b"\x00" + doc)


def send(path: str, data: bytes, step: int = 0):
    """One connection; `step` > 0 splits the bytes at awkward places."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        if step:
            for i in range(0, len(data), step):
                c.sendall(data[i:i + step])
        else:
            c.sendall(data)


REFUSED = 'syncs_proxy_frames_refused_total{reason="%s"}'
DROPPED = 'syncs_server_ops_dropped_total{rule="%s",reason="%s"}'


@pytest.fixture
def both(syncs_factory, redis_target, mongo_target):
    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    return s, redis_target, mongo_target.client()[DB][COLL]


# ----------------------------------------------------------------- redis --

def test_redis_one_command_and_transactions_at_db_2_and_12(both):
    s, redis_target, _ = both
    data = (
        one(6379, 1, b"set", b"a", b"bcd0")
        + transaction(6379, 2, [(b"set", b"cool", b"hello0"), (b"set", b"awesome", "中文你好0".encode())])
        + transaction(6379, 12, [(b"set", b"k12", b"v12"), (b"incr", b"n12"), (b"incr", b"n12")])
        + one(6379, 12, b"set", b"single12", b"yes")
        # A transaction of one command.
        + transaction(6379, 3, [(b"rpush", b"l", b"only")])
        # 130 commands: the flag byte says n = 2 (130 mod 128).
        + transaction(6379, 4, [(b"rpush", b"seq", b"%d" % i) for i in range(130)])
        # 128 commands: F == 0x80.
        + transaction(6379, 5, [(b"incr", b"c")] * 128)
        + one(6379, 0, b"set", b"done", b"1")
    )
    send(s.socket, data, step=5)
    r = {db: redis_target.client(db) for db in (0, 1, 2, 3, 4, 5, 12)}
    wait_for(lambda: r[0].get("done"), what="the last frame")
    assert r[1].get("a") == b"bcd0"
    assert r[2].get("cool") == b"hello0"
    assert r[2].get("awesome").decode() == "中文你好0"
    assert r[12].get("k12") == b"v12" and r[12].get("n12") == b"2"
    assert r[12].get("single12") == b"yes"
    assert r[3].lrange("l", 0, -1) == [b"only"]
    assert r[4].lrange("seq", 0, -1) == [b"%d" % i for i in range(130)]
    assert r[5].get("c") == b"128"
    # Nothing of it landed in another db.
    assert r[0].get("a") is None and r[0].get("k12") is None
    wait_for(lambda: s.proxy_metric('syncs_proxy_frames_accepted_total{kind="redis"}') == 8,
             what="every frame counted as redis")
    assert s.dead_letters() == []


def test_bad_transactions_are_refused_whole_and_the_next_frames_read(both):
    s, redis_target, _ = both
    data = (
        one(6379, 0, b"set", b"g1", b"1")
        # 3 commands, n = 2: refused, none of it applied.
        + transaction(6379, 0, [(b"set", b"x1", b"1"), (b"set", b"x2", b"2"), (b"set", b"x3", b"3")], flag=0x82)
        # F == 0x80 with no command.
        + frame(b"6379,0\x80")
        # A length past the end of the payload.
        + frame(b"6379,0\x81\xff\x00" + resp(b"set", b"x4", b"4"))
        # A flag byte that is neither 0x01 nor 0x80 | n.
        + frame(b"6379,0\x05" + resp(b"set", b"x5", b"5"))
        # MULTI inside a transaction.
        + transaction(6379, 0, [(b"multi",), (b"set", b"x6", b"6")])
        + transaction(6379, 0, [(b"set", b"g2", b"2"), (b"set", b"g3", b"3")])
    )
    send(s.socket, data, step=3)
    r = redis_target.client(0)
    wait_for(lambda: r.get("g3"), what="the good frame after the bad ones")
    assert r.get("g1") == b"1" and r.get("g2") == b"2"
    assert all(r.get(f"x{i}") is None for i in range(1, 7))
    wait_for(lambda: s.proxy_metric(REFUSED % "bad_transaction") == 3, what="bad transactions counted")
    assert s.proxy_metric(REFUSED % "redis_header") == 1
    assert s.proxy_metric(REFUSED % "refused_command") == 1
    assert "3 commands, but the flag byte 0x82 announces 2" in s.proxy.text()
    assert s.proxy.alive() and s.server.alive()


# ----------------------------------------------------------------- mongo --

OID = "65a1b2c3d4e5f60718293a4b"


def test_mongo_every_mtd_with_extended_json(both):
    s, _, coll = both
    import bson

    data = (
        mongo("insert", raw_v='{"_id":1,"name":"ada","n":1,"at":{"$date":"2024-01-02T03:04:05Z"},'
                              '"big":{"$numberLong":"5"},"ref":{"$oid":"%s"}}' % OID)
        + mongo("insertm", [{"_id": 2, "grp": "x", "n": 2}, {"_id": 3, "grp": "x", "n": 3},
                            {"_id": 4, "grp": "y", "n": 4}])
        # update with $set (and $inc), then without operators ($set).
        + mongo("update", {"c": {"_id": 1}, "new": {"$set": {"name": "Ada"}, "$inc": {"n": 10}}, "iine": False})
        + mongo("update", {"c": {"_id": 2}, "new": {"label": "two", "n": 20}, "iine": False})
        # iine: insert if not exists (one, and many).
        + mongo("update", {"c": {"_id": 5}, "new": {"n": 5}, "iine": True})
        + mongo("updatem", {"c": {"grp": "x"}, "new": {"seen": True}, "iine": False})
        + mongo("updatem", {"c": {"grp": "z"}, "new": {"made": True}, "iine": True})
        + mongo("del", {"grp": "y"})
        + mongo("insert", raw_v='{"_id":{"$oid":"%s"},"t":{"$date":{"$numberLong":"1700000000000"}}}' % OID)
        + mongo("insert", {"_id": "done"})
    )
    send(s.socket, data, step=11)
    wait_for(lambda: coll.find_one({"_id": "done"}), interval=0.25, what="the last write")
    docs = {d["_id"]: d for d in coll.find({"_id": {"$ne": "done"}})}
    made = [d for d in docs.values() if d.get("made")]
    one_ = docs[1]
    assert (one_["name"], one_["n"]) == ("Ada", 11)
    assert one_["at"] == datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert isinstance(one_["big"], bson.int64.Int64) and one_["big"] == 5
    assert one_["ref"] == bson.ObjectId(OID)
    assert docs[2] == {"_id": 2, "grp": "x", "n": 20, "label": "two", "seen": True}
    assert docs[3] == {"_id": 3, "grp": "x", "n": 3, "seen": True}
    assert docs[5] == {"_id": 5, "n": 5}
    assert len(made) == 1 and made[0]["grp"] == "z", docs
    assert 4 not in docs
    by_oid = docs[bson.ObjectId(OID)]
    assert by_oid["t"] == datetime.datetime.fromtimestamp(1_700_000_000, datetime.timezone.utc).replace(tzinfo=None)
    wait_for(lambda: s.proxy_metric('syncs_proxy_frames_accepted_total{kind="mongo"}') == 10,
             what="every frame counted as mongo")
    assert s.dead_letters() == []


def test_bad_mongo_frames_are_refused_with_a_reason_and_counted(both):
    s, _, coll = both
    data = (
        mongo("insert", {"_id": "g1"})
        + frame(b'{"db":"legacy","tab":"users","o":{"mtd":"insert","v":{}')  # cut short
        + frame(b'{"db":"legacy","tab":"users"}')  # no o
        + mongo("upsert", {"_id": 9})  # unknown mtd
        + mongo("insertm", {"_id": 9})  # v of the wrong type
        + mongo("insert", raw_v='{"_id":{"$oid":"nope"}}')  # bad Extended JSON
        + mongo("insert", {"_id": "g2"})
    )
    send(s.socket, data, step=7)
    wait_for(lambda: coll.find_one({"_id": "g2"}), interval=0.25, what="the good frame after the bad ones")
    assert coll.count_documents({}) == 2
    wait_for(lambda: s.proxy_metric(REFUSED % "bad_json") == 5, what="bad JSON frames counted")
    log = s.proxy.text()
    assert "bad Mongo JSON frame" in log
    assert s.proxy.alive() and s.server.alive()


# ------------------------------------------------------------------ drop --

def test_drop_is_dropped_by_default(both):
    s, _, coll = both
    send(s.socket, mongo("insert", {"_id": 1}) + mongo("drop") + mongo_bson_drop(DB, COLL)
         + mongo("insert", {"_id": 2}))
    wait_for(lambda: coll.find_one({"_id": 2}), interval=0.25, what="the insert after the drops")
    assert coll.count_documents({}) == 2  # both drops were not applied
    wait_for(lambda: s.server_metric(DROPPED % ("default", "dangerous")) == 2, what="drops counted")


def test_drop_where_a_rule_allows_it(syncs_factory, redis_target, mongo_target):
    rules = default_rules(redis_target.url, mongo_target.url)
    rules += '\nrule drops: mongo db "legacy" coll "users", "other", "missing" op drop -> local_mongo\n'
    s = syncs_factory(rules)
    client = mongo_target.client()
    users, other, kept = client[DB][COLL], client[DB]["other"], client["keep"][COLL]
    send(s.socket, mongo("insert", {"_id": 1}) + mongo("insert", {"_id": 1}, tab="other")
         + mongo("insert", {"_id": 1}, db="keep") + mongo("insert", {"_id": "marker"}, db="keep"))
    wait_for(lambda: kept.find_one({"_id": "marker"}), interval=0.25, what="the inserts")
    assert users.count_documents({}) == 1 and other.count_documents({}) == 1
    # The old JSON drop, the new BSON drop, a drop of a collection that is
    # not there (done), and a drop no rule names (not applied).
    send(s.socket, mongo("drop", raw_v='""') + mongo_bson_drop(DB, "other")
         + mongo("drop", tab="missing") + mongo("drop", db="keep")
         + mongo("insert", {"_id": "after"}, db="keep"))
    wait_for(lambda: kept.find_one({"_id": "after"}), interval=0.25, what="the writes after the drops")
    names = client[DB].list_collection_names()
    assert COLL not in names and "other" not in names, names
    assert kept.count_documents({}) == 3
    assert s.server_metric(DROPPED % ("default", "dangerous")) == 1
    assert s.dead_letters() == []
    assert "routes mongo `drop`" in s.server.text()


# ------------------------------------------------------------------ nats --

def test_old_frames_through_nats(tmp_path, redis_target, mongo_target):
    from test_nats import Cluster

    c = Cluster(tmp_path, redis_target.url)
    try:
        c.rules.write_text(default_rules(redis_target.url, mongo_target.url))
        c.server("s1")
        p = c.proxy("p1")
        coll = mongo_target.client()[DB][COLL]
        send(p.socket, transaction(6379, 12, [(b"set", b"n1", b"a"), (b"set", b"n2", b"b")])
             + mongo("update", {"c": {"_id": 1}, "new": {"via": "nats"}, "iine": True}))
        r = redis_target.client(12)
        wait_for(lambda: r.get("n2"), timeout=30, what="the transaction through NATS")
        assert r.get("n1") == b"a"
        wait_for(lambda: coll.find_one({"_id": 1}), timeout=30, interval=0.25, what="the upsert through NATS")
        assert coll.find_one({"_id": 1}) == {"_id": 1, "via": "nats"}
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
