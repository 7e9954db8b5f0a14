"""Hostile clients on the proxy's unix socket, next to one good writer.

Several hostile threads open raw connections to the proxy and send, for a
bounded time, random and mutated frames: random bytes; valid length
prefixes with garbage payloads; lengths above `--max-frame` (some followed
by exactly that many bytes, so the stream must stay in step; some not);
frames cut short, then the connection closed; valid `"<port>,<db>\\x01"`
headers with valid RESP of real commands, mutated (bytes of the name
flipped, random binary arguments, several commands as a transaction);
malformed RESP; valid frames mutated (bit flips, truncations, extensions,
a wrong length prefix). Each connection's random generator has a fixed
seed, `"<thread seed>/<connection number>"`; the thread seeds are printed,
so a failure reproduces: `SYNCS_HOSTILE_SEED` sets the base seed (thread
`i` uses base + i), `SYNCS_HOSTILE_SECONDS` the duration, and
`SYNCS_HOSTILE_ONLY="20261205/17,20261206/3"` replays just those
connections, in that order, from one thread (to narrow a failure down).

Meanwhile one good writer uses `intc` to `RPUSH good 1..N` on port 6379,
db 0, then `SYNC`s. The test asserts that the list is exactly 1..N (in
order, exactly once), that the proxy and the server stay alive throughout,
that the proxy counted refused frames, and that hostile commands did reach
Redis (applied or dead-lettered there) without stopping the stream.

Why the hostile traffic cannot touch the list `good`, by construction:

1. **The port.** Only the good writer uses port 6379. Every hostile
   connection's bytes are scrubbed before they are sent so that `6379`
   never appears anywhere in them (a byte of any match is changed). The
   proxy reads a Redis header's port as ASCII digits (leading zeros
   allowed, no sign, no spaces: engine/src/wire/client.rs), and a frame's
   payload is a contiguous run of the connection's bytes, so no frame cut
   from a hostile connection, aligned or not, can carry port 6379.
2. **The rules** (inline below): port 6379 only routes `RPUSH` on key
   `good` in db 0; anything else on 6379 is dropped. Every other port is
   routed to the same Redis but always into db 5 (`-> t db 5`), whatever
   the source db. Commands that reach past their db or run code are
   dropped by an explicit rule that names them (`@dangerous`: FLUSHALL,
   FLUSHDB, SWAPDB, MIGRATE, ...; `@scripting`: EVAL, FCALL, FUNCTION,
   SCRIPT), so this does not rely on the engine's dangerous-command
   default alone.
3. **The key name.** The remaining commands that can write into another db
   (`MOVE k 0`, `COPY a b DB 0`) must name their keys; the scrub also
   removes every `good` from hostile bytes, so no hostile command can name
   the list, in any db. Junk keys may land in db 0; they do not matter.

The hostile frames share the proxy's one stream with the good writer's, so
every good write after a hostile command that reached Redis is applied
after it: the list arriving complete shows those commands did not stop the
stream. Commands that change the target connection's state (QUIT, RESET,
HELLO, SUBSCRIBE, ...) are in their own list, `CONNECTION_STATE`, used by
the fuzzer only when `SYNCS_HOSTILE_CONNECTION_STATE=1` (see its comment);
`test_connection_state_command_between_good_writes` sends each of them
alone, between good writes on one connection.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest

from conftest import frame, resp, wait_for

GOOD_N = 5000
HOSTILES = 4
DURATION = float(os.environ.get("SYNCS_HOSTILE_SECONDS", "15"))
BASE_SEED = int(os.environ.get("SYNCS_HOSTILE_SEED", "20261205"))
MAX_FRAME = 65536  # the proxy's --max-frame for this test
HOSTILE_PORTS = [6380, 0, 1, 7000, 11211, 65535]  # never 6379
FORBIDDEN = (b"6379", b"good")

RULES = """\
target t = redis "{url}"
rule good:      redis port 6379 db 0 key "good" cmd RPUSH -> t
rule warmup:    redis port 6379 db 0 key "warmup" cmd SET -> t
rule only_good: redis port 6379 -> drop
rule no_reach:  redis cmd @dangerous, @scripting -> drop
rule hostile:   redis -> t db 5
default redis -> drop
default mongo -> drop
"""


# ---------------------------------------------------------------- frames


def scrub(tail: bytes, chunk: bytes) -> bytes:
    """`chunk` with every FORBIDDEN match in `tail + chunk` broken. `tail` is
    the connection's last 3 bytes already sent, so a match always ends in
    `chunk`; its last byte is raised by one ('9' -> ':', 'd' -> 'e'), which
    cannot make a new match."""
    buf = bytearray(chunk)
    while True:
        joined = tail + bytes(buf)
        hits = [(joined.find(p), p) for p in FORBIDDEN if p in joined]
        if not hits:
            return bytes(buf)
        at, p = min(hits)
        buf[at + len(p) - 1 - len(tail)] += 1


class Gen:
    """Hostile items for one connection, from its own seeded generator."""

    def __init__(self, seed: str, connection_state: bool):
        self.r = random.Random(seed)  # str seeds are hashed the same in every run
        self.templates = TEMPLATES + (CONNECTION_STATE if connection_state else [])

    # Arguments: a few shared key names (so types collide), small numbers
    # (no SETBIT 4294967295 or SRANDMEMBER -1e9: memory, not hostility),
    # random binary.
    def key(self) -> bytes:
        r = self.r
        if r.random() < 0.8:
            return b"h:" + r.choice([b"a", b"b", b"c", b"l", b"s", b"z", b"x", b"\xff"])
        return self.blob(1, 8)

    def val(self) -> bytes:
        return self.blob(0, 16) if self.r.random() < 0.5 else self.r.choice([b"v", b"1", b"x" * 10, b""])

    def num(self) -> bytes:
        return b"%d" % self.r.randint(-3, 99)

    def blob(self, lo: int, hi: int) -> bytes:
        return self.r.randbytes(self.r.randint(lo, hi))

    def header(self) -> bytes:
        return b"%d,%d\x01" % (self.r.choice(HOSTILE_PORTS), self.r.choice([0, 1, 5, 15, 16, 4294967295]))

    def command(self) -> list[bytes]:
        r = self.r
        name, build = r.choice(self.templates)
        args = [name] + build(self)
        if r.random() < 0.3:
            args[0] = args[0].upper() if r.random() < 0.5 else args[0].swapcase()
        if r.random() < 0.25:  # mutate the name: flip bytes
            n = bytearray(args[0])
            for _ in range(r.randint(1, 2)):
                i = r.randrange(len(n))
                n[i] ^= 1 << r.randrange(8)
            args[0] = bytes(n)
        if r.random() < 0.15:  # random arguments instead
            args = [args[0]] + [self.blob(0, 12) for _ in range(r.randint(0, 4))]
        if r.random() < 0.1:
            args.append(self.blob(1, 12))
        return args

    def good_payload(self) -> bytes:
        """Valid header + valid RESP: one command, sometimes a transaction."""
        cmds = [self.command() for _ in range(1 if self.r.random() < 0.8 else self.r.randint(2, 4))]
        return self.header() + b"".join(resp(*c) for c in cmds)

    def mutate(self, b: bytes) -> bytes:
        r = self.r
        b = bytearray(b)
        for _ in range(r.randint(1, 3)):
            op = r.randrange(5)
            if op == 0 and b:  # bit flips
                for _ in range(r.randint(1, 4)):
                    i = r.randrange(len(b))
                    b[i] ^= 1 << r.randrange(8)
            elif op == 1 and b:  # truncate
                del b[r.randrange(len(b)):]
            elif op == 2:  # extend
                b += self.blob(1, 20)
            elif op == 3 and b:  # splice random bytes in
                i = r.randrange(len(b))
                b[i:i] = self.blob(1, 8)
            elif op == 4 and b:  # duplicate a slice
                i = r.randrange(len(b))
                j = r.randrange(i, min(len(b), i + 30) + 1)
                b[j:j] = b[i:j]
        return bytes(b)

    def malformed_resp(self) -> bytes:
        r = self.r
        bodies = [
            b"*2\r\n$3\r\nSET\r\n$99\r\nshort\r\n",   # length beyond the bytes
            b"*1\r\n$3\r\nSET",                         # no CRLF
            b"*0\r\n", b"*-1\r\n", b"*1\r\n$-1\r\n",
            b"*99999999999999999999\r\n$1\r\na\r\n",
            b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",      # nested array
            b"*1\r\n:1\r\n", b"*1\r\n+OK\r\n",
            b"SET a b\r\n",                             # inline command
            b"*1\r\n$3\r\nSET\n", b"*1\n$3\nSET\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n",          # fewer args than announced
            b"*1\r\n$18446744073709551616\r\nx\r\n",
            b"*1\r\n$0\r\n\r\n*",                       # trailing junk
            b"*\r\n", b"$3\r\nSET\r\n",
        ]
        body = r.choice(bodies)
        if r.random() < 0.5:
            body = self.mutate(body)
        return self.header() + body

    def item(self) -> tuple[str, bytes, bool]:
        """(kind, bytes to send, close the connection after)."""
        r = self.r
        kind = r.choices(
            ["random", "garbage", "oversize_skipped", "oversize_cut", "truncated",
             "command", "malformed", "mutated", "mutated_prefix", "control"],
            weights=[4, 8, 2, 2, 3, 30, 10, 25, 3, 2])[0]
        if kind == "random":
            return kind, self.blob(1, 300), True
        if kind == "garbage":
            first = r.choice([b"", b"0", b"9", b"6", b"\x02", b"\x03", b"\x04", b"\x1f", b"\x00", b"\xff",
                              r.randbytes(1)])
            return kind, frame(first + self.blob(0, 200)), False
        if kind == "oversize_skipped":
            # Above --max-frame, and all of it sent: skipped, stream in step.
            n = MAX_FRAME + 1 + r.randrange(2000)
            return kind, struct.pack("<I", n) + self.good_payload()[:n].ljust(n, b"\x00"), False
        if kind == "oversize_cut":
            n = r.choice([MAX_FRAME + 1, 2 ** 31, 2 ** 32 - 1, r.randrange(MAX_FRAME + 1, 2 ** 32)])
            return kind, struct.pack("<I", n) + self.blob(0, 500), True
        if kind == "truncated":
            f = frame(self.good_payload())
            return kind, f[:r.randrange(1, len(f))], True
        if kind == "command":
            return kind, frame(self.good_payload()), False
        if kind == "malformed":
            return kind, frame(self.malformed_resp()), False
        if kind == "mutated":
            return kind, frame(self.mutate(self.good_payload())), False
        if kind == "mutated_prefix":  # a wrong length prefix: out of step until closed
            p = self.good_payload()
            return kind, struct.pack("<I", max(0, len(p) + r.randint(-10, 10))) + p, True
        # control: a valid SYNC (answered; never read), or a bad one
        if r.random() < 0.5:
            return kind, frame(b"\x03S" + r.randbytes(8)), False
        return kind, frame(b"\x03" + self.blob(0, 12)), False


def _a(*parts):
    """A template's argument builder from part names."""
    def build(g: Gen) -> list[bytes]:
        out = []
        for p in parts:
            out.append({"k": g.key, "v": g.val, "n": g.num}[p]() if isinstance(p, str) else p)
        return out
    return build


