"""The seed's Python example, unchanged, and the exact bytes it sends."""

import os
import sys

import bson

from conftest import HERE, run_with_private_tmp
from proxy_stub import cut_frames


def resp(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


SEED_FRAMES = [
    b"6379,1\x01" + resp(b"set", b"a", b"bcd0"),
    b"6379,2\x01"
    + resp(b"set", b"cool", b"hello0")
    + resp(b"set", b"awesome", "中文你好0".encode()),
    b"\x02mongo_db_name\x00mongo_col_name\x00"
    + bson.encode({"op": "delete_many", "filter": {"key": "value"}}),
]


def test_the_seed_example_file_is_the_seed():
    readme = os.path.join(HERE, "..", "..", "..", "..", "shared", "seed", "README.en.md")
    with open(os.path.join(HERE, "seed_example.py"), encoding="utf-8") as f:
        example = f.read()
    assert "ic.redis_one(us_path, 6379, 1, (\"set\", \"a\", \"bcd%d\" % i))" in example
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        block = text.split("```python\n", 1)[1].split("```", 1)[0]
        assert example == block


def test_the_seed_example_runs_unchanged_and_sends_the_seed_frames():
    rc, conns, stderr = run_with_private_tmp(
        "/tmp/us1", [sys.executable, os.path.join(HERE, "seed_example.py")]
    )
    assert rc == 0, stderr
    assert len(conns) == 1, "one connection per path and process"
    assert cut_frames(conns[0]) == SEED_FRAMES


def test_the_seed_calls_on_any_path(proxy, client):
    """The same calls as the seed, on a temporary socket (no namespace)."""
    from intc_mg import mg_delete_many

    i = 0
    client.redis_one(proxy.path, 6379, 1, ("set", "a", "bcd%d" % i))
    client.redis_many(
        proxy.path, 6379, 2, (("set", "cool", "hello%d" % i), ("set", "awesome", "中文你好%d" % i))
    )
    client.mongo_exec(proxy.path, "mongo_db_name", "mongo_col_name", mg_delete_many({"key": "value"}))
    assert proxy.wait_frames(3) == SEED_FRAMES
    stats = client.stats(proxy.path)
    assert stats["frames"] == 3
    assert stats["bytes"] == sum(4 + len(f) for f in SEED_FRAMES)
    assert stats["errors"] == 0
