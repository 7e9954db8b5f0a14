import os
import shutil
import subprocess
import sys

import pytest

from proxy_stub import StubProxy

HERE = os.path.dirname(os.path.abspath(__file__))


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
    """Runs ``command`` in a mount namespace with a fresh /tmp, with a stub
    proxy listening on ``socket_path``; returns (rc, [bytes per connection]).

    The seed examples hard-code /tmp/us1: a private /tmp keeps them from
    meeting a real proxy, or another test run, on this machine."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to give the seed example a private /tmp")
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private /tmp: {probe.stderr.decode().strip()}")
    script = 'mount -t tmpfs tmpfs /tmp && exec "$@"'
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", sys.executable,
         os.path.join(HERE, "proxy_stub.py"), socket_path, "--", *command],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    import json

    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result["rc"], [bytes.fromhex(c) for c in result["connections"]], out.stderr.decode()
