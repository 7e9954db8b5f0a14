"""The proxy's one budget for frames being assembled (`--frame-budget`).

Measured before the budget existed: 16 local clients each sending one
63 MiB frame took the proxy to 1.1 GiB RSS (each client could hold a frame
of up to `--max-frame`). Now large frames are reserved whole against one
budget when their length arrives, and clients past it are not read from
until frames in progress complete.

Here: a proxy with `--frame-budget 64MiB`; 16 clients on its unix socket
each announce a 63 MiB frame and stream its bytes (garbage: the proxy
refuses each frame once it is whole). Meanwhile an ordinary client writes
small frames. Checked: the proxy's RSS grows by less than the budget plus a
margin, every hostile frame is refused and counted, and the ordinary
client's writes all arrive, in order, while the big frames are read.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from conftest import wait_for
from test_preauth import rss_kib

MiB = 1 << 20
CLIENTS = 16
FRAME = 63 * MiB
BUDGET = 64 * MiB
# Above the budget: the buffers of the frame in hand grow as bytes arrive
# (never reserved ahead), the small frames' own 64 KiB buffers, socket
# buffers, and the allocator's slack.
MARGIN = 32 * MiB
RECORDS = 2_000
# Each big frame is 0xEE bytes: not a payload kind the proxy takes.
REFUSED = 'syncs_proxy_frames_refused_total{reason="unknown_kind"}'


def big_frame_client(path: str, sent: list[int], errors: list[str], i: int):
    chunk = bytes([0xEE]) * (1 * MiB)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(120)
            c.connect(path)
            c.sendall(struct.pack("<I", FRAME))
            left = FRAME
            while left:
                n = min(left, len(chunk))
                c.sendall(chunk[:n])
                left -= n
                sent[i] += n
            # Done sending: the proxy reads the frame to its end, refuses
            # it, then sees the end of the stream and closes.
            c.shutdown(socket.SHUT_WR)
            try:
                c.recv(1)
            except OSError:
                pass
    except OSError as e:
        errors.append(f"client {i}: {e!r}")


def test_frames_in_progress_share_one_budget(syncs_factory, redis_target):
    import intc

    from conftest import default_rules

    s = syncs_factory(default_rules(redis_target.url, None),
                      proxy_args=["--frame-budget", "64MiB"])
    r = redis_target.client(0)
    pid = s.proxy.p.pid
    ic = intc.IncClient()
    for i in range(1, 101):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "warm", str(i)))
    assert ic.sync(s.socket) == 0
    wait_for(lambda: r.llen("warm") == 100, what="the warm-up applied")
    baseline = rss_kib(pid)

    sent = [0] * CLIENTS
    errors: list[str] = []
    hostile = [threading.Thread(target=big_frame_client, args=(s.socket, sent, errors, i), daemon=True)
               for i in range(CLIENTS)]
    for t in hostile:
        t.start()

    written: list[int] = []

    def writer():
        w = intc.IncClient()
        for i in range(1, RECORDS + 1):
            w.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
            written.append(i)
            if i % 100 == 0:
                time.sleep(0.01)
        assert w.sync(s.socket) == 0

    wt = threading.Thread(target=writer, daemon=True)
    wt.start()

    peak = [baseline]

    def sampled_until_done() -> bool:
        peak[0] = max(peak[0], rss_kib(pid))
        return not any(t.is_alive() for t in hostile) and not wt.is_alive()

    wait_for(sampled_until_done, timeout=180, interval=0.02, what="the big frames and the writer to finish")
    growth = (peak[0] - baseline) * 1024
    refused = s.proxy_metric(REFUSED)
    print(f"\nproxy RSS baseline {baseline / 1024:.1f} MiB, peak {peak[0] / 1024:.1f} MiB, growth "
          f"{growth / MiB:.1f} MiB (budget {BUDGET / MiB:.0f} MiB); {sum(sent) / MiB:.0f} MiB offered by "
          f"{CLIENTS} clients; frames refused {refused:.0f}")

    assert not errors, errors
    assert sent == [FRAME] * CLIENTS, "the proxy stopped reading a client for good"
    assert growth < BUDGET + MARGIN, f"the proxy's RSS grew by {growth / MiB:.1f} MiB"
    wait_for(lambda: s.proxy_metric(REFUSED) >= CLIENTS,
             what="every big frame refused and counted")
    assert len(written) == RECORDS
    wait_for(lambda: r.llen("seq") == RECORDS, timeout=30, what="every small write applied")
    assert [int(x) for x in r.lrange("seq", 0, -1)] == list(range(1, RECORDS + 1))
    assert s.proxy.alive() and s.server.alive()
