"""Redis commands: argument conversion, transactions, refused commands."""

import os
import re

import intc
import pytest

from proxy_stub import StubProxy
from test_seed import resp


class Text(str):
    pass


class Blob(bytes):
    pass


# A tuple's str and bytes arguments are read in place, a list's are held:
# both give the same bytes (and more than eight arguments, as here, too).
@pytest.mark.parametrize("container", [tuple, list])
def test_argument_types_are_converted_like_redis_clients(proxy, client, container):
    client.redis_one(
        proxy.path,
        6380,
        15,
        container(("SET", "中文键", b"\x00\xff\r\n", bytearray(b"ba"), memoryview(b"mv"), 42, -7,
                   2**70, 1.5, 1e20, 0.1, float("inf"), Text("sub"), Blob(b"b\x00"), "", b"")),
    )
    (payload,) = proxy.wait_frames(1)
    assert payload == b"6380,15\x01" + resp(
        b"SET", "中文键".encode(), b"\x00\xff\r\n", b"ba", b"mv", b"42", b"-7",
        b"1180591620717411303424", b"1.5", b"1e+20", b"0.1", b"inf", b"sub", b"b\x00", b"", b"",
    )


def test_lists_work_as_well_as_tuples(proxy, client):
    client.redis_one(proxy.path, 6379, 0, ["incr", "n"])
    client.redis_many(proxy.path, 6379, 0, [["incr", "n"], ("incr", "m")])
    assert proxy.wait_frames(2) == [
        b"6379,0\x01" + resp(b"incr", b"n"),
        b"6379,0\x01" + resp(b"incr", b"n") + resp(b"incr", b"m"),
    ]


def test_a_transaction_is_one_frame(proxy, client):
    cmds = (("set", "k", "v"), ("expire", "k", 60), ("lpush", "l", "a", "b", "c"))
    client.redis_many(proxy.path, 6379, 3, cmds)
    (payload,) = proxy.wait_frames(1)
    assert payload == b"6379,3\x01" + resp(b"set", b"k", b"v") + resp(
        b"expire", b"k", b"60"
    ) + resp(b"lpush", b"l", b"a", b"b", b"c")


@pytest.mark.parametrize(
    "cmd, message",
    [
        (("set", "a", None), "cmd[2] has type NoneType"),
        (("set", "a", True), "cmd[2] is a bool"),
        (("set", "a", {"x": 1}), "cmd[2] has type dict"),
        ((), "cmd is empty"),
        ("set a b", "cmd must be a tuple or a list, not str"),
        (("set", "a", "\udcff"), "cmd[2] is a str that cannot be encoded as UTF-8"),
        (["set", "a", "\udcff"], "cmd[2] is a str that cannot be encoded as UTF-8"),
        (["set", None], "cmd[1] has type NoneType"),
        (("MULTI",), "command MULTI is not allowed"),
        (("select", 2), "command SELECT is not allowed"),
    ],
)
def test_bad_commands_raise_invalid_operation(proxy, client, cmd, message):
    with pytest.raises(intc.InvalidOperation, match=re.escape(message)) as info:
        client.redis_one(proxy.path, 6379, 0, cmd)
    assert isinstance(info.value, intc.IntcError) and isinstance(info.value, ValueError)
    client.redis_one(proxy.path, 6379, 0, ("ping",))
    assert proxy.wait_frames(1) == [b"6379,0\x01" + resp(b"ping")], "nothing else was sent"


@pytest.mark.parametrize(
    "cmds, message",
    [
        ((), "cmds is empty"),
        ((("set", "a", "1"), ()), r"cmds\[1\] is empty"),
        ((("set", "a", "1"), "incr b"), r"cmds\[1\] must be a tuple or a list"),
        ([("set", "a", "1"), ["set", "b", None]], r"cmds\[1\]\[2\] has type NoneType"),
        ([("set", "a", "1"), ("set", "\udcff", "1")], r"cmds\[1\]\[1\] is a str that cannot be encoded"),
        ("set a 1", "cmds must be a tuple or a list, not str"),
        ((("watch", "a"), ("set", "a", "1")), "command WATCH is not allowed"),
        ((("set", "a", "1"), ("exec",)), "command EXEC is not allowed"),
    ],
)
def test_bad_transactions_raise_invalid_operation(proxy, client, cmds, message):
    with pytest.raises(intc.InvalidOperation, match=message):
        client.redis_many(proxy.path, 6379, 0, cmds)


@pytest.mark.parametrize(
    "port, db, message",
    [
        (70000, 0, "port must be an int in 0..=65535"),
        (-1, 0, "port must be an int"),
        ("6379", 0, "port must be an int in 0..=65535, not str"),
        (6379, -1, "db must be an int"),
        (6379, 2**32, "db must be an int"),
        (6379, 1.0, "db must be an int in 0..=4294967295, not float"),
        (True, 0, "port must be an int"),
    ],
)
def test_bad_ports_and_dbs(proxy, client, port, db, message):
    with pytest.raises(intc.InvalidOperation, match=message):
        client.redis_one(proxy.path, port, db, ("ping",))


def test_a_bad_path_type(client):
    with pytest.raises(intc.InvalidOperation, match="path must be a str or os.PathLike"):
        client.redis_one(42, 6379, 0, ("ping",))


def test_paths_may_be_pathlike(proxy, client):
    import pathlib

    client.redis_one(pathlib.Path(proxy.path), 6379, 0, ("ping",))
    assert proxy.wait_frames(1) == [b"6379,0\x01" + resp(b"ping")]


def test_a_path_that_is_not_utf8(tmp_path, client):
    # A str path from os.fsdecode (surrogateescape) names the same bytes.
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/us\xff")
    proxy = StubProxy(path)
    try:
        client.redis_one(path, 6379, 0, ("ping",))
        assert proxy.wait_frames(1) == [b"6379,0\x01" + resp(b"ping")]
        assert os.listdir(os.fsencode(str(tmp_path))) == [b"us\xff"]
    finally:
        proxy.close()


def test_frames_above_the_limit_raise_frame_too_large(proxy, client):
    big = b"x" * intc.MAX_FRAME
    with pytest.raises(intc.FrameTooLarge, match="exceeds the limit of 67108864 bytes") as info:
        client.redis_one(proxy.path, 6379, 0, ("set", "big", big))
    assert isinstance(info.value, ValueError)
    assert client.stats(proxy.path)["frames"] == 0
