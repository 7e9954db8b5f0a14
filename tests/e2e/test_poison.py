"""Poison records: a frame the proxy accepts but Redis answers with an error
line that is not UTF-8.

Regression tests for a bug that stopped a whole stream for ever: Redis
echoes the command's bytes in some error replies (`ERR unknown command
'\\xff...'`, `ERR unknown subcommand '\\xff'`, `NOGROUP ... '\\xffg'`), the
redis crate could not parse such an error line, so the server took the
target for unavailable and retried the same run without end, holding the
acknowledgement; nothing written after the poison frame ever arrived.

What must happen instead (docs/reliability.md, "The guarantee"): the
refused operation goes to the dead-letter file with a reason that names
Redis' error, its non-UTF-8 bytes shown escaped (Rust's `escape_ascii`
style, `\\xff`), it is counted in `syncs_server_ops_dead_lettered_total`,
and the writes after it arrive.

Rules: one rule sends everything on port 6379 to the test's Redis, written
here rather than taken from rules/default.sync, so that each command really
reaches Redis (an unknown command has no group and a rule without a `cmd`
condition matches it; none of these commands is in `@dangerous`).

Each case first writes `before` and waits for it: if that fails, the
harness (daemons, rules, client library) is at fault, not the poison.
"""

from __future__ import annotations

import base64
import re

import pytest

from conftest import wait_for

TARGET = "t"

RULES = """\
target t = redis "{url}"
rule all_6379: redis port 6379 -> t
default redis -> drop
default mongo -> drop
"""

# A non-UTF-8 byte as the dead-letter reason should show it once the JSON
# line is read back: a backslash, `x`, two hex digits (`\\xff` in the file).
ESCAPED_BYTE = re.compile(r"\\x[0-9a-fA-F]{2}")

# A poison record is not a target outage: an error reply is the record's
# (docs/reliability.md, "One record never stops a stream"), so the server
# logs no "unavailable" line for it. The bug logged one per retry (at
# attempts 1, 2, 4, 8, ...), for ever.
UNAVAILABLE_ALLOWED = 0

DEAD_LETTERED = "syncs_server_ops_dead_lettered_total"


def _arg_json(a):
    """An argument as the dead-letter file writes it (docs/protocol.md §3)."""
    if isinstance(a, str):
        return a
    try:
        return a.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(a).decode()}


def _dead_lettered(s, target: str) -> float:
    """Sum of the dead-letter counter for `target` over whatever other labels
    it carries (stats.rs documents `target` and `reason`; the server sets
    `target` today)."""
    total = 0.0
    for name, value in s._metrics(s.server_metrics).items():
        if name.startswith(DEAD_LETTERED + "{") and f'target="{target}"' in name:
            total += value
    return total


def _unavailable_lines(s) -> list[str]:
    return [l for l in s.server.text().splitlines() if "unavailable" in l]


def _setup_group(r):
    # XADD s * f v; XGROUP CREATE s g $ — directly at the target.
    r.xadd("s", {"f": "v"})
    r.xgroup_create("s", "g", id="$")


# (id, command, words the reason must contain, setup at the target)
CASES = [
    ("unknown-command-binary-args", ("foo", b"\xff\xfe"), ["unknown command", r"\xff\xfe"], None),
    ("object-binary-subcommand", ("object", b"\xff", "k"), ["unknown subcommand", r"\xff"], None),
    ("xgroup-binary-subcommand", ("xgroup", b"\xff", "s", "g"), ["unknown subcommand", r"\xff"], None),
    ("mutated-command-name", (b"\xc7push", "k", "v"), ["unknown command", r"\xc7"], None),
    # Run-time error (inside EXEC, not at queue time): -NOGROUP ... '\xffg'.
    ("nogroup-binary-group", ("xgroup", "createconsumer", "s", b"\xffg", "c"),
     ["NOGROUP", r"\xff"], _setup_group),
]


@pytest.mark.parametrize("cmd,words,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_non_utf8_error_reply_is_dead_lettered_and_the_stream_goes_on(
        syncs_factory, redis_target, cmd, words, setup):
    import intc

    r = redis_target.client(0)
    if setup is not None:
        setup(r)
    s = syncs_factory(RULES.format(url=redis_target.url))
    ic = intc.IncClient()
    path = s.socket

    # The path works before the poison (else: a harness problem).
    ic.redis_one(path, 6379, 0, ("set", "before", "1"))
    wait_for(lambda: r.get("before") == b"1", timeout=20, what="the write before the poison (harness check)")
    assert s.dead_letters() == [], "nothing is dead-lettered before the poison"

    ic.redis_one(path, 6379, 0, cmd)
    ic.redis_one(path, 6379, 0, ("set", "after", "1"))
    assert ic.sync(path, 10.0) == 0, "the proxy accepted all three frames"

    try:
        wait_for(lambda: r.get("after") == b"1", timeout=20, what="the write after the poison")
    except AssertionError as e:
        lines = _unavailable_lines(s)
        raise AssertionError(
            f"{e}: the stream is stuck behind {cmd!r}; the server logged {len(lines)} "
            "'unavailable' line(s) (the bug: an unparsable error reply taken for a target "
            "outage, retried for ever):\n" + "\n".join(lines[-5:])
        ) from None

    dead = wait_for(s.dead_letters, what="the dead letter")
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["target"] == TARGET
    assert d["op"] == {"kind": "redis", "port": 6379, "db": 0,
                       "commands": [[_arg_json(a) for a in cmd]]}
    reason = d["reason"]
    for w in words:
        assert w in reason, f"{w!r} not in the dead-letter reason {reason!r}"
    assert ESCAPED_BYTE.search(reason), f"no escaped byte (\\xNN) in {reason!r}"
    assert "\ufffd" not in reason, f"bytes replaced, not escaped: {reason!r}"

    wait_for(lambda: _dead_lettered(s, TARGET) == 1, what="the dead letter counted")
    assert len(_unavailable_lines(s)) <= UNAVAILABLE_ALLOWED, "\n".join(_unavailable_lines(s))
    assert s.proxy.alive() and s.server.alive()
