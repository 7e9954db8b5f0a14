"""The exceptions of the intc package.

Defined in Python so that each one is also the matching built-in exception:
code that catches ``ConnectionError`` or ``ValueError`` keeps working.
"""

__all__ = ["IntcError", "ProxyUnavailable", "FrameTooLarge", "InvalidOperation"]


class IntcError(Exception):
    """Base class of every error raised by intc and intc_mg."""


class ProxyUnavailable(IntcError, ConnectionError):
    """The frame was not delivered: the proxy's socket could not be
    connected to, or it stopped taking bytes (closed, or no progress for
    the send timeout). The connection is dropped; the next call reconnects.
    """


class FrameTooLarge(IntcError, ValueError):
    """The frame is larger than the proxy accepts (64 MiB by default)."""


class InvalidOperation(IntcError, ValueError):
    """A bad argument: wrong type, empty command, a command a frame may not
    carry (MULTI, EXEC, SELECT, WATCH...), a BSON write description that is
    invalid or not one the server accepts."""
