"""A stand-in for the syncs proxy: a unix socket listener that records the
bytes of every connection, and cuts them into frames.

Run as a script it binds a socket, runs a command, and prints what arrived as
JSON (used to run the seed example unchanged, with its fixed /tmp/us1, in a
private mount namespace)::

    python3 proxy_stub.py /tmp/us1 -- python3 seed_example.py
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import List, Optional


def cut_frames(data: bytes) -> List[bytes]:
    """Payloads of a byte stream of ``[u32 LE length][payload]`` frames;
    fails on a partial frame at the end."""
    out = []
    pos = 0
    while pos < len(data):
        assert pos + 4 <= len(data), f"partial length prefix at byte {pos}"
        (n,) = struct.unpack_from("<I", data, pos)
        assert pos + 4 + n <= len(data), f"partial frame at byte {pos}: {n} bytes announced"
        out.append(bytes(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def complete_frames(data: bytes) -> int:
    """How many whole frames ``data`` starts with."""
    count = pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            break
        pos += 4 + n
        count += 1
    return count


class StubProxy:
    """Accepts connections on ``path`` and records each one's bytes."""

    def __init__(self, path: str, read: bool = True):
        self.path = str(path)
        self.read = read
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.lock = threading.Lock()
        self.conns: List[bytearray] = []
        self.peers: List[socket.socket] = []
        self.closed: List[threading.Event] = []
        # time.monotonic() of the first bytes read, over all connections.
        self.first_read: Optional[float] = None
        self.marks: List[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            done = threading.Event()
            with self.lock:
                self.conns.append(buf)
                self.peers.append(conn)
                self.closed.append(done)
            if self.read:
                threading.Thread(target=self._read, args=(conn, buf, done), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytearray, done: threading.Event) -> None:
        try:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    if self.first_read is None:
                        self.first_read = time.monotonic()
                    buf += data
        except OSError:
            pass
        finally:
            done.set()

    def connections(self) -> List[bytes]:
        with self.lock:
            return [bytes(b) for b in self.conns]

    def wait_frames(self, count: int, timeout: float = 5.0) -> List[bytes]:
        """Waits until ``count`` whole frames arrived (over all connections)
        and returns every payload, connection by connection."""
        deadline = time.monotonic() + timeout
        while True:
            conns = self.connections()
            if sum(complete_frames(c) for c in conns) >= count:
                return [p for c in conns for p in cut_frames(c)]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} frames, got {[cut_frames(c) for c in conns]!r}"
                )
            time.sleep(0.005)

    def mark(self) -> bytes:
        """Opens a marker connection, sends a token on it, closes it and
        returns the token: see `before_mark`."""
        token = b"mark:" + os.urandom(16).hex().encode()
        with self.lock:
            self.marks.append(token)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as marker:
            marker.connect(self.path)
            marker.sendall(token)
        return token

    def before_mark(self, token: bytes) -> Optional[List[bytes]]:
        """The payloads of every connection made before `mark()` returned
        `token`, once each of them has been closed by its peer; None until
        then. A connection still in the listen backlog when `mark()` was
        called is accepted before the marker (the backlog is a queue), so it
        is waited for too: once a client has exited, nothing more can arrive
        from it."""
        assert self.read, "before_mark() needs a reading stub"
        with self.lock:
            at = next((i for i, c in enumerate(self.conns) if bytes(c) == token), None)
            if at is None or not all(e.is_set() for e in self.closed[:at]):
                return None
            earlier = [bytes(c) for c in self.conns[:at] if bytes(c) not in self.marks]
        return [p for c in earlier for p in cut_frames(c)]

    def close(self) -> None:
        """The proxy goes away: listener, socket file and connections."""
        self.sock.close()
        with self.lock:
            for peer in self.peers:
                try:
                    peer.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                peer.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def main(argv: List[str]) -> int:
    sep = argv.index("--")
    path, command = argv[1], argv[sep + 1 :]
    if os.path.exists(path):
        os.unlink(path)
    proxy = StubProxy(path)
    rc = subprocess.run(command).returncode
    # The command has exited, so its connections are closed: wait for EOF.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with proxy.lock:
            if all(e.is_set() for e in proxy.closed):
                break
        time.sleep(0.01)
    print(json.dumps({"rc": rc, "connections": [c.hex() for c in proxy.connections()]}))
    proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
