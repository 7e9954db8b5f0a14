"""End-to-end throughput of the Python client, one redis_one call at a time:
proxy → server → a real redis-server, from the first call to the last write
visible in the target (a final marker key).

    python3 tests/bench/e2e_python.py 200000                 # default proxy flags
    python3 tests/bench/e2e_python.py 200000 --fsync 100ms   # extra proxy flags

Needs the release binaries (scripts/test.sh builds them) and the installed
Python library. Not a test: it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import Redis, Syncs, default_rules, wait_for  # noqa: E402


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 200_000
    proxy_args = argv[2:]
    tmp = Path(tempfile.mkdtemp(prefix="syncs-bench-"))
    target = Redis(tmp)
    syncs = Syncs(tmp, default_rules(target.url, None), proxy_args=proxy_args)
    try:
        import intc

        ic = intc.IncClient()
        value = "v" * 64
        t0 = time.perf_counter()
        for i in range(n):
            ic.redis_one(syncs.socket, 6379, 0, ("set", "k%015d" % i, value))  # 16-byte keys
        ic.redis_one(syncs.socket, 6379, 0, ("set", "marker", "done"))
        t1 = time.perf_counter()
        r = target.client(0)
        wait_for(lambda: r.get("marker") == b"done", timeout=600, interval=0.005, what="the marker")
        t2 = time.perf_counter()
        print(f"n={n} proxy_args={proxy_args} calls={t1 - t0:.2f}s ({(t1 - t0) / n * 1e6:.2f} us/call) "
              f"end_to_end={t2 - t0:.2f}s ({n / (t2 - t0):,.0f} ops/s)")
    finally:
        syncs.stop()
        target.stop()


if __name__ == "__main__":
    main(sys.argv)
