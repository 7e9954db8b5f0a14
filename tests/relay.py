"""A TCP relay between proxy and server whose connections a test can cut.

    relay = Relay(server_port)          # listens on 127.0.0.1:relay.port
    relay.cut(0.7)                      # close every connection (FIN), refuse new ones for 0.7 s
    relay.cut(0.5, reset=True)          # the same with a TCP RST instead of a FIN
    relay.cut_now(reset=True)           # the same without waiting: then ...
    relay.restore()                     # ... take connections again
    relay.bytes_up                      # bytes relayed proxy -> server so far

One thread runs every socket of the relay (non-blocking, `selectors`);
`cut_now`, `restore` and `stop` hand it a command and wait until it is
done. So a cut is complete when `cut_now` returns: every connection is
closed, with a RST when `reset` is true (SO_LINGER {on, 0}: the kernel
drops the connection and answers with a RST instead of a FIN), and no
thread is left blocked in a `recv` on a closed socket (which on Linux
would hold the socket open, and its FIN or RST back, until data came).

A connection accepted while the relay is cut is closed at once (a RST in
reset mode); the upstream is connected to on accept, and a proxy that
cannot reach it through the relay sees its connection closed.
"""

from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading
import time
from typing import Callable

from conftest import free_port

_CHUNK = 65536
_HIGH_WATER = 1 << 20  # stop reading a side while this much waits for the other
_LINGER_RST = struct.pack("ii", 1, 0)


def _close(sock: socket.socket, reset: bool) -> None:
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Pair:
    """One relayed connection: the proxy's side `down`, the server's `up`."""

    def __init__(self, down: socket.socket, up: socket.socket):
        self.down = down
        self.up = up
        self.to_up = bytearray()  # read from the proxy, not yet sent to the server
        self.to_down = bytearray()  # read from the server, not yet sent to the proxy
        self.masks: dict[str, int] = {}  # selector events registered, per side


class Relay:
    """A TCP relay on 127.0.0.1 in front of `upstream` (a port on 127.0.0.1)."""

    def __init__(self, upstream: int, port: int | None = None):
        self.upstream = upstream
        self.port = port or free_port()
        self.srv = socket.create_server(("127.0.0.1", self.port))
        self.srv.setblocking(False)
        self.open = True  # connections are taken (false while cut)
        self.reset_refused = False  # while cut: refuse with a RST rather than a FIN
        self.stopped = False
        self.cuts = 0  # cuts done, either kind
        self.resets = 0  # of which with a RST
        self.accepted = 0  # connections relayed, in total
        self.bytes_up = 0  # bytes delivered proxy -> server
        self.bytes_down = 0  # bytes delivered server -> proxy
        self._pairs: list[_Pair] = []
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.srv, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    # -- the test's side ----------------------------------------------------

    @property
    def live(self) -> int:
        """Connections being relayed now."""
        return len(self._pairs)

    def cut_now(self, reset: bool = False) -> None:
        """Closes every connection (RST when `reset`, else FIN) and refuses
        new ones until `restore()`. Returns once every socket is closed."""

        def cut() -> None:
            self.open = False
            self.reset_refused = reset
            for pair in self._pairs:
                self._drop(pair, reset)
            self._pairs.clear()
            self.cuts += 1
            if reset:
                self.resets += 1

        self._call(cut)

    def restore(self) -> None:
        """Takes connections again after `cut_now`."""

        def restore() -> None:
            self.open = True

        self._call(restore)

    def cut(self, for_seconds: float, reset: bool = False) -> None:
        """`cut_now(reset)`, then `restore()` after `for_seconds`."""
        self.cut_now(reset)
        time.sleep(for_seconds)
        self.restore()

    def stop(self) -> None:
        """Closes everything and ends the relay's thread."""
        if self.stopped or not self._thread.is_alive():
            self.stopped = True
            return

        def stop() -> None:
            self.stopped = True

        self._call(stop)
        self._thread.join(5)

    # -- the relay's thread ---------------------------------------------------

    def _call(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the relay is stopped")
        done = threading.Event()
        self._commands.put((fn, done))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if not done.wait(timeout):
            raise RuntimeError("the relay's thread did not answer")

    def _run(self) -> None:
        try:
            while not self.stopped:
                for key, events in self._sel.select(timeout=0.1):
                    sock = key.fileobj
                    if sock is self.srv:
                        self._accept()
                    elif sock is self._wake_r:
                        self._drain_wake()
                    else:
                        pair, side = key.data
                        if pair not in self._pairs:
                            continue  # closed earlier in this round
                        self._service(pair, side, events)
                self._run_commands()
        finally:
            for pair in self._pairs:
                self._drop(pair, False)
            self._pairs.clear()
            for s in (self.srv, self._wake_r, self._wake_w):
                s.close()
            self._sel.close()
            self._run_commands()  # let nobody wait for a stopped relay

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _run_commands(self) -> None:
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.srv.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not self.open:
                _close(down, self.reset_refused)
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=1.0)
            except OSError:
                down.close()
                continue
            for s in (down, up):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(down, up)
            self._pairs.append(pair)
            self.accepted += 1
            self._update(pair)

    def _service(self, pair: _Pair, side: str, events: int) -> None:
        sock = pair.down if side == "down" else pair.up
        other = "up" if side == "down" else "down"
        if events & selectors.EVENT_WRITE and not self._send(pair, side):
            self._end(pair)
            return
        if events & selectors.EVENT_READ:
            try:
                data: bytes | None = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._end(pair)
                return
            if data == b"":
                self._end(pair)
                return
            if data:
                (pair.to_up if side == "down" else pair.to_down).extend(data)
                if not self._send(pair, other):
                    self._end(pair)
                    return
        self._update(pair)

    def _send(self, pair: _Pair, side: str) -> bool:
        """Sends what waits for `side` without blocking; false on an error."""
        sock, outbox = (pair.up, pair.to_up) if side == "up" else (pair.down, pair.to_down)
        if not outbox:
            return True
        try:
            n = sock.send(outbox)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        del outbox[:n]
        if side == "up":
            self.bytes_up += n
        else:
            self.bytes_down += n
        return True

    def _update(self, pair: _Pair) -> None:
        """Reads a side while less than the high-water mark waits for the
        other (back pressure, as a direct connection has); writes a side
        while something waits for it."""
        for sock, inbox, outbox, side in ((pair.down, pair.to_up, pair.to_down, "down"),
                                          (pair.up, pair.to_down, pair.to_up, "up")):
            mask = (selectors.EVENT_READ if len(inbox) < _HIGH_WATER else 0) | \
                   (selectors.EVENT_WRITE if outbox else 0)
            registered = pair.masks.get(side, 0)
            if mask == registered:
                continue
            if not mask:
                self._sel.unregister(sock)
            elif not registered:
                self._sel.register(sock, mask, (pair, side))
            else:
                self._sel.modify(sock, mask, (pair, side))
            pair.masks[side] = mask

    def _end(self, pair: _Pair) -> None:
        """One side closed or failed: pass on what is buffered if it can go
        at once, then close both sides (FIN), as a peer closing would."""
        self._send(pair, "up")
        self._send(pair, "down")
        if pair in self._pairs:
            self._pairs.remove(pair)
        self._drop(pair, False)

    def _drop(self, pair: _Pair, reset: bool) -> None:
        for side, s in (("down", pair.down), ("up", pair.up)):
            if pair.masks.get(side):
                self._sel.unregister(s)
                pair.masks[side] = 0
            _close(s, reset)
