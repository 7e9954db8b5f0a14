"""Buffering (buffer=, linger=, flush(), at exit, before sync, fork) and the
connect policy (connect_timeout=) of IncClient, Client and AsyncClient."""

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import intc
import pytest

from conftest import wait_for
from proxy_stub import StubProxy, complete_frames, cut_frames
from test_client import held, sync_frame  # noqa: F401 (fixture)
from test_seed import resp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
PROXY_BIN = os.path.join(ROOT, "target", "release", "proxy")


def frames_now(proxy):
    return sum(complete_frames(c) for c in proxy.connections())


def drained(proxy):
    """The payloads of every connection made so far, once each has been
    read to its end: after the client exited, nothing more can arrive."""
    mark = proxy.mark()
    found = []

    def done():
        got = proxy.before_mark(mark)
        if got is not None:
            found.append(got)
        return got is not None

    wait_for(done, timeout=10, what="every connection accepted and closed by its peer")
    return found[0]


def setk(value):
    return b"6379,0\x01" + resp(b"set", b"k", value)


def test_options_and_their_defaults():
    c = intc.IncClient()
    assert (c.buffer, c.linger, c.connect_timeout) == (0, None, None)
    b = intc.IncClient(buffer=True)
    assert (b.buffer, b.linger) == (intc.DEFAULT_BUFFER_SIZE, intc.DEFAULT_LINGER)
    assert intc.DEFAULT_BUFFER_SIZE == 65536 and intc.DEFAULT_LINGER == 0.001
    assert repr(b) == "IncClient(send_timeout=1.0, buffer=65536, linger=0.001)"
    s = intc.IncClient(0.5, buffer=4096, linger=0.01, connect_timeout=2.5)
    assert (s.send_timeout, s.buffer, s.linger, s.connect_timeout) == (0.5, 4096, 0.01, 2.5)
    assert intc.IncClient(buffer=False).buffer == 0
    assert intc.IncClient(buffer=0).buffer == 0
    cl = intc.Client("/nonexistent/x.sock", buffer=1000, linger=0.002, connect_timeout=1)
    assert (cl.buffer, cl.linger, cl.connect_timeout) == (1000, 0.002, 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"buffer": -1}, "buffer must be"),
        ({"buffer": "big"}, "buffer must be"),
        ({"buffer": 1.5}, "buffer must be"),
        ({"buffer": True, "linger": 0}, "linger must be"),
        ({"buffer": True, "linger": 3600.0}, "linger"),
        ({"connect_timeout": 0}, "connect_timeout must be"),
        ({"connect_timeout": -1.0}, "connect_timeout must be"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(intc.InvalidOperation, match=match):
        intc.IncClient(**kwargs)


def test_buffered_frames_arrive_only_when_flushed(proxy):
    c = intc.Client(proxy.path, buffer=True, linger=5.0)
    for v in (b"1", b"2", b"3"):
        c.redis(6379, 0, "set", "k", v)
    time.sleep(0.2)
    assert frames_now(proxy) == 0
    stats = c.stats()
    assert (stats["frames"], stats["buffered"], stats["pending"], stats["flushes"]) == (0, 3, 3, 0)
    c.flush()
    assert proxy.wait_frames(3) == [setk(b"1"), setk(b"2"), setk(b"3")]
    stats = c.stats()
    assert (stats["frames"], stats["buffered"], stats["pending"], stats["flushes"]) == (3, 3, 0, 1)
    assert stats["bytes"] == 3 * (4 + len(setk(b"1")))
    c.close()


def test_the_linger_bounds_how_long_a_frame_waits(proxy):
    c = intc.IncClient(buffer=True, linger=0.1)
    start = time.monotonic()
    c.redis_one(proxy.path, 6379, 0, ("set", "k", "late"))
    # Still buffered while the linger runs (checked only if this thread
    # really looked before the linger was over).
    seen = frames_now(proxy)
    if time.monotonic() - start < 0.09:
        assert seen == 0
    assert proxy.wait_frames(1, timeout=5) == [setk(b"late")]
    # When the stub read it, not when this thread looked: written once the
    # linger was over, without a flush.
    waited = proxy.first_read - start
    assert 0.09 <= waited < 2, waited


def test_a_full_buffer_is_written_without_waiting(proxy):
    one = 4 + len(setk(b"00"))
    c = intc.IncClient(buffer=4 * one, linger=5.0)
    for i in range(4):
        c.redis_one(proxy.path, 6379, 0, ("set", "k", f"{i:02}"))
    assert proxy.wait_frames(4, timeout=2) == [setk(f"{i:02}".encode()) for i in range(4)]
    assert c.stats(proxy.path)["flushes"] == 1
    # Larger than the buffer: written at once, after what was buffered.
    c.redis_one(proxy.path, 6379, 0, ("set", "k", "small"))
    c.redis_one(proxy.path, 6379, 0, ("set", "k", b"x" * 1000))
    assert proxy.wait_frames(6, timeout=2)[4:] == [setk(b"small"), setk(b"x" * 1000)]


def test_threads_never_interleave_buffered_frames(proxy):
    c = intc.IncClient(buffer=8192, linger=0.002)

    def work(t):
        for i in range(200):
            c.redis_one(proxy.path, 6379, t, ("set", f"{t}:{i}", bytes([65 + t]) * (i * 37)))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    payloads = proxy.wait_frames(800, timeout=30)
    seen = set()
    for p in payloads:
        header, rest = p.split(b"\x01", 1)
        t = int(header.split(b",")[1])
        key = rest.split(b"\r\n")[4]
        kt, i = map(int, key.decode().split(":"))
        assert kt == t and rest == resp(b"set", key, bytes([65 + t]) * (i * 37))
        seen.add((t, i))
    assert len(seen) == 800
    assert c.stats(proxy.path)["flushes"] < 800


def test_sync_writes_the_buffer_first(held):
    held.release()
    c = intc.Client(held.path, buffer=True, linger=5.0)
    c.redis(6379, 0, "set", "k", "a")
    c.redis(6379, 0, "set", "k", "b")
    assert c.sync(timeout=5) == 0
    payloads = held.frames(3)
    assert payloads[:2] == [setk(b"a"), setk(b"b")]
    assert sync_frame(payloads[2])
    assert c.stats()["pending"] == 0


def test_close_flushes(proxy):
    with intc.Client(proxy.path, buffer=True, linger=5.0) as c:
        c.redis(6379, 0, "set", "k", "in-with")
    assert proxy.wait_frames(1, timeout=2) == [setk(b"in-with")]


def test_async_client_buffers_and_flushes(proxy):
    async def main():
        c = intc.AsyncClient(proxy.path, buffer=True, linger=5.0)
        assert c.buffer == intc.DEFAULT_BUFFER_SIZE and c.linger == 5.0
        for i in range(3):
            await c.redis(6379, 0, "set", "k", str(i))
        await asyncio.sleep(0.1)
        assert frames_now(proxy) == 0
        await c.flush()
        assert (await c.stats())["pending"] == 0
        await c.redis(6379, 0, "set", "k", "closing")
        await c.close()

    asyncio.run(main())
    assert proxy.wait_frames(4, timeout=2) == [setk(b"0"), setk(b"1"), setk(b"2"), setk(b"closing")]


SCRIPT = textwrap.dedent(
    """
    import os, sys
    import intc
    path, how = sys.argv[1], sys.argv[2]
    c = intc.Client(path, buffer=True, linger=5.0)
    ic = intc.IncClient(buffer=True, linger=5.0)
    c.redis(6379, 0, "set", "k", "client")
    ic.redis_one(path, 6379, 0, ("set", "k", "incclient"))
    assert c.stats()["pending"] == 1
    if how == "crash":
        os._exit(0)
    """
)


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_buffered_frames_are_written_at_exit_not_after_a_crash(proxy, how):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, proxy.path, how], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    got = sorted(drained(proxy))
    if how == "exit":
        assert got == [setk(b"client"), setk(b"incclient")]
    else:
        # os._exit: no atexit, no flush; the frames were only buffered.
        assert got == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_writes_its_parents_buffer(proxy):
    c = intc.IncClient(buffer=True, linger=5.0)
    c.redis_one(proxy.path, 6379, 0, ("set", "who", "parent-1"))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            c.redis_one(proxy.path, 6379, 0, ("set", "who", "child"))
            c.flush(proxy.path)
            code = 0 if c.stats(proxy.path)["frames"] == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert c.stats(proxy.path)["pending"] == 1
    c.flush(proxy.path)
    proxy.wait_frames(2)
    conns = [cut_frames(x) for x in proxy.connections()]
    assert conns == [
        [b"6379,0\x01" + resp(b"set", b"who", b"parent-1")],
        [b"6379,0\x01" + resp(b"set", b"who", b"child")],
    ]


