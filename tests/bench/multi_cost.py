"""What wrapping SETs in MULTI/EXEC costs Redis itself, and what merging
them into MSETs saves it (docs/benchmarks.md, sessions 13 and 18): no
syncs, only a fresh redis-server and pre-built pipelines.

    python3 tests/bench/multi_cost.py [n] [rounds]     defaults: 1,000,000 SETs, 4 rounds

Each run sends n SETs (16-byte keys, 64-byte values) in runs of 8,192
commands, one run in flight at a time as a server lane sends them: either
as a plain pipeline, or as one `MULTI … HSET <marker> … EXEC` per block of
8,192, 1,024 or 256 commands (the applier's shape: the data, then the
marker, in one transaction), or per block of 8,192 with the SETs as MSETs
of 128 pairs (the applier's shape with `merge_sets`, its default). The
runs are built before the clock starts.
The shapes alternate within each round. Prints, per run, SETs per second
and Redis' CPU per SET (user + system, from /proc), then each shape's
figures sorted.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402
from conftest import resp  # noqa: E402

RUN = 8192
VALUE = b"v" * 64
# (name, SETs per MULTI block (0: no MULTI), pairs per MSET (1: plain SETs))
SHAPES = (("no MULTI", 0, 1), ("MULTI per 8192", 8192, 1), ("MULTI per 1024", 1024, 1),
          ("MULTI per 256", 256, 1), ("MULTI per 8192, MSET of 128", 8192, 128))


def build(n: int, block: int, pairs: int, prefix: bytes) -> list[tuple[bytes, int]]:
    """The runs to send, each with the number of reply lines it gets."""
    runs = []
    for start in range(0, n, RUN):
        keys = [b"%s%015d" % (prefix, i) for i in range(start, min(n, start + RUN))]
        if pairs == 1:
            cmds = [resp(b"SET", k, VALUE) for k in keys]
        else:
            cmds = [resp(b"MSET", *[a for k in keys[j:j + pairs] for a in (k, VALUE)])
                    for j in range(0, len(keys), pairs)]
        if block == 0:
            runs.append((b"".join(cmds), len(cmds)))
            continue
        parts, lines = [], 0
        per = max(1, block // pairs)
        for b in range(0, len(cmds), per):
            part = cmds[b:b + per]
            parts += [resp(b"MULTI"), *part, resp(b"HSET", b"marker", b"f", b"%d" % (start + b)), resp(b"EXEC")]
            # +OK, +QUEUED per command and for the HSET, the EXEC array's
            # header, an +OK per command and the HSET's integer.
            lines += 2 * len(part) + 4
        runs.append((b"".join(parts), lines))
    return runs


def run(n: int, block: int, pairs: int, prefix: bytes) -> tuple[float, float]:
    """SETs per second and Redis' CPU µs per SET for one shape."""
    with tempfile.TemporaryDirectory() as tmp:
        redis = suite.Redis(Path(tmp))
        try:
            runs = build(n, block, pairs, prefix)
            sock = socket.create_connection(("127.0.0.1", redis.port))
            pid = redis.proc.p.pid
            cpu0, t0 = suite.cpu_seconds(pid), time.perf_counter()
            for data, lines in runs:
                sock.sendall(data)
                got, last = 0, b""
                while got < lines:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise RuntimeError("redis closed the connection")
                    got += chunk.count(b"\r\n") + (last.endswith(b"\r") and chunk.startswith(b"\n"))
                    last = chunk
            t1, cpu1 = time.perf_counter(), suite.cpu_seconds(pid)
            if redis.client().dbsize() != n + (block > 0):
                raise RuntimeError("not every key is in redis")
            return n / (t1 - t0), (cpu1 - cpu0) / n * 1e6
        finally:
            redis.stop()


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 1_000_000
    rounds = int(argv[2]) if len(argv) > 2 else 4
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in SHAPES}
    for _ in range(rounds):
        for name, block, pairs in SHAPES:
            ops, cpu = run(n, block, pairs, b"k")
            results[name].append((ops, cpu))
            print(f"{name:>28}: {ops:,.0f} SETs/s, redis {cpu:.2f} µs per SET", flush=True)
    for name, got in results.items():
        print(f"{name:>28}: redis µs per SET {sorted(round(c, 2) for _, c in got)}, "
              f"thousands of SETs/s {sorted(round(o / 1000) for o, _ in got)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
