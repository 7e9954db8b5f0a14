"""The client sides of the benchmark suite, each run as its own process so
that the suite's polling never shares a GIL with the measured loop.

    workers.py py_set <socket> <n> <prefix> [buffered]
    workers.py redis_py <port> <n> <pipeline>
    workers.py mongo_syncs <socket> <n> <batch>
    workers.py mongo_direct <url> <n> <batch>

Each prints one `key=value ...` line on stdout for the suite to read.
"""

from __future__ import annotations

import sys
import time

VALUE = "v" * 64


def started() -> tuple[int, int]:
    """(CLOCK_MONOTONIC ns, perf_counter ns) now, at a worker's first
    call: the suite times a row through syncs from the first call (the
    interpreter's start and imports, ~0.1 s, are not the row's), on the
    clock every process shares."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.perf_counter_ns()


def py_set(path: str, n: int, prefix: str, buffered: bool) -> None:
    """N SETs through the seed-compatible `IncClient.redis_one`."""
    import intc

    ic = intc.IncClient(**({"buffer": True} if buffered else {}))
    start, t0 = started()
    for i in range(n):
        ic.redis_one(path, 6379, 0, ("set", "%s%015d" % (prefix, i), VALUE))
    ic.redis_one(path, 6379, 0, ("set", "marker", "done"))
    if buffered:
        ic.flush()
    t1 = time.perf_counter_ns()
    print(f"calls_ns={t1 - t0} n={n} start_ns={start}")


def redis_py(port: int, n: int, pipeline: int) -> None:
    """What applications do without syncs: redis-py straight to the remote."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    t0 = time.perf_counter_ns()
    if pipeline <= 1:
        for i in range(n):
            r.set("p%015d" % i, VALUE)
    else:
        p = r.pipeline(transaction=False)
        for i in range(n):
            p.set("p%015d" % i, VALUE)
            if (i + 1) % pipeline == 0:
                p.execute()
        p.execute()
    t1 = time.perf_counter_ns()
    print(f"calls_ns={t1 - t0} n={n}")


def _docs(start: int, n: int) -> list[dict]:
    return [{"_id": start + i, "name": "user%d" % (start + i), "score": i % 100, "tags": ["a", "b"]}
            for i in range(n)]


def mongo_syncs(path: str, n: int, batch: int) -> None:
    """insert_many in batches through syncs (the seed's `mongo_exec` with
    `intc_mg` write descriptions)."""
    import intc
    from intc_mg import mg_insert_many, mg_insert_one

    ic = intc.IncClient()
    start_ns, t0 = started()
    for start in range(0, n, batch):
        ic.mongo_exec(path, "bench", "users", mg_insert_many(_docs(start, min(batch, n - start))))
    ic.mongo_exec(path, "bench", "marker", mg_insert_one({"_id": "done"}))
    t1 = time.perf_counter_ns()
    print(f"calls_ns={t1 - t0} n={n} start_ns={start_ns}")


def mongo_direct(url: str, n: int, batch: int) -> None:
    """pymongo insert_many straight to the Mongo-wire server."""
    import pymongo

    coll = pymongo.MongoClient(url)["direct"]["users"]
    t0 = time.perf_counter_ns()
    for start in range(0, n, batch):
        coll.insert_many(_docs(start, min(batch, n - start)))
    t1 = time.perf_counter_ns()
    print(f"calls_ns={t1 - t0} n={n}")


def main(argv: list[str]) -> None:
    cmd, args = argv[1], argv[2:]
    if cmd == "py_set":
        py_set(args[0], int(args[1]), args[2], len(args) > 3 and args[3] == "buffered")
    elif cmd == "redis_py":
        redis_py(int(args[0]), int(args[1]), int(args[2]))
    elif cmd == "mongo_syncs":
        mongo_syncs(args[0], int(args[1]), int(args[2]))
    elif cmd == "mongo_direct":
        mongo_direct(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown worker {cmd}")


if __name__ == "__main__":
    main(sys.argv)
