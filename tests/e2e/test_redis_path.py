"""The whole path for Redis: client library → proxy → server → real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, SEED_SOCKET, assert_seed_example_arrived, compile_c, default_rules, frame, resp, wait_for

# The seed's Python example, byte for byte (checked against the seed by
# bindings/python/tests/test_seed.py).
SEED_PY = ROOT / "bindings/python/tests/seed_example.py"



def redis_payload(port: int, db: int, *cmds: tuple[bytes, ...]) -> bytes:
    return b"%d,%d\x01" % (port, db) + b"".join(resp(*c) for c in cmds)


def send_raw(path: str, data: bytes):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(data)


@pytest.fixture
def seed_socket():
    """The seed examples hard-code /tmp/us1."""
    if os.path.exists(SEED_SOCKET):
        os.unlink(SEED_SOCKET)
    yield SEED_SOCKET


def test_seed_python_example_end_to_end(syncs_factory, redis_target, mongo_target, seed_socket):
    coll = mongo_target.client()["mongo_db_name"]["mongo_col_name"]
    coll.insert_many([{"key": "value", "n": 1}, {"key": "value", "n": 2}, {"key": "other"}])
    s = syncs_factory(default_rules(redis_target.url, mongo_target.url), socket_path=seed_socket)
    out = subprocess.run([sys.executable, str(SEED_PY)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert_seed_example_arrived(redis_target, coll)
    assert s.dead_letters() == []


def test_seed_c_example_end_to_end(syncs_factory, redis_target, seed_socket, tmp_path):
    syncs_factory(default_rules(redis_target.url, None), socket_path=seed_socket)
    exe = compile_c(ROOT / "bindings/c/examples/seed.c", tmp_path / "seed")
    subprocess.run([str(exe)], check=True, timeout=30)
    assert wait_for(lambda: redis_target.client(1).get("a"), what="a in db 1") == b"b"


def test_transaction_is_atomic_at_the_target(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(3)
    before = r.info("commandstats").get("cmdstat_exec", {}).get("calls", 0)
    intc.IncClient().redis_many(s.socket, 6379, 3, (("rpush", "l", "1"), ("rpush", "l", "2"), ("incr", "n")))
    wait_for(lambda: r.get("n") == b"1", what="transaction applied")
    assert r.lrange("l", 0, -1) == [b"1", b"2"]
    after = r.info("commandstats").get("cmdstat_exec", {}).get("calls", 0)
    assert after == before + 1, "the transaction must arrive as one MULTI/EXEC"


def test_binary_safe_values_and_types(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    blob = bytes(range(256)) + b"\r\n\x00$3\r\n"
    ic = intc.IncClient()
    ic.redis_one(s.socket, 6379, 0, ("set", b"bin\x00key", blob))
    ic.redis_one(s.socket, 6379, 0, ("set", "int", 42))
    ic.redis_one(s.socket, 6379, 0, ("set", "float", 2.5))
    ic.redis_one(s.socket, 6379, 0, ("set", "zh", "中文你好"))
    r = redis_target.client(0)
    wait_for(lambda: r.get("zh"), what="last write")
    assert r.get(b"bin\x00key") == blob
    assert r.get("int") == b"42"
    assert float(r.get("float")) == 2.5
    assert r.get("zh").decode() == "中文你好"


def test_bad_frames_between_good_ones(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=["--max-frame", "4096"])
    good1 = frame(redis_payload(6379, 0, (b"SET", b"g1", b"1")))
    bad_resp = frame(b"6379,0\x01*2\r\n$3\r\nSET\r\n$99\r\nshort\r\n")
    bad_header = frame(b"6379;0\x01" + resp(b"SET", b"x", b"y"))
    oversize = frame(b"6379,0\x01" + resp(b"SET", b"big", b"x" * 8000))
    good2 = frame(redis_payload(6379, 0, (b"SET", b"g2", b"2")))
    # All on one connection, split at awkward places: the stream must stay in step.
    data = good1 + bad_resp + bad_header + oversize + good2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(s.socket)
        for i in range(0, len(data), 7):
            c.sendall(data[i:i + 7])
    r = redis_target.client(0)
    wait_for(lambda: r.get("g2"), what="the good frame after the bad ones")
    assert r.get("g1") == b"1"
    assert r.get("big") is None and r.get("x") is None
    m = 'syncs_proxy_frames_refused_total{reason="%s"}'
    wait_for(lambda: s.proxy_metric(m % "oversize") == 1, what="oversize counted")
    assert s.proxy_metric(m % "bad_resp") == 1
    assert s.proxy_metric(m % "redis_header") == 1
    assert "frame larger than max_frame" in s.proxy.text()
    assert s.proxy.alive() and s.server.alive()


def test_server_started_after_the_proxy(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None), start_server=False)
    ic = intc.IncClient()
    for i in range(100):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
    r = redis_target.client(0)
    assert r.llen("seq") == 0
    wait_for(lambda: "cannot reach server" in s.proxy.text(), what="proxy retrying")
    s.start_server()
    wait_for(lambda: r.llen("seq") == 100, what="queued writes delivered")
    assert r.lrange("seq", 0, -1) == [str(i).encode() for i in range(100)]


def test_redis_error_reply_is_dead_lettered_not_lost(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    ic = intc.IncClient()
    ic.redis_one(s.socket, 6379, 0, ("rpush", "alist", "x"))
    ic.redis_one(s.socket, 6379, 0, ("incr", "alist"))  # WRONGTYPE
    ic.redis_one(s.socket, 6379, 0, ("set", "after", "ok"))
    r = redis_target.client(0)
    wait_for(lambda: r.get("after"), what="writes after the error")
    dead = wait_for(s.dead_letters, what="dead letter")
    assert len(dead) == 1
    assert "WRONGTYPE" in dead[0]["reason"]
    assert dead[0]["op"]["commands"] == [["incr", "alist"]]
    assert s.server_metric('syncs_server_ops_dead_lettered_total{target="local_redis",reason="refused"}') == 1


def test_file_target_writes_json_lines(syncs_factory, tmp_path):
    import intc

    audit = tmp_path / "audit.jsonl"
    rules = f'target audit = file "{audit}"\ndefault redis -> audit\ndefault mongo -> drop\n'
    s = syncs_factory(rules)
    intc.IncClient().redis_one(s.socket, 6379, 1, ("set", "k", "中文"))
    intc.IncClient().redis_one(s.socket, 6379, 1, ("set", "b", b"\xff\xfe"))
    import json

    lines = wait_for(lambda: audit.exists() and len(audit.read_text().splitlines()) == 2 and audit.read_text().splitlines(),
                     what="two audit lines")
    first, second = (json.loads(l) for l in lines)
    assert first == {"target": "audit", "op": {"kind": "redis", "port": 6379, "db": 1,
                                                "commands": [["set", "k", "中文"]]}}
    assert second["op"]["commands"][0][2] == {"base64": "//4="}