def test_connect_timeout_waits_for_a_proxy_that_comes_up(tmp_path):
    path = str(tmp_path / "late.sock")
    sending = threading.Event()
    started = []
    up = []

    def start_later():
        # The proxy comes up 0.3 s after the call began, not 0.3 s after
        # this thread did.
        sending.wait(10)
        time.sleep(0.3)
        up.append(time.monotonic())
        started.append(StubProxy(path))

    threading.Thread(target=start_later).start()
    c = intc.Client(path, connect_timeout=10)
    t0 = time.monotonic()
    sending.set()
    c.redis(6379, 0, "set", "k", "waited")
    done = time.monotonic()
    waited = done - t0
    try:
        assert 0.25 <= waited < 5, waited
        assert done >= up[0], "returned before the proxy was listening"
        assert started[0].wait_frames(1) == [setk(b"waited")]
        assert c.stats()["connects"] == 1
    finally:
        started[0].close()


def test_connect_timeout_gives_up(tmp_path):
    path = str(tmp_path / "never.sock")
    c = intc.Client(path, connect_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(intc.ProxyUnavailable, match="after waiting 300ms"):
        c.redis(6379, 0, "set", "k", "v")
    assert 0.3 <= time.monotonic() - t0 < 3
    # The default fails fast.
    t0 = time.monotonic()
    with pytest.raises(intc.ProxyUnavailable):
        intc.Client(path).redis(6379, 0, "ping")
    assert time.monotonic() - t0 < 0.2


@pytest.mark.skipif(not os.path.exists(PROXY_BIN), reason="no release proxy binary")
def test_a_real_proxy_started_late_spools_buffered_frames(tmp_path):
    """The whole path with the real proxy: the client waits for it to come
    up, buffers, and sync confirms every frame is in the proxy's spool."""
    path = str(tmp_path / "us1")
    spool = tmp_path / "spool"
    c = intc.Client(path, connect_timeout=20, buffer=True, linger=0.005)
    sending = threading.Event()
    procs = []

    def start_later():
        # Absent for 0.3 s after the first send began.
        sending.wait(10)
        time.sleep(0.3)
        procs.append(
            subprocess.Popen(
                [PROXY_BIN, "-u", path, "-d", "127.0.0.1:9", "--spool-dir", str(spool)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )

    threading.Thread(target=start_later).start()
    try:
        sending.set()
        for i in range(500):
            c.redis(6379, 0, "set", f"k{i}", str(i))
        assert c.sync(timeout=20) == 0
        stats = c.stats()
        assert (stats["frames"], stats["buffered"], stats["pending"], stats["dropped"]) == (
            500, 500, 0, 0,
        )
        assert stats["flushes"] < 500
        c.close()
    finally:
        for p in procs:
            # Not a test of the proxy's shutdown (it may wait for its
            # unreachable server): stop it outright.
            p.kill()
            p.wait(10)
    shutil.rmtree(spool, ignore_errors=True)
