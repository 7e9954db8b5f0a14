"""Hot reload against a running server and a real Redis."""

from __future__ import annotations

import signal
import threading
import time

from conftest import wait_for

RELOADS = 'syncs_server_rules_reloads_total{outcome="%s"}'


def rules(url: str, extra: str = "") -> str:
    return f'target r = redis "{url}"\n{extra}\ndefault redis -> r\ndefault mongo -> drop\n'


def write(path, text):
    # Write then rename, as editors do, so the watcher sees one whole file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def test_good_edit_bad_edit_fixed_edit(syncs_factory, redis_target):
    import intc

    s = syncs_factory(rules(redis_target.url))
    ic = intc.IncClient()
    ic.redis_one(s.socket, 6379, 0, ("set", "k1", "v"))
    wait_for(lambda: redis_target.client(0).get("k1"), what="k1 in db 0")

    # Good edit: k* keys now go to db 5.
    write(s.rules_path, rules(redis_target.url, 'rule moved: redis key "k*" -> r db 5'))
    wait_for(lambda: s.server_metric(RELOADS % "ok") >= 1, what="reload applied")
    ic.redis_one(s.socket, 6379, 0, ("set", "k2", "v"))
    wait_for(lambda: redis_target.client(5).get("k2"), what="k2 in db 5")
    assert redis_target.client(0).get("k2") is None

    # Bad edit: rejected with file:line:col, the old rules stay live.
    write(s.rules_path, rules(redis_target.url, 'rule broken: redis key "k*" -> r db\n'))
    wait_for(lambda: s.server_metric(RELOADS % "rejected") == 1, what="reload rejected")
    log = s.server.text()
    assert f"{s.rules_path}:" in log and "previous rules stay live" in log, log[-2000:]
    import re

    assert re.search(re.escape(str(s.rules_path)) + r":\d+:\d+", log), log[-2000:]
    ic.redis_one(s.socket, 6379, 0, ("set", "k3", "v"))
    wait_for(lambda: redis_target.client(5).get("k3"), what="k3 still routed by the old rules")

    # Fixed edit takes effect without a restart.
    write(s.rules_path, rules(redis_target.url, 'rule moved: redis key "k*" -> r db 6'))
    wait_for(lambda: s.server_metric(RELOADS % "ok") >= 2, what="second reload applied")
    ic.redis_one(s.socket, 6379, 0, ("set", "k4", "v"))
    wait_for(lambda: redis_target.client(6).get("k4"), what="k4 in db 6")
    assert s.server.alive()


def test_sighup_reloads(syncs_factory, redis_target):
    s = syncs_factory(rules(redis_target.url))
    before = s.server_metric(RELOADS % "ok")
    s.server.send_signal(signal.SIGHUP)
    wait_for(lambda: s.server_metric(RELOADS % "ok") == before + 1, what="reload on SIGHUP")
    assert "SIGHUP: reloading rules" in s.server.text()


def test_reloads_lose_and_reorder_nothing(syncs_factory, redis_target):
    import intc

    s = syncs_factory(rules(redis_target.url))
    ic = intc.IncClient()
    n = 3000
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            write(s.rules_path, rules(redis_target.url, f"# edit {i}"))
            i += 1
            stop.wait(0.4)  # longer than the watcher's debounce, so each edit reloads

    t = threading.Thread(target=churn)
    t.start()
    try:
        for i in range(n):
            ic.redis_one(s.socket, 6379, 0, ("rpush", "l", str(i)))
            if i % 100 == 99:
                time.sleep(0.1)  # spread the writes over several reloads
    finally:
        stop.set()
        t.join()
    r = redis_target.client(0)
    wait_for(lambda: r.llen("l") == n, timeout=30, what="every write")
    assert r.lrange("l", 0, -1) == [str(i).encode() for i in range(n)]
    assert s.server_metric(RELOADS % "ok") >= 3, "the writes should have spanned several reloads"
