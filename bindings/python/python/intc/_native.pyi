"""Type stubs of the compiled module ``intc._native`` (use ``intc``)."""

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

__version__: str
DEFAULT_SEND_TIMEOUT: float
DEFAULT_BUFFER_SIZE: int
DEFAULT_LINGER: float
MAX_FRAME: int

Arg = Union[str, bytes, bytearray, memoryview, int, float]
Command = Union[Tuple[Arg, ...], List[Arg]]
Path = Union[str, "os.PathLike[str]"]

class IncClient:
    """A client of the local syncs proxy (see ``help(intc)``)."""

    def __init__(
        self,
        send_timeout: Optional[float] = 1.0,
        *,
        connect_timeout: Optional[float] = None,
        buffer: Union[bool, int, None] = False,
        linger: float = 0.001,
    ) -> None: ...
    @property
    def send_timeout(self) -> Optional[float]: ...
    @property
    def connect_timeout(self) -> Optional[float]: ...
    @property
    def buffer(self) -> int: ...
    @property
    def linger(self) -> Optional[float]: ...
    def redis_one(self, path: Path, port: int, db: int, cmd: Command) -> None: ...
    def redis_many(
        self, path: Path, port: int, db: int, cmds: Union[Tuple[Command, ...], List[Command]]
    ) -> None: ...
    def mongo_exec(self, path: Path, db: str, coll: str, op: Union[bytes, bytearray]) -> None: ...
    def sync(self, path: Path, timeout: float = 5.0) -> int: ...
    def flush(self, path: Optional[Path] = None) -> None: ...
    def stats(self, path: Optional[Path] = None) -> Dict[str, int]: ...

def stats(path: Optional[Path] = None) -> Dict[str, int]: ...
def flush_all() -> None: ...

__all__: Sequence[str]
