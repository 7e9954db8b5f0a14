"""Daemon lifecycle: systemd units, readiness, SIGTERM drains, the socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import BIN, REQUIRE_ALL, ROOT, Proc, default_rules, wait_for, wait_settled

N = 2000


def test_systemd_units_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if REQUIRE_ALL:
            raise AssertionError("systemd-analyze is required (SYNCS_REQUIRE_ALL=1)")
        pytest.skip("systemd-analyze not installed")
    units = []
    for unit in (ROOT / "configs/systemd").glob("*.service"):
        text = unit.read_text()
        # Point ExecStart at the built binaries: verify checks they exist.
        text = text.replace("/usr/local/bin/", f"{BIN}/")
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    assert len(units) == 3
    out = subprocess.run([exe, "verify", *units], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    problems = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
    assert problems == [], problems


def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    return s, path


def test_server_and_proxy_notify_systemd(tmp_path, redis_target):
    ns, path = notify_socket(tmp_path)
    rules = tmp_path / "r.sync"
    rules.write_text(default_rules(redis_target.url, None))
    config = tmp_path / "s.ini"
    config.write_text(f"[server]\nlisten = 127.0.0.1:0\nrules = {rules}\ndead_letter = {tmp_path}/dl.jsonl\n")
    env = dict(os.environ, NOTIFY_SOCKET=path)
    server = Proc([str(BIN / "sync_server"), str(config)], tmp_path / "server.log", env=env)
    try:
        assert ns.recv(256).strip() == b"READY=1"
        server.send_signal(signal.SIGTERM)
        assert ns.recv(256).strip() == b"STOPPING=1"
        assert server.p.wait(10) == 0
    finally:
        server.stop()
    proxy = Proc([str(BIN / "proxy"), "-u", str(tmp_path / "p.sock"), "-d", "127.0.0.1:9",
                  "--spool-dir", str(tmp_path / "spool"), "--drain-timeout", "1"], tmp_path / "proxy.log", env=env)
    try:
        assert ns.recv(256).strip() == b"READY=1"
        proxy.send_signal(signal.SIGTERM)
        assert ns.recv(256).strip() == b"STOPPING=1"
        assert proxy.p.wait(10) == 0
    finally:
        proxy.stop()


def test_proxy_sigterm_keeps_what_it_could_not_deliver(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None), start_server=False,
                      proxy_args=["--drain-timeout", "1"])
    ic = intc.IncClient()
    for i in range(1, 501):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
    assert ic.sync(s.socket) == 0
    assert s.proxy.stop(signal.SIGTERM) == 0
    assert "stay in the spool" in s.proxy.text()
    s.start_server()
    s.start_proxy()
    r = redis_target.client(0)
    wait_for(lambda: r.llen("seq") == 500, timeout=30, what="spooled writes after the restart")
    assert [int(x) for x in r.lrange("seq", 0, -1)] == list(range(1, 501))


def test_server_sigterm_mid_stream_loses_nothing(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(0)

    def write():
        ic = intc.IncClient()
        for i in range(1, N + 1):
            ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
            if i % 100 == 0:
                time.sleep(0.01)

    t = threading.Thread(target=write)
    t.start()
    wait_for(lambda: r.llen("seq") > N // 4, what="a quarter applied")
    assert s.server.stop(signal.SIGTERM) == 0
    s.start_server()
    t.join()
    wait_for(lambda: r.llen("seq") >= N, timeout=60, what="every write")
    # Every write reached the target, so the proxy has them all: wait
    # until nothing more can arrive (not a fixed wait) before "no duplicate".
    wait_settled(s.proxy_metrics, lambda: r.llen("seq"))
    assert [int(x) for x in r.lrange("seq", 0, -1)] == list(range(1, N + 1))


def test_socket_mode_stale_file_and_live_socket(tmp_path):
    sock = tmp_path / "p.sock"
    args = [str(BIN / "proxy"), "-u", str(sock), "-d", "127.0.0.1:9", "--spool-dir", str(tmp_path / "spool"),
            "--drain-timeout", "1"]
    # A stale socket file (no listener) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    p = Proc(args, tmp_path / "p1.log")
    try:
        wait_for(lambda: "proxy ready" in p.text() or not p.alive(), what="proxy ready")
        assert p.alive(), p.text()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        # A second proxy does not steal a live socket.
        second = subprocess.run([*args[:5], "--spool-dir", str(tmp_path / "spool2")], capture_output=True,
                                text=True, timeout=10)
        assert second.returncode != 0 and "in use by a running proxy" in second.stderr, second.stderr
    finally:
        p.stop()
    p = Proc([*args, "--socket-mode", "600"], tmp_path / "p2.log")
    try:
        wait_for(lambda: "proxy ready" in p.text() or not p.alive(), what="proxy ready")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    finally:
        p.stop()


def test_syncs_status(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    ic = intc.IncClient()
    for i in range(10):
        ic.redis_one(s.socket, 6379, 0, ("set", f"k{i}", "v"))
    wait_for(lambda: s.server_metric('syncs_server_ops_applied_total{target="local_redis",kind="redis"}') == 10,
             what="writes applied")

    def status():
        return subprocess.run([str(BIN / "syncs-status"), "--proxy", f"127.0.0.1:{s.proxy_metrics}",
                               "--server", f"127.0.0.1:{s.server_metrics}"], capture_output=True, text=True,
                              timeout=30)

    out = wait_for(lambda: (o := status()).returncode == 0 and o, what="healthy status")
    assert f"proxy 127.0.0.1:{s.proxy_metrics}: OK" in out.stdout
    assert "servers connected: 1 of 1" in out.stdout and "applied: 10" in out.stdout, out.stdout
    s.server.stop()
    out = wait_for(lambda: (o := status()).returncode != 0 and o, what="unhealthy status")
    assert "UNHEALTHY" in out.stdout and "1 of 1 servers not connected" in out.stdout, out.stdout
    assert "UNREACHABLE" in out.stdout and out.returncode == 2  # the server's endpoint is gone too
