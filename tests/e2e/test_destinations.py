"""Several -d destinations: each server group gets every record, with its own
cursor, so a dead group does not hold the others back."""

from __future__ import annotations

import os

from conftest import BIN, Proc, Redis, default_rules, free_port, port_open, wait_for, wait_settled


def server(tmp, name: str, redis_url: str, port: int) -> Proc:
    rules = tmp / f"{name}.sync"
    rules.write_text(default_rules(redis_url, None))
    config = tmp / f"{name}.ini"
    config.write_text(f"[server]\nlisten = 127.0.0.1:{port}\nrules = {rules}\n"
                      f"dead_letter = {tmp / (name + '-dead.jsonl')}\n")
    return Proc([str(BIN / "sync_server"), str(config)], tmp / f"{name}.log")


def test_two_groups_each_get_everything_and_a_dead_one_does_not_hold_back(tmp_path):
    import intc

    ra, rb = Redis(tmp_path), Redis(tmp_path)
    a_port, b_port = free_port(), free_port()
    a = server(tmp_path, "a", ra.url, a_port)  # group b is down at first
    sock = str(tmp_path / "p.sock")
    metrics = free_port()
    proxy = Proc([str(BIN / "proxy"), "-u", sock, "-d", f"127.0.0.1:{a_port}", "-d", f"127.0.0.1:{b_port}",
                  "--spool-dir", str(tmp_path / "spool"), "--metrics", f"127.0.0.1:{metrics}"],
                 tmp_path / "proxy.log")
    b = None
    try:
        wait_for(lambda: port_open(a_port), what="server a")
        wait_for(lambda: os.path.exists(sock), what="proxy socket")
        ic = intc.IncClient()
        for i in range(1, 501):
            ic.redis_one(sock, 6379, 0, ("rpush", "seq", str(i)))
        assert ic.sync(sock) == 0
        # Group a is not held back by the dead group b.
        wait_for(lambda: ra.client(0).llen("seq") == 500, what="group a up to date")
        assert rb.client(0).llen("seq") == 0
        # Group b comes up on its port and catches up from its own cursor.
        b = server(tmp_path, "b", rb.url, b_port)
        wait_for(lambda: rb.client(0).llen("seq") == 500, timeout=30, what="group b caught up")
        for r in (ra, rb):
            assert [int(x) for x in r.client(0).lrange("seq", 0, -1)] == list(range(1, 501))
        # Nothing more can come: both groups acknowledged every record (the
        # SYNC above put them all in the spool) and both lists stay still.
        wait_settled(metrics, lambda: (ra.client(0).llen("seq"), rb.client(0).llen("seq")), timeout=30)
        for r, name in ((ra, "a"), (rb, "b")):
            got = [int(x) for x in r.client(0).lrange("seq", 0, -1)]
            assert got == list(range(1, 501)), f"nothing applied twice at {name}"
    finally:
        for p in (proxy, a, b):
            if p is not None:
                p.stop()
        ra.stop()
        rb.stop()
