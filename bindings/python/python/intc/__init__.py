"""Replicate Redis commands and MongoDB writes through the local syncs proxy.

>>> import intc
>>> from intc_mg import mg_delete_many
>>> ic = intc.IncClient()
>>> ic.redis_one('/tmp/us1', 6379, 1, ("set", "a", "bcd"))
>>> ic.redis_many('/tmp/us1', 6379, 2, (("set", "cool", "hello"), ("incr", "n")))
>>> ic.mongo_exec('/tmp/us1', 'db', 'coll', mg_delete_many({'key': 'value'}))

Each call writes one frame to the proxy's unix socket and returns once it is
written: "sent" is not "applied". The proxy answers only ``sync()``, which
confirms that the frames sent before it are in its spool. Errors are raised
at once: `ProxyUnavailable` when the proxy is down, `InvalidOperation` for
bad arguments, `FrameTooLarge` above the proxy's limit.

Options (keyword arguments of `IncClient`, `Client`, `AsyncClient`):
``buffer=True`` gathers frames and writes several at once (flushed when
full, after ``linger`` seconds, by ``flush()``, before ``sync()`` and at
interpreter exit); ``connect_timeout=5.0`` waits up to that long for a proxy
that is not up yet instead of failing at once.

`Client` and `AsyncClient` (asyncio) are bound to one socket path:

>>> with intc.Client('/tmp/us1') as c:
...     c.redis(6379, 1, "set", "a", "bcd")
...     c.transaction(6379, 2, [("set", "cool", "hello"), ("incr", "n")])
...     c.mongo('db', 'coll', mg_delete_many({'key': 'value'}))
...     c.sync()        # waits until the proxy has spooled them all
0
>>> async with intc.AsyncClient('/tmp/us1') as c:
...     await c.redis(6379, 1, "set", "a", "bcd")
"""

import atexit

from intc._client import AsyncClient, Client
from intc._errors import FrameTooLarge, IntcError, InvalidOperation, ProxyUnavailable
from intc._native import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_LINGER,
    DEFAULT_SEND_TIMEOUT,
    MAX_FRAME,
    IncClient,
    __version__,
    flush_all,
    stats,
)


def _flush_at_exit() -> None:
    # Buffered frames are written when the interpreter exits normally
    # (not after os._exit() or a crash). An error cannot be raised to
    # anyone any more: the frames are dropped, as a failed write drops them.
    try:
        flush_all()
    except IntcError:
        pass


atexit.register(_flush_at_exit)

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_LINGER",
    "DEFAULT_SEND_TIMEOUT",
    "MAX_FRAME",
    "AsyncClient",
    "Client",
    "FrameTooLarge",
    "IncClient",
    "IntcError",
    "InvalidOperation",
    "ProxyUnavailable",
    "__version__",
    "flush_all",
    "stats",
]