TEMPLATES = [
    (b"set", _a("k", "v")), (b"get", _a("k")), (b"del", _a("k", "k")), (b"incr", _a("k")),
    (b"incrby", _a("k", "n")), (b"append", _a("k", "v")), (b"setrange", _a("k", "n", "v")),
    (b"getdel", _a("k")), (b"lpush", _a("k", "v", "v")), (b"rpush", _a("k", "v")),
    (b"lpop", _a("k")), (b"ltrim", _a("k", "n", "n")), (b"lset", _a("k", "n", "v")),
    (b"lrem", _a("k", "n", "v")), (b"lmove", _a("k", "k", b"LEFT", b"RIGHT")),
    (b"blpop", _a("k", b"0")), (b"sadd", _a("k", "v", "v")), (b"srem", _a("k", "v")),
    (b"spop", _a("k")), (b"smove", _a("k", "k", "v")), (b"zadd", _a("k", "n", "v")),
    (b"zincrby", _a("k", "n", "v")), (b"zrem", _a("k", "v")), (b"hset", _a("k", "v", "v")),
    (b"hdel", _a("k", "v")), (b"hincrby", _a("k", "v", "n")), (b"expire", _a("k", "n")),
    (b"pexpire", _a("k", "n")), (b"persist", _a("k")), (b"rename", _a("k", "k")),
    (b"renamenx", _a("k", "k")), (b"copy", _a("k", "k", b"REPLACE")),
    (b"copy", _a("k", "k", b"DB", b"0")), (b"move", _a("k", b"0")), (b"type", _a("k")),
    (b"object", _a(b"encoding", "k")), (b"object", _a("v", "k")),
    (b"xadd", _a("k", b"*", "v", "v")), (b"xgroup", _a(b"create", "k", "v", b"$", b"MKSTREAM")),
    (b"xgroup", _a(b"createconsumer", "k", "v", "v")), (b"xgroup", _a("v", "k", "v")),
    (b"xack", _a("k", "v", b"0-1")), (b"pfadd", _a("k", "v")), (b"setbit", _a("k", "n", b"1")),
    (b"bitfield", _a("k", b"INCRBY", b"u8", "n", "n")), (b"geoadd", _a("k", b"13.36", b"52.51", "v")),
    (b"sort", _a("k")), (b"publish", _a("v", "v")), (b"unlink", _a("k")), (b"mset", _a("k", "v", "k", "v")),
    (b"msetnx", _a("k", "v")), (b"getset", _a("k", "v")), (b"restore", _a("k", b"0", "v")),
    (b"exists", _a("k", "k")), (b"ping", _a()), (b"echo", _a("v")), (b"foo", _a("v")),
    # Refused by the proxy (refused_command): the header says the db and
    # whether commands form a transaction.
    (b"select", _a(b"0")), (b"multi", _a()), (b"exec", _a()), (b"watch", _a("k")),
    # Dropped by the rules (no_reach), whatever they would do:
    (b"eval", _a(b"return 1", b"0")), (b"flushall", _a()), (b"flushdb", _a()),
    (b"swapdb", _a(b"0", b"5")), (b"config", _a(b"set", b"maxmemory", b"1")),
    (b"debug", _a(b"sleep", b"0")), (b"client", _a(b"list")), (b"function", _a(b"flush")),
    (b"script", _a(b"flush")),
]

