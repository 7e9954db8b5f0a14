"""intc.Client and intc.AsyncClient against stub listeners; mypy --strict."""

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import intc
import pytest
from intc_mg import mg_delete_many, mg_insert_one

from proxy_stub import StubProxy, cut_frames
from test_seed import resp

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.join(os.path.dirname(HERE), "python")


class HeldProxy:
    """A listener that accepts but reads nothing until ``release()``; then
    it records every byte (and answers SYNC requests)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.go = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.peers = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.peers.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        data = bytearray()
        with self.lock:
            self.conns.append(data)
        self.go.wait()
        pending = b""
        try:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    return
                with self.lock:
                    data += chunk
                pending += chunk
                while len(pending) >= 4:
                    (n,) = struct.unpack_from("<I", pending)
                    if len(pending) < 4 + n:
                        break
                    payload, pending = pending[4 : 4 + n], pending[4 + n :]
                    if payload[:2] == b"\x03S":
                        reply = b"\x03S" + payload[2:10] + struct.pack("<I", 0)
                        conn.sendall(struct.pack("<I", len(reply)) + reply)
        except OSError:
            return

    def release(self):
        self.go.set()

    def frames(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                conns = [bytes(c) for c in self.conns]
            try:
                out = [p for c in conns for p in cut_frames(c)]
            except AssertionError:
                out = []
            if len(out) >= count:
                return out
            assert time.monotonic() < deadline, f"got {len(out)} frames, expected {count}"
            time.sleep(0.005)

    def close(self):
        self.go.set()
        self.sock.close()
        for p in self.peers:
            try:
                p.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            p.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def held(tmp_path):
    p = HeldProxy(tmp_path / "held.sock")
    yield p
    p.close()


def sync_frame(payload_bytes):
    return payload_bytes[:2] == b"\x03S"


# -- Client ------------------------------------------------------------------


def test_client_sends_exact_bytes_in_order(proxy):
    op = mg_insert_one({"a": 1})
    with intc.Client(proxy.path) as c:
        assert c.path == proxy.path and not c.closed
        assert c.send_timeout == intc.DEFAULT_SEND_TIMEOUT
        c.redis(6379, 1, "set", "a", "bcd")
        c.transaction(6379, 2, [("set", "cool", "hello"), ("incr", "n")])
        c.mongo("db", "coll", op)
        c.redis(6380, 0, "set", b"bin\x00", 42, 1.5, bytearray(b"\xff"), memoryview(b"m"))
        assert c.stats()["frames"] >= 4
    assert c.closed
    assert proxy.wait_frames(4) == [
        b"6379,1\x01" + resp(b"set", b"a", b"bcd"),
        b"6379,2\x01" + resp(b"set", b"cool", b"hello") + resp(b"incr", b"n"),
        b"\x02db\x00coll\x00" + op,
        b"6380,0\x01" + resp(b"set", b"bin\x00", b"42", b"1.5", b"\xff", b"m"),
    ]


def test_client_accepts_a_pathlike(proxy):
    import pathlib

    c = intc.Client(pathlib.Path(proxy.path))
    c.redis(6379, 0, "ping")
    assert proxy.wait_frames(1) == [b"6379,0\x01" + resp(b"ping")]
    assert repr(c) == f"<intc.Client {proxy.path!r}>"


def test_client_errors_are_the_intc_exceptions(tmp_path, proxy):
    nobody = intc.Client(str(tmp_path / "nobody.sock"))
    with pytest.raises(intc.ProxyUnavailable, match="cannot connect"):
        nobody.redis(6379, 0, "ping")
    with pytest.raises(intc.ProxyUnavailable):
        nobody.sync(timeout=0.5)
    c = intc.Client(proxy.path)
    with pytest.raises(intc.InvalidOperation, match="MULTI"):
        c.redis(6379, 0, "multi")
    with pytest.raises(intc.InvalidOperation):
        c.redis(6379, 0)
    with pytest.raises(intc.InvalidOperation, match="bool"):
        c.redis(6379, 0, "set", "k", True)
    with pytest.raises(intc.InvalidOperation):
        c.transaction(6379, 0, [])
    with pytest.raises(intc.InvalidOperation):
        c.mongo("db", "coll", b"not bson")
    with pytest.raises(intc.InvalidOperation, match="send_timeout"):
        intc.Client(proxy.path, send_timeout=0)
    with pytest.raises(intc.InvalidOperation, match="path"):
        intc.Client(42)  # type: ignore[arg-type]
    with pytest.raises(intc.FrameTooLarge):
        c.redis(6379, 0, "set", "k", b"x" * (intc.MAX_FRAME + 1))
    # A timeout no duration can hold is refused like any other bad one.
    for bad in (0, -1.0, float("nan"), float("inf"), 1e30):
        with pytest.raises(intc.InvalidOperation, match="timeout"):
            c.sync(timeout=bad)
    c.close()
    c.close()
    with pytest.raises(intc.InvalidOperation, match="closed"):
        c.redis(6379, 0, "ping")
    with pytest.raises(intc.InvalidOperation, match="closed"):
        with c:
            pass


def test_client_sync_waits_for_the_proxy(held):
    c = intc.Client(held.path, send_timeout=None)
    assert c.send_timeout is None
    c.redis(6379, 0, "set", "k", "v")
    with pytest.raises(intc.ProxyUnavailable):
        c.sync(timeout=0.2)  # the proxy reads nothing yet: no answer
    c2 = intc.Client(held.path, send_timeout=None)
    c2.redis(6379, 0, "set", "k", "w")
    held.release()
    # The first connection is unconfirmed after the failed sync, so use a
    # fresh client with its own connections.
    assert c2.sync(timeout=5) == 0
    payloads = held.frames(3)
    assert b"6379,0\x01" + resp(b"set", b"k", b"w") in payloads


# -- AsyncClient -------------------------------------------------------------


def test_async_client_keeps_order_and_bytes(proxy):
    async def main():
        async with intc.AsyncClient(proxy.path) as c:
            await asyncio.gather(
                *(c.redis(6379, 0, "set", f"k{i}", b"v" * i) for i in range(200))
            )
            await c.transaction(6379, 3, [("incr", "a"), ("incr", "b")])
            await c.mongo("db", "coll", mg_delete_many({"key": "value"}))
            stats = await c.stats()
            assert stats["frames"] >= 202
            assert stats["errors"] == 0
        assert c.closed

    asyncio.run(main())
    payloads = proxy.wait_frames(202)
    assert payloads[:200] == [
        b"6379,0\x01" + resp(b"set", f"k{i}".encode(), b"v" * i) for i in range(200)
    ]
    assert payloads[200] == b"6379,3\x01" + resp(b"incr", b"a") + resp(b"incr", b"b")
    assert payloads[201] == b"\x02db\x00coll\x00" + mg_delete_many({"key": "value"})


def test_async_client_does_not_block_the_loop(held):
    big = b"x" * (8 << 20)  # more than the socket buffers hold

    async def main():
        c = intc.AsyncClient(held.path, send_timeout=None)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        first = asyncio.create_task(c.redis(6379, 0, "set", "big", big))
        second = asyncio.create_task(c.redis(6379, 0, "set", "after", "1"))
        await asyncio.sleep(0.3)
        # The write waits on the proxy, yet the loop kept running.
        assert not first.done() and not second.done()
        assert ticks >= 10, ticks
        held.release()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert await c.sync() == 0
        t.cancel()
        await c.close()

    asyncio.run(main())
    payloads = held.frames(3)
    assert payloads[0] == b"6379,0\x01" + resp(b"set", b"big", big)
    assert payloads[1] == b"6379,0\x01" + resp(b"set", b"after", b"1")
    assert sync_frame(payloads[2])


def test_async_client_raises_the_intc_exceptions(tmp_path):
    stalled = StubProxy(tmp_path / "stalled.sock", read=False)

    async def main():
        c = intc.AsyncClient(stalled.path, send_timeout=0.2)
        assert c.send_timeout == 0.2
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        start = time.monotonic()
        with pytest.raises(intc.ProxyUnavailable, match="send timeout"):
            for _ in range(100):
                await c.redis(6379, 0, "set", "k", b"x" * (1 << 20))
        assert time.monotonic() - start < 10
        assert ticks >= 5
        t.cancel()
        with pytest.raises(intc.InvalidOperation, match="MULTI"):
            await c.redis(6379, 0, "MULTI")
        with pytest.raises(intc.InvalidOperation):
            await c.transaction(6379, 0, [])
        nobody = intc.AsyncClient(str(tmp_path / "nobody.sock"))
        with pytest.raises(intc.ProxyUnavailable, match="cannot connect"):
            await nobody.mongo("db", "coll", mg_insert_one({"a": 1}))
        with pytest.raises(intc.IntcError):
            await nobody.sync(timeout=0.5)
        await c.close()
        with pytest.raises(intc.InvalidOperation, match="closed"):
            await c.redis(6379, 0, "ping")

    try:
        asyncio.run(main())
    finally:
        stalled.close()


def test_a_cancelled_async_call_is_not_overtaken(held):
    async def main():
        c = intc.AsyncClient(held.path, send_timeout=None)
        first = asyncio.create_task(c.redis(6379, 0, "set", "first", b"x" * (8 << 20)))
        await asyncio.sleep(0.1)
        first.cancel()
        second = asyncio.create_task(c.redis(6379, 0, "set", "second", "2"))
        await asyncio.sleep(0.1)
        assert not second.done()
        held.release()
        await asyncio.wait_for(second, 10)
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())
    payloads = held.frames(2)
    assert [p.split(b"\r\n")[4] for p in payloads[:2]] == [b"first", b"second"]


def test_an_async_client_works_in_a_second_event_loop(proxy):
    c = intc.AsyncClient(proxy.path)
    asyncio.run(c.redis(6379, 0, "set", "loop", "1"))
    asyncio.run(c.redis(6379, 0, "set", "loop", "2"))
    assert proxy.wait_frames(2) == [
        b"6379,0\x01" + resp(b"set", b"loop", b"1"),
        b"6379,0\x01" + resp(b"set", b"loop", b"2"),
    ]
    assert repr(c) == f"<intc.AsyncClient {proxy.path!r}>"


# -- typing ------------------------------------------------------------------


def test_the_package_passes_mypy_strict():
    pytest.importorskip("mypy")
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", PACKAGE_DIR],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout
