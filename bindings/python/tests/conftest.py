import os
import subprocess
import sys
import time

import pytest

from proxy_stub import StubProxy

HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns that value
    (the same helper as tests/conftest.py)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture
def proxy(tmp_path):
    p = StubProxy(tmp_path / "us1")
    yield p
    p.close()


@pytest.fixture
def client():
    import intc

    return intc.IncClient()


def run_with_private_tmp(socket_path, command, timeout=60):
    """Runs ``command`` with a stub proxy listening on ``socket_path``;
    returns (rc, [bytes per connection], stderr).

    The seed examples hard-code /tmp/us1: the test is skipped when a live
    proxy answers there (it is never disturbed); a stale file is removed."""
    import socket as so

    if os.path.exists(socket_path):
        with so.socket(so.AF_UNIX) as c:
            try:
                c.connect(socket_path)
                pytest.skip(f"a live listener holds {socket_path}")
            except OSError:
                os.unlink(socket_path)
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "proxy_stub.py"), socket_path, "--", *command],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    import json

    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result["rc"], [bytes.fromhex(c) for c in result["connections"]], out.stderr.decode()