# Commands that change the state of the server's connection to the target
# (they are not refused by the proxy and not in @dangerous): QUIT and RESET
# run at once even inside MULTI, HELLO 3 switches the protocol, SUBSCRIBE
# inside MULTI/EXEC puts the connection in pub/sub mode. Off by default:
# their effect on the stream is a separate question from random frames;
# SYNCS_HOSTILE_CONNECTION_STATE=1 adds them to the mix.
CONNECTION_STATE = [
    (b"quit", _a()), (b"reset", _a()), (b"hello", _a(b"3")), (b"subscribe", _a("v")),
    (b"psubscribe", _a("v")), (b"ssubscribe", _a("k")), (b"readonly", _a()),
    (b"auth", _a("v")),
]


# ---------------------------------------------------------------- clients

class Hostile(threading.Thread):
    """Connections `"<seed>/1"`, `"<seed>/2"`, ... until `until`; or, with
    `only`, exactly those connection seeds, once each."""

    def __init__(self, path: str, seed: int, until: float, connection_state: bool,
                 only: list[str] | None = None):
        super().__init__(daemon=True)
        self.path = path
        self.seed = seed
        self.until = until
        self.connection_state = connection_state
        self.only = only
        self.counts: dict[str, int] = {}
        self.connections = 0
        self.send_errors = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _run(self):
        while time.monotonic() < self.until:
            if self.only is not None:
                if self.connections == len(self.only):
                    return
                conn_seed = self.only[self.connections]
            else:
                conn_seed = f"{self.seed}/{self.connections + 1}"
            self.connections += 1
            g = Gen(conn_seed, self.connection_state)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.settimeout(5.0)
                    c.connect(self.path)
                    tail = b""
                    for _ in range(g.r.randint(1, 40)):
                        kind, data, close = g.item()
                        self.counts[kind] = self.counts.get(kind, 0) + 1
                        data = scrub(tail, data)
                        tail = (tail + data)[-3:]
                        if g.r.random() < 0.2:  # in small pieces
                            i = 0
                            while i < len(data):
                                n = g.r.randint(1, 64)
                                c.sendall(data[i:i + n])
                                i += n
                        else:
                            c.sendall(data)
                        if close or time.monotonic() >= self.until:
                            break
            except OSError:
                # The proxy may close on us or time us out; a new connection
                # carries on (counted, not a failure).
                self.send_errors += 1


