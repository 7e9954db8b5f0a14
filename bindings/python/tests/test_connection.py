"""Connection behaviour: proxy down, restarts, timeouts, threads, fork."""

import os
import socket
import threading
import time

import intc
import pytest
from intc_mg import mg_insert_one

from proxy_stub import StubProxy, cut_frames
from test_seed import resp


def test_the_installed_extension_is_used():
    import intc._native as native

    assert "site-packages" in native.__file__ or "dist-packages" in native.__file__, native.__file__
    assert intc.__version__ == "0.1.0"


def test_no_proxy_raises_proxy_unavailable_at_once(tmp_path, client):
    path = str(tmp_path / "nobody.sock")
    start = time.monotonic()
    with pytest.raises(intc.ProxyUnavailable, match="proxy unavailable: cannot connect to") as info:
        client.redis_one(path, 6379, 0, ("ping",))
    assert time.monotonic() - start < 0.5
    assert isinstance(info.value, intc.IntcError)
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(intc.ProxyUnavailable):
        client.mongo_exec(path, "d", "c", mg_insert_one({"a": 1}))
    # A socket file without a listener behind it.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    with pytest.raises(intc.ProxyUnavailable, match="refused"):
        client.redis_one(path, 6379, 0, ("ping",))
    assert client.stats(path) == {
        "frames": 0, "bytes": 0, "errors": 3, "connects": 0, "reconnects": 0,
        "buffered": 0, "pending": 0, "flushes": 0, "dropped": 0,
    }


def test_reconnects_after_the_proxy_restarts(tmp_path, client):
    path = str(tmp_path / "us1")
    first = StubProxy(path)
    client.redis_one(path, 6379, 0, ("set", "k", "1"))
    assert first.wait_frames(1) == [b"6379,0\x01" + resp(b"set", b"k", b"1")]
    first.close()
    with pytest.raises(intc.ProxyUnavailable):
        client.redis_one(path, 6379, 0, ("set", "k", "2"))
    second = StubProxy(path)
    try:
        client.redis_one(path, 6379, 0, ("set", "k", "3"))
        assert second.wait_frames(1) == [b"6379,0\x01" + resp(b"set", b"k", b"3")]
        stats = client.stats(path)
        assert (stats["frames"], stats["errors"], stats["connects"], stats["reconnects"]) == (2, 1, 2, 1)
    finally:
        second.close()


def test_a_stalled_proxy_times_out(tmp_path):
    path = str(tmp_path / "us1")
    stalled = StubProxy(path, read=False)
    ic = intc.IncClient(send_timeout=0.1)
    assert ic.send_timeout == 0.1
    try:
        start = time.monotonic()
        with pytest.raises(intc.ProxyUnavailable, match="send timeout"):
            for _ in range(100):
                ic.redis_one(path, 6379, 0, ("set", "k", b"x" * (1 << 20)))
        assert time.monotonic() - start < 10
        assert ic.stats(path)["errors"] == 1
        assert intc.stats(path)["frames"] == 0, "own connections, not the shared ones"
    finally:
        stalled.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_bad_send_timeouts(bad):
    with pytest.raises(intc.InvalidOperation, match="send_timeout must be a positive number"):
        intc.IncClient(send_timeout=bad)


def test_clients_share_the_process_connections(proxy):
    a, b = intc.IncClient(), intc.IncClient()
    a.redis_one(proxy.path, 6379, 0, ("ping",))
    b.redis_one(proxy.path, 6379, 0, ("ping",))
    proxy.wait_frames(2)
    assert len(proxy.connections()) == 1
    assert a.stats(proxy.path) == intc.stats(proxy.path)
    assert intc.stats(proxy.path)["frames"] == 2
    assert intc.IncClient(send_timeout=None).send_timeout is None


def test_threads_never_interleave_frames(proxy, client):
    threads, per_thread = 8, 50

    def work(t):
        for i in range(per_thread):
            client.redis_one(proxy.path, 6379, t, ("set", f"{t}:{i}", bytes([65 + t]) * (i * 4099)))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    payloads = proxy.wait_frames(threads * per_thread, timeout=30)
    seen = set()
    for p in payloads:
        header, rest = p.split(b"\x01", 1)
        t = int(header.split(b",")[1])
        key = rest.split(b"\r\n")[4].decode()
        kt, i = map(int, key.split(":"))
        assert kt == t
        assert rest == resp(b"set", key.encode(), bytes([65 + t]) * (i * 4099))
        seen.add((t, i))
    assert len(seen) == threads * per_thread


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_its_own_connection(proxy, client):
    client.redis_one(proxy.path, 6379, 0, ("set", "who", "parent-1"))
    proxy.wait_frames(1)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            client.redis_one(proxy.path, 6379, 0, ("set", "who", "child"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    client.redis_one(proxy.path, 6379, 0, ("set", "who", "parent-2"))
    proxy.wait_frames(3)
    conns = [cut_frames(c) for c in proxy.connections()]
    assert len(conns) == 2
    assert conns[0] == [
        b"6379,0\x01" + resp(b"set", b"who", b"parent-1"),
        b"6379,0\x01" + resp(b"set", b"who", b"parent-2"),
    ]
    assert conns[1] == [b"6379,0\x01" + resp(b"set", b"who", b"child")]


def test_stats_has_the_counters(proxy, client):
    keys = ["frames", "bytes", "errors", "connects", "reconnects",
            "buffered", "pending", "flushes", "dropped"]
    assert set(intc.stats()) == set(keys)
    assert client.stats(str(proxy.path) + ".unused") == dict.fromkeys(keys, 0)
