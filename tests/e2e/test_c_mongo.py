"""The C library's Mongo writes, built with libbson and by hand, end to end."""

from __future__ import annotations

import subprocess

from conftest import REQUIRE_ALL, ROOT, compile_c, default_rules, wait_for

import pytest


def build(example: str, out, extra: list[str]) -> str:
    return str(compile_c(ROOT / "bindings/c/examples" / example, out / example.removesuffix(".c"), *extra))


def libbson_flags() -> list[str]:
    out = subprocess.run(["pkg-config", "--cflags", "--libs", "libbson-1.0"], capture_output=True, text=True)
    if out.returncode != 0:
        if REQUIRE_ALL:
            raise AssertionError("libbson-dev is required (SYNCS_REQUIRE_ALL=1)")
        pytest.skip("libbson-dev not installed")
    return out.stdout.split()


def run(exe: str, socket_path: str):
    subprocess.run([exe, socket_path], check=True, timeout=30)


def test_libbson_example(syncs_factory, redis_target, mongo_target, tmp_path):
    people = mongo_target.client()["libbson_db"]["people"]
    people.insert_many([{"_id": 10, "tmp": True}, {"_id": 11, "tmp": True}, {"_id": 12, "tmp": False}])
    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    run(build("mongo_libbson.c", tmp_path, libbson_flags()), s.socket)
    wait_for(lambda: people.find_one({"_id": 2}), interval=0.25, what="the upsert")
    wait_for(lambda: people.count_documents({"tmp": True}) == 0, interval=0.25, what="delete_many")
    ada = people.find_one({"_id": 1})
    assert ada["name"] == "Ada" and ada["born"] == 1815 and ada["visits"] == 5000000000 and ada["score"] == 9.5
    assert ada["at"].year == 2025
    assert people.find_one({"_id": 2}) == {"_id": 2, "name": "Grace", "n": 1}
    assert people.find_one({"_id": 12}) == {"_id": 12, "tmp": False}


def test_hand_built_bson_example(syncs_factory, redis_target, mongo_target, tmp_path):
    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    src = (ROOT / "bindings/c/examples/mongo_raw_bson.c").read_text()
    db, coll = _namespace(src)
    run(build("mongo_raw_bson.c", tmp_path, []), s.socket)
    target = mongo_target.client()[db][coll]
    wait_for(lambda: target.find_one({"name": "Ada"}), interval=0.25, what="insert from raw BSON")
    assert target.find_one({"name": "Ada"})["n"] == 42
    assert s.dead_letters() == []


def _namespace(src: str) -> tuple[str, str]:
    """The db and collection the raw example writes to."""
    import re

    m = re.search(r'intc_mongo_insert_one\(cli,\s*"([^"]+)",\s*"([^"]+)"', src)
    assert m, "mongo_raw_bson.c calls intc_mongo_insert_one with literal names"
    return m.group(1), m.group(2)
