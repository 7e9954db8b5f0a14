"""``Client`` and ``AsyncClient``: clients bound to one proxy socket.

Both are thin layers over the native ``IncClient`` (the same frames, checks,
connections and exceptions); they only remember the socket path, and
``AsyncClient`` runs each blocking call in the event loop's default executor
so that the loop never waits on the proxy.
"""

from __future__ import annotations

import functools
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union

if TYPE_CHECKING:
    # Imported where an AsyncClient first needs it: asyncio is ~30 ms of
    # an application's start, and most applications use Client or IncClient.
    import asyncio

from intc._errors import InvalidOperation
from intc._native import DEFAULT_LINGER, DEFAULT_SEND_TIMEOUT, IncClient

__all__ = ["AsyncClient", "Client"]

Arg = Union[str, bytes, bytearray, memoryview, int, float]
Command = Union[Tuple[Arg, ...], List[Arg]]
Commands = Union[Tuple[Command, ...], List[Command]]
Path = Union[str, "os.PathLike[str]"]

_C = TypeVar("_C", bound="Client")
_A = TypeVar("_A", bound="AsyncClient")
_T = TypeVar("_T")


def _fspath(path: Path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidOperation(
            "path must be a str or os.PathLike naming the proxy's unix socket, "
            f"not {type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidOperation("path must be a str or os.PathLike[str]")
    return text


class Client:
    """A client of the proxy listening on the unix socket ``path``.

    >>> with intc.Client("/tmp/us1") as c:
    ...     c.redis(6379, 0, "set", "k", "v")
    ...     c.transaction(6379, 0, [("incr", "n"), ("expire", "n", 60)])
    ...     c.mongo("db", "coll", mg_insert_one({"a": 1})
    ...     assert c.sync() == 0      # all written frames are in the spool

    Each call writes one whole frame and returns once it is written; errors
    are raised at once as ``ProxyUnavailable``, ``InvalidOperation`` or
    ``FrameTooLarge`` (all ``IntcError``). Thread-safe: frames from several
    threads are never interleaved. After ``close()`` (or the ``with`` block)
    every call raises ``InvalidOperation``.

    Options, as for ``IncClient``: ``send_timeout`` (seconds, or ``None`` to
    wait forever); ``connect_timeout`` (``None``: fail fast when the proxy
    is down; seconds: wait up to that long for it); ``buffer`` (``True`` or
    a size in bytes: several frames per write, a call returns once its
    frame is buffered) and ``linger`` (the longest a buffered frame waits,
    seconds). ``close()`` and the end of the ``with`` block flush.
    """

    def __init__(
        self,
        path: Path,
        send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT,
        *,
        connect_timeout: Optional[float] = None,
        buffer: Union[bool, int] = False,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._path = _fspath(path)
        self._native: Optional[IncClient] = IncClient(
            send_timeout, connect_timeout=connect_timeout, buffer=buffer, linger=linger
        )

    @property
    def path(self) -> str:
        """The proxy's socket path."""
        return self._path

    @property
    def send_timeout(self) -> Optional[float]:
        """The send timeout in seconds (``None``: waits forever)."""
        return self._client().send_timeout

    @property
    def connect_timeout(self) -> Optional[float]:
        """Seconds to wait for the proxy to come up (``None``: fail fast)."""
        return self._client().connect_timeout

    @property
    def buffer(self) -> int:
        """The buffer size in bytes (0: every call writes its frame)."""
        return self._client().buffer

    @property
    def linger(self) -> Optional[float]:
        """The longest a buffered frame waits, in seconds (``None``: no
        buffering)."""
        return self._client().linger

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._native is None

    def _client(self) -> IncClient:
        native = self._native
        if native is None:
            raise InvalidOperation(f"the intc client of {self._path} is closed")
        return native

    def redis(self, port: int, db: int, *args: Arg) -> None:
        """Sends one Redis command, ``args`` being its name and arguments:
        ``c.redis(6379, 0, "set", "k", b"v")``."""
        self._client().redis_one(self._path, port, db, args)

    def transaction(self, port: int, db: int, cmds: Commands) -> None:
        """Sends several commands applied as one MULTI/EXEC transaction."""
        self._client().redis_many(self._path, port, db, cmds)

    def mongo(self, db: str, coll: str, op: Union[bytes, bytearray]) -> None:
        """Sends a MongoDB write; ``op`` comes from an ``intc_mg.mg_*`` function."""
        self._client().mongo_exec(self._path, db, coll, op)

    def sync(self, timeout: float = 5.0) -> int:
        """Waits until the proxy confirms every frame this process sent it
        is in its spool; returns how many it refused (0: all accepted).
        Raises ``ProxyUnavailable`` as ``IncClient.sync``."""
        return self._client().sync(self._path, timeout)

    def flush(self) -> None:
        """Writes the buffered frames now (a no-op without buffering).
        Raises ``ProxyUnavailable`` when the write fails (those frames are
        dropped) or when a background flush failed since the last call."""
        self._client().flush(self._path)

    def stats(self) -> Dict[str, int]:
        """Counters of this socket's connection (see ``IncClient.stats``)."""
        return self._client().stats(self._path)

    def close(self) -> None:
        """Flushes, then stops using the client (idempotent). Frames
        already returned from are written; use ``sync()`` first to know
        they are spooled. Raises as ``flush()`` (the client is closed
        anyway)."""
        native, self._native = self._native, None
        if native is not None and native.buffer:
            native.flush(self._path)

    def __enter__(self: _C) -> _C:
        self._client()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<intc.Client {self._path!r}{state}>"


class AsyncClient:
    """An asyncio client of the proxy at ``path``: the methods of
    ``Client`` as coroutines.

    >>> async with intc.AsyncClient("/tmp/us1") as c:
    ...     await c.redis(6379, 0, "set", "k", "v")
    ...     await c.sync()

    Each call runs the blocking write in the loop's default executor, so a
    slow or stalled proxy never blocks the event loop. Calls of one client
    are written in the order they were awaited: the next starts only once
    the previous write is finished, even when its awaiting task was
    cancelled (the frame of a cancelled call may still be written). Errors
    are the ``intc`` exceptions, raised from the ``await``.
    """

    def __init__(
        self,
        path: Path,
        send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT,
        *,
        connect_timeout: Optional[float] = None,
        buffer: Union[bool, int] = False,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._sync = Client(
            path, send_timeout, connect_timeout=connect_timeout, buffer=buffer, linger=linger
        )
        self._lock: Optional[asyncio.Lock] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    @property
    def path(self) -> str:
        """The proxy's socket path."""
        return self._sync.path

    @property
    def send_timeout(self) -> Optional[float]:
        """The send timeout in seconds (``None``: waits forever)."""
        return self._sync.send_timeout

    @property
    def connect_timeout(self) -> Optional[float]:
        """As ``Client.connect_timeout``."""
        return self._sync.connect_timeout

    @property
    def buffer(self) -> int:
        """As ``Client.buffer``."""
        return self._sync.buffer

    @property
    def linger(self) -> Optional[float]:
        """As ``Client.linger``."""
        return self._sync.linger

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._sync.closed

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # Made in the running loop (a Lock belongs to one loop); a
            # client used from a new loop (another asyncio.run) gets a new
            # one: the old loop's calls are over.
            self._lock = asyncio.Lock()
            self._loop = loop
        lock = self._lock
        await lock.acquire()
        try:
            self._sync._client()
            fut = loop.run_in_executor(None, functools.partial(fn, *args))
        except BaseException:
            lock.release()
            raise
        # The lock is held until the write has really finished, not until
        # this task stops waiting: a cancelled call cannot let the next one
        # overtake it.
        fut.add_done_callback(lambda _: lock.release())
        return await asyncio.shield(fut)

    async def redis(self, port: int, db: int, *args: Arg) -> None:
        """As ``Client.redis``."""
        await self._run(self._sync.redis, port, db, *args)

    async def transaction(self, port: int, db: int, cmds: Commands) -> None:
        """As ``Client.transaction``."""
        await self._run(self._sync.transaction, port, db, cmds)

    async def mongo(self, db: str, coll: str, op: Union[bytes, bytearray]) -> None:
        """As ``Client.mongo``."""
        await self._run(self._sync.mongo, db, coll, op)

    async def sync(self, timeout: float = 5.0) -> int:
        """As ``Client.sync``, after every earlier call of this client."""
        return await self._run(self._sync.sync, timeout)

    async def flush(self) -> None:
        """As ``Client.flush``, after every earlier call of this client."""
        await self._run(self._sync.flush)

    async def stats(self) -> Dict[str, int]:
        """As ``Client.stats`` (counted after every earlier call)."""
        return await self._run(self._sync.stats)

    async def close(self) -> None:
        """Waits for the calls in progress, then flushes (in the executor)
        and closes the client."""
        if self._sync.closed:
            return
        if self._lock is not None:
            async with self._lock:
                await self._close_in_executor()
        else:
            await self._close_in_executor()

    async def _close_in_executor(self) -> None:
        import asyncio

        if self._sync.buffer:
            await asyncio.get_running_loop().run_in_executor(None, self._sync.close)
        else:
            self._sync.close()

    async def __aenter__(self: _A) -> _A:
        self._sync._client()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<intc.AsyncClient {self.path!r}{state}>"