def _acknowledged(s) -> bool:
    """Every record the proxy accepted so far is acknowledged by the server
    (one scrape, so the two counters are of the same moment)."""
    m = s._metrics(s.proxy_metrics)
    accepted = sum(v for k, v in m.items() if k.startswith("syncs_proxy_frames_accepted_total"))
    # The accepted count may trail by up to 50 ms (docs/operations.md): the
    # spool's own gauge of unacknowledged records must be empty too.
    return (accepted > 0 and m.get("syncs_proxy_records_acked_total", 0) >= accepted
            and m.get("syncs_proxy_pending_records", 1) == 0)


def _refused(s) -> dict[str, float]:
    return {k: v for k, v in s._metrics(s.proxy_metrics).items()
            if k.startswith("syncs_proxy_frames_refused_total{")}


def _server_sum(s, prefix: str, needle: str = "") -> float:
    return sum(v for k, v in s._metrics(s.server_metrics).items() if k.startswith(prefix) and needle in k)


def test_hostile_clients_cannot_disturb_a_good_writer(syncs_factory, redis_target):
    import intc

    s = syncs_factory(RULES.format(url=redis_target.url), proxy_args=["--max-frame", str(MAX_FRAME)])
    r0, r5 = redis_target.client(0), redis_target.client(5)
    ic = intc.IncClient(send_timeout=10.0)

    # Harness check: the path works before any hostility.
    ic.redis_one(s.socket, 6379, 0, ("set", "warmup", "1"))
    wait_for(lambda: r0.get("warmup") == b"1", timeout=20, what="warm-up write (harness check)")
    assert sum(_refused(s).values()) == 0

    connection_state = os.environ.get("SYNCS_HOSTILE_CONNECTION_STATE") == "1"
    only = [c for c in os.environ.get("SYNCS_HOSTILE_ONLY", "").split(",") if c]
    seeds = [BASE_SEED + i for i in range(HOSTILES)] if not only else [0]
    print(f"\nHOSTILE seeds {seeds} (SYNCS_HOSTILE_SEED={BASE_SEED}; connection seeds "
          f"'<seed>/<n>'), {DURATION}s, connection-state commands {'on' if connection_state else 'off'}"
          + (f", replaying only {only}" if only else ""))
    start = time.monotonic()
    until = start + DURATION
    hostiles = [Hostile(s.socket, seed, until, connection_state, only or None) for seed in seeds]
    for h in hostiles:
        h.start()

    # The good writer, spread over the hostile window; the daemons watched
    # between writes.
    deaths: list[str] = []
    pace = DURATION * 0.8 / GOOD_N
    for i in range(1, GOOD_N + 1):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "good", str(i)))
        if i % 50 == 0:
            if not (s.proxy.alive() and s.server.alive()):
                deaths.append(f"after good write {i}: proxy alive {s.proxy.alive()}, server alive {s.server.alive()}")
                break
            ahead = start + i * pace - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the writer, not waiting for an outcome
    refused_by_proxy = ic.sync(s.socket, 30.0)
    while any(h.is_alive() for h in hostiles):
        if not (s.proxy.alive() and s.server.alive()):
            deaths.append(f"during the hostile run: proxy alive {s.proxy.alive()}, server alive {s.server.alive()}")
            break
        for h in hostiles:
            h.join(0.2)
    for h in hostiles:
        h.join(10)
        print(f"HOSTILE seed {h.only or h.seed}: {h.connections} connections, {h.send_errors} ended by errors, "
              f"items {dict(sorted(h.counts.items()))}")
    assert not deaths, deaths
    assert all(not h.is_alive() for h in hostiles), "a hostile thread did not end"
    assert [h.error for h in hostiles if h.error] == []
    assert refused_by_proxy == 0, "the proxy refused some of the good writer's frames"

    # The SYNC above returned, so every good frame is among the accepted
    # ones: once the server acknowledged all accepted records, each good
    # write is applied (or lost: _assert_exactly tells).
    try:
        wait_for(lambda: _acknowledged(s), timeout=60, interval=0.2, what="every accepted record acknowledged")
    except AssertionError as e:
        stuck = [l for l in s.server.text().splitlines() if "unavailable" in l]
        raise AssertionError(
            f"{e}: {r0.llen('good')} of {GOOD_N} good writes arrived; server 'unavailable' lines: "
            f"{len(stuck)}\n" + "\n".join(stuck[-5:])
        ) from None
    _assert_exactly(r0, GOOD_N)
    assert s.proxy.alive() and s.server.alive()

    refused = _refused(s)
    applied_t = _server_sum(s, "syncs_server_ops_applied_total{", 'target="t"')
    dead_t = _server_sum(s, "syncs_server_ops_dead_lettered_total{", 'target="t"')
    dead_all = _server_sum(s, "syncs_server_ops_dead_lettered_total{")
    print(f"HOSTILE proxy refused {dict(sorted(refused.items()))}")
    print(f"HOSTILE server: applied at t {applied_t:.0f} (good {GOOD_N} + warm-up 1), refused by Redis "
          f"{dead_t:.0f}, dead-lettered in all {dead_all:.0f}, keys in db 5: {r5.dbsize()}")
    if only:
        return  # a replay of a few connections need not reach every path
    assert sum(refused.values()) > 0, "the proxy refused no hostile frame"
    assert refused.get('syncs_proxy_frames_refused_total{reason="oversize"}', 0) > 0
    # Hostile commands reached Redis: some applied there, some refused by it.
    assert applied_t > GOOD_N + 1, "no hostile command was applied at the target"
    assert dead_t > 0, "Redis refused no hostile command"
    assert r5.dbsize() > 0


