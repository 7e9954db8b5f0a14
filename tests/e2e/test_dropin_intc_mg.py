"""The original ``intc_mg`` names, unchanged, end to end into FerretDB:
``mg_insert(data)``, ``mg_insert_many(data)``, ``mg_delete_many(cond)``,
``mg_udpate(cond, new_kv, iine)`` (sic, and ``mg_update`` beside it),
``mg_update_many(cond, new_kv, iine)`` with ``new_kv`` without operators
meaning ``$set``, and ``mg_drop()``, which the shipped rules drop (it is
destructive) and a rule that names it applies. Old code's
``except ValueError`` still catches a bad argument."""

from __future__ import annotations

import pytest

from conftest import default_rules, wait_for

DB, COLL = "legacy", "users"


@pytest.fixture
def legacy(syncs_factory, mongo_target, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    coll = mongo_target.client()[DB][COLL]
    return s, intc.IncClient(), coll


def test_original_names_with_their_positional_arguments(legacy):
    from intc_mg import mg_delete_many, mg_insert, mg_insert_many, mg_udpate, mg_update, mg_update_many

    s, ic, coll = legacy
    ic.mongo_exec(s.socket, DB, COLL, mg_insert({"_id": 1, "name": "ada", "n": 1}))
    ic.mongo_exec(s.socket, DB, COLL, mg_insert_many([{"_id": 2, "grp": "x", "n": 2},
                                                      {"_id": 3, "grp": "x", "n": 3},
                                                      {"_id": 4, "grp": "y", "n": 4}]))
    # new_kv without operators: set these fields, keep the others.
    ic.mongo_exec(s.socket, DB, COLL, mg_udpate({"_id": 1}, {"name": "Ada"}, False))
    ic.mongo_exec(s.socket, DB, COLL, mg_update({"_id": 1}, {"$inc": {"n": 10}}, False))
    # iine: insert if not exists.
    ic.mongo_exec(s.socket, DB, COLL, mg_udpate({"_id": 5}, {"n": 5}, True))
    ic.mongo_exec(s.socket, DB, COLL, mg_update_many({"grp": "x"}, {"seen": True}, False))
    ic.mongo_exec(s.socket, DB, COLL, mg_update_many({"grp": "z"}, {"made": True}, True))
    ic.mongo_exec(s.socket, DB, COLL, mg_delete_many({"grp": "y"}))
    ic.mongo_exec(s.socket, DB, COLL, mg_insert({"_id": "done"}))
    wait_for(lambda: coll.find_one({"_id": "done"}), interval=0.25, what="the last write")
    docs = {d["_id"]: d for d in coll.find({"_id": {"$ne": "done"}})}
    made = [d for d in docs.values() if d.get("made")]
    assert docs[1] == {"_id": 1, "name": "Ada", "n": 11}
    assert docs[2] == {"_id": 2, "grp": "x", "n": 2, "seen": True}
    assert docs[3] == {"_id": 3, "grp": "x", "n": 3, "seen": True}
    assert docs[5] == {"_id": 5, "n": 5}
    assert len(made) == 1 and made[0]["grp"] == "z", docs
    assert 4 not in docs
    assert s.dead_letters() == []


def test_a_bad_argument_is_a_value_error(legacy):
    from intc_mg import mg_insert, mg_udpate

    with pytest.raises(ValueError):
        mg_insert(["not", "a", "document"])
    with pytest.raises(ValueError):
        mg_udpate({"_id": 1}, {"a": 1}, "yes")


def test_mg_drop_is_dropped_by_default_and_applied_where_a_rule_names_it(syncs_factory, mongo_target,
                                                                          redis_target):
    import intc
    from intc_mg import mg_drop, mg_insert

    ic = intc.IncClient()
    client = mongo_target.client()
    for name in ("kept", "gone"):
        client[DB][name].insert_one({"_id": 1})
    # The shipped rules: a drop is never routed by a default.
    s = syncs_factory(default_rules(redis_target.url, mongo_target.url))
    ic.mongo_exec(s.socket, DB, "kept", mg_drop())
    ic.mongo_exec(s.socket, DB, "kept", mg_insert({"_id": "after"}))
    wait_for(lambda: client[DB]["kept"].find_one({"_id": "after"}), what="the write after the drop")
    assert client[DB]["kept"].find_one({"_id": 1}) == {"_id": 1}
    assert s.server_metric('syncs_server_ops_dropped_total{rule="default",reason="dangerous"}') == 1
    s.stop()

    # A rule that names `op drop` applies it.
    rules = default_rules(redis_target.url, mongo_target.url) + (
        f'\nrule drops: mongo db "{DB}" coll "gone" op drop -> local_mongo\n')
    s = syncs_factory(rules)
    ic.mongo_exec(s.socket, DB, "gone", mg_drop())
    wait_for(lambda: "gone" not in client[DB].list_collection_names(), what="the collection dropped")
    assert "kept" in client[DB].list_collection_names()
    assert s.dead_letters() == []
