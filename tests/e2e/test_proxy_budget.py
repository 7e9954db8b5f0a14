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

And with a budget of one frame: a client waiting for its share is shown
(`syncs_proxy_frame_budget_waiting`) and read once the budget is free; at a
SIGTERM, a frame that waits is cut short, counted and logged like the one
that holds the budget (before, it was dropped without a word).
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time

from conftest import frame, resp, wait_for
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


WAITING = "syncs_proxy_frame_budget_waiting"
# A budget of one 1 MiB frame: two frames of 600 KiB values do not fit in it
# together, so one client's waits while the other's is read.
ONE_FRAME = ["--max-frame", "1MiB", "--frame-budget", "1MiB"]
VALUE = 600 * 1024


def big_set(key: bytes) -> bytes:
    return frame(b"6379,0\x01" + resp(b"SET", key, b"v" * VALUE))


class HalfSent:
    """A client connection that sends the first `head` bytes of `data`, and
    the rest once `finish()` is called, in a thread of its own: the proxy may
    not read it meanwhile (a client waiting for the budget blocks in
    `sendall`), and which of two clients waits is the proxy's choice."""

    def __init__(self, path: str, data: bytes, head: int):
        self.errors: list[str] = []
        self.head_sent = threading.Event()
        self.go = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.thread = threading.Thread(target=self._send, args=(data, head), daemon=True)
        self.thread.start()

    def _send(self, data: bytes, head: int):
        try:
            self.sock.sendall(data[:head])
            self.head_sent.set()
            self.go.wait(60)
            self.sock.sendall(data[head:])
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(repr(e))

    def finish(self):
        self.go.set()

    def close(self):
        """Ends the connection; a send still blocked fails at once."""
        self.go.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(60)
        self.sock.close()


def test_a_client_waiting_for_the_budget_is_shown_and_read_once_it_is_free(syncs_factory, redis_target):
    """Two clients each send the first 300 KiB of a 600 KiB frame into a
    budget of one frame: one of them holds the budget and is read, the
    other waits (`syncs_proxy_frame_budget_waiting` 1). Once the first
    frame is complete the second client is read, and both writes arrive."""
    from conftest import default_rules

    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=ONE_FRAME)
    r = redis_target.client(0)
    clients = [HalfSent(s.socket, big_set(key), 300 * 1024) for key in (b"big:1", b"big:2")]
    try:
        wait_for(lambda: s.proxy_metric(WAITING) == 1, what="one client waiting for the budget")
        for c in clients:
            c.finish()
        wait_for(lambda: s.proxy_metric(WAITING) == 0, what="no client waiting")
        wait_for(lambda: r.strlen("big:1") == VALUE and r.strlen("big:2") == VALUE, timeout=30,
                 what="both large writes applied")
        for c in clients:
            c.thread.join(60)
    finally:
        for c in clients:
            c.close()
    assert not any(c.errors for c in clients), [c.errors for c in clients]
    assert s.proxy_metric('syncs_proxy_frames_refused_total{reason="truncated"}') == 0


def test_what_a_client_waiting_for_the_budget_wrote_is_taken_at_a_stop(syncs_factory, redis_target):
    """The proxy stops (SIGTERM) while one client's 1 MiB frame holds the
    whole budget, half sent, and another client, which wrote a 100 KiB frame
    and a small one behind it, waits for its share. The first frame cannot
    be whole: it is counted cut short and logged. The waiting client is
    read once the first connection ends, and both its writes arrive. Before,
    they were dropped without a word."""
    from conftest import default_rules

    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=ONE_FRAME)
    r = redis_target.client(0)
    # A frame of --max-frame exactly: it takes the whole budget.
    def payload(n: int) -> bytes:
        return b"6379,0\x01" + resp(b"SET", b"holder", b"h" * n)

    n = MiB - 100
    n += MiB - len(payload(n))
    holder = HalfSent(s.socket, frame(payload(n)), 300 * 1024)
    behind = frame(b"6379,0\x01" + resp(b"SET", b"behind", b"ok"))
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # More than a socket's buffer: the proxy has read its length and
        # holds the budget once this much is sent.
        assert holder.head_sent.wait(30)
        waiting.settimeout(30)
        waiting.connect(s.socket)
        waiting.sendall(frame(b"6379,0\x01" + resp(b"SET", b"waiter", b"w" * (100 * 1024))) + behind)
        wait_for(lambda: s.proxy_metric(WAITING) == 1, what="the second client waiting for the budget")
        assert s.proxy.stop(signal.SIGTERM) == 0
    finally:
        holder.close()
        waiting.close()
    wait_for(lambda: r.strlen("waiter") == 100 * 1024 and r.get("behind") == b"ok",
             what="the waiting client's writes applied")
    assert not r.exists("holder")
    log = s.proxy.text()
    assert "connection ended in the middle of a frame" in log, log