def _assert_exactly(r, n: int):
    """The list `good` is exactly 1..n; names what is missing or repeated."""
    got = [int(x) for x in r.lrange("good", 0, -1)]
    if got != list(range(1, n + 1)):
        seen: set[int] = set()
        dups = sorted({x for x in got if x in seen or seen.add(x)})
        missing = sorted(set(range(1, n + 1)) - set(got))
        order = next((i for i in range(1, len(got)) if got[i] < got[i - 1]), None)
        raise AssertionError(
            f"good is not 1..{n}: {len(got)} items, {len(missing)} missing {missing[:20]}, "
            f"{len(dups)} repeated {dups[:20]}, first out of order at index {order}")


# Each is sent alone on port 6380 (so routed to db 5 by the rule `hostile`)
# between good writes 100 and 101 of 200, all on one raw connection, so it
# lands in the middle of a run at the target.
CONNECTION_STATE_CASES = [
    ("quit", (b"quit",)),
    ("reset", (b"reset",)),
    ("hello-3", (b"hello", b"3")),
    ("subscribe", (b"subscribe", b"ch")),
    ("psubscribe", (b"psubscribe", b"p*")),
    ("ssubscribe", (b"ssubscribe", b"h:k")),
    ("auth", (b"auth", b"x")),
]


