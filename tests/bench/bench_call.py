"""Row 6 of the benchmark suite (tests/bench/suite.py), Python side: what one
buffered `IncClient.redis_one` costs the caller, without a proxy, a server
or Redis. The C side is tests/bench/c/bench_call.c.

    python3 tests/bench/bench_call.py [n] [runs]     defaults: 500,000 calls, 5 runs

Opens a unix listener in a fresh temporary directory and forks a child that
accepts one connection and reads and discards everything (1 MiB reads, no
Python work per frame), so the library's writes never wait. The parent
makes an `IncClient(buffer=True)` (64 KiB, 1 ms linger), connects with a
first batch of calls, then, per run, times n `redis_one` SETs (16-character
str keys, made before the timed loop, 64-character str values) plus the
final `flush`.

Prints one line: "ns_per_call=<median wall-clock ns per call over the runs>
cpu_ns_per_call=<median process CPU time per call> n=<n> runs=<wall ns of
each run>". Exits non-zero if the child did not read every byte written.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time


def discard(listener: socket.socket, report: int) -> None:
    """The child: reads one connection to its end, reports the byte count."""
    conn, _ = listener.accept()
    total = 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    os.write(report, str(total).encode())
    os._exit(0)


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 500_000
    runs = int(argv[2]) if len(argv) > 2 else 5
    import intc

    with tempfile.TemporaryDirectory(prefix="bench_call.") as tmp:
        path = os.path.join(tmp, "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            try:
                discard(listener, write_end)
            finally:
                os._exit(1)
        os.close(write_end)
        listener.close()

        ic = intc.IncClient(buffer=True)
        value = "v" * 64
        keys = ["k%015d" % i for i in range(n)]
        call = ic.redis_one
        for key in keys[:10_000]:
            call(path, 6379, 0, ("set", key, value))
        ic.flush(path)

        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(runs):
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            for key in keys:
                call(path, 6379, 0, ("set", key, value))
            ic.flush(path)
            t1, c1 = time.perf_counter_ns(), time.process_time_ns()
            wall.append((t1 - t0) / n)
            cpu.append((c1 - c0) / n)
        written = ic.stats(path)["bytes"]
        # The client's own connection closes (the child sees its end) once
        # the client is gone.
        del call, ic
        received = int(os.read(read_end, 64) or b"-1")
        _, status = os.waitpid(child, 0)
        if status != 0 or received != written:
            print(f"bench_call.py: the child read {received} bytes, the library wrote {written}",
                  file=sys.stderr)
            return 1
    print(f"ns_per_call={statistics.median(wall):.1f} cpu_ns_per_call={statistics.median(cpu):.1f} "
          f"n={n} runs={','.join(f'{w:.1f}' for w in wall)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