@pytest.mark.parametrize("cmd", [c[1] for c in CONNECTION_STATE_CASES],
                         ids=[c[0] for c in CONNECTION_STATE_CASES])
def test_connection_state_command_between_good_writes(syncs_factory, redis_target, cmd):
    """A command that changes the server's connection to the target (QUIT
    and RESET run at once even inside MULTI; HELLO 3 switches to RESP3;
    SUBSCRIBE inside MULTI/EXEC enters pub/sub mode) must not lose, repeat
    or hold up the writes around it. Whether it is refused by the proxy,
    dropped, dead-lettered or applied is the product's choice; the good
    writes must all arrive, once, in order, within a bounded time."""
    n = 200
    s = syncs_factory(RULES.format(url=redis_target.url))
    r0 = redis_target.client(0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(s.socket)
        data = b""
        for i in range(1, n + 1):
            data += frame(b"6379,0\x01" + resp(b"rpush", b"good", b"%d" % i))
            if i == n // 2:
                data += frame(b"6380,0\x01" + resp(*cmd))
        c.sendall(data)
    def settled():
        m = s._metrics(s.proxy_metrics)
        seen = sum(v for k, v in m.items() if k.startswith(("syncs_proxy_frames_accepted_total",
                                                             "syncs_proxy_frames_refused_total")))
        return seen == n + 1 and _acknowledged(s)

    try:
        wait_for(settled, timeout=30, interval=0.1, what=f"all {n + 1} frames taken and acknowledged")
    except AssertionError as e:
        stuck = [l for l in s.server.text().splitlines() if "unavailable" in l]
        raise AssertionError(f"{e}: {r0.llen('good')} of {n} in the list; server 'unavailable' "
                             f"lines: {len(stuck)}\n" + "\n".join(stuck[-3:])) from None
    _assert_exactly(r0, n)
    assert s.proxy.alive() and s.server.alive()


def _nested_mongo_frame(levels: int) -> bytes:
    """A Mongo frame whose write, `{op: insert_one, document: {a: {a: …}}}`,
    is `levels` documents deep (8 bytes a level)."""
    wraps = levels - 2
    inner = b"".join(struct.pack("<I", 5 + 8 * j) + b"\x03a\x00" for j in range(wraps, 0, -1))
    inner += b"\x05\x00\x00\x00\x00" + b"\x00" * wraps
    elements = b"\x02op\x00" + struct.pack("<I", 11) + b"insert_one\x00" + b"\x03document\x00" + inner
    write = struct.pack("<I", 4 + len(elements) + 1) + elements + b"\x00"
    payload = b"\x02app\x00users\x00" + write
    return struct.pack("<I", len(payload)) + payload


def test_deeply_nested_bson_is_refused_and_the_proxy_stays_up(syncs_factory, redis_target):
    """A Mongo frame nested 100,000 deep (800 kB) once overflowed the stack
    of whoever decoded it: the proxy aborted. Now it is one refused frame."""
    import intc

    s = syncs_factory(RULES.format(url=redis_target.url))
    r0 = redis_target.client(0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(s.socket)
        raw.sendall(_nested_mongo_frame(100_000))
        wait_for(lambda: _refused(s).get('syncs_proxy_frames_refused_total{reason="bad_bson"}', 0) >= 1,
                 timeout=20, what="the nested frame refused as bad BSON")
    assert "nested deeper than 128 levels" in s.proxy.text()
    # The same connection path still carries good writes.
    ic = intc.IncClient(send_timeout=10.0)
    ic.redis_one(s.socket, 6379, 0, ("set", "warmup", "after"))
    assert ic.sync(s.socket, 30.0) == 0
    wait_for(lambda: r0.get("warmup") == b"after", timeout=20, what="the write after the nested frame")
    assert s.proxy.alive() and s.server.alive()
