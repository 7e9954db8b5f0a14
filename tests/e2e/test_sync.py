"""Acknowledged writes: the client asks the proxy to confirm its frames are spooled."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import compile_c, default_rules, proxy_refusal, wait_for


def test_sync_confirms_and_counts_refusals(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    ic = intc.IncClient()
    for i in range(100):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "l", str(i)))
    assert ic.sync(s.socket) == 0
    # Spooled means counted as accepted by the proxy already.
    assert s.proxy_metric('syncs_proxy_frames_accepted_total{kind="redis"}') >= 100
    wait_for(lambda: redis_target.client(0).llen("l") == 100, what="writes applied")


def test_sync_reports_frames_the_proxy_refused(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    bad = b"6379,0\x01*1\r\n$5\r\nMULTI\r\n"
    good = b"6379,0\x01*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(s.socket)
        for p in (good, bad, bad, good):
            c.sendall(struct.pack("<I", len(p)) + p)
        c.sendall(struct.pack("<I", 10) + b"\x03S" + struct.pack("<Q", 42))
        reply = c.recv(18)
    assert reply == struct.pack("<I", 14) + b"\x03S" + struct.pack("<Q", 42) + struct.pack("<I", 2)


def test_sync_raises_when_frames_went_out_on_a_broken_connection(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    ic = intc.IncClient()
    ic.redis_one(s.socket, 6379, 0, ("set", "a", "1"))
    assert ic.sync(s.socket) == 0
    ic.redis_one(s.socket, 6379, 0, ("set", "b", "2"))  # written, never confirmed
    s.proxy.stop(signal.SIGKILL)
    with pytest.raises(intc.ProxyUnavailable):
        ic.redis_one(s.socket, 6379, 0, ("set", "c", "3"))
    s.start_proxy()
    with pytest.raises(intc.ProxyUnavailable, match="confirm"):
        ic.sync(s.socket)
    # Reported once: the next sync confirms the new connection.
    ic.redis_one(s.socket, 6379, 0, ("set", "c", "3"))
    assert ic.sync(s.socket) == 0


def test_kill_9_proxy_confirmed_writes_arrive_exactly_once(syncs_factory, redis_target):
    """The issue's criterion: every acknowledged write arrives exactly once,
    in order, across a kill -9 of the proxy."""
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(0)
    n = 3000
    confirmed = 0
    killed = threading.Event()

    def kill_and_restart():
        wait_for(lambda: r.llen("seq") > n // 4, what="a quarter applied")
        s.proxy.stop(signal.SIGKILL)
        killed.set()
        time.sleep(0.3)
        s.start_proxy()

    t = threading.Thread(target=kill_and_restart)
    t.start()
    ic = intc.IncClient()
    confirmed: set[int] = set()
    window: list[int] = []  # written since the last sync

    def sync():
        try:
            ic.sync(s.socket)
            confirmed.update(window)
        except intc.IntcError:
            pass  # this window is not acknowledged
        window.clear()

    for i in range(1, n + 1):
        try:
            ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
            window.append(i)
        except intc.IntcError:
            time.sleep(0.05)  # proxy down: not sent
        if i % 50 == 0:
            sync()
    sync()
    t.join()
    assert killed.is_set()
    wait_for(lambda: [int(x) for x in r.lrange("seq", 0, -1)][-1:] == [n], timeout=60, what="the last write")
    got = [int(x) for x in r.lrange("seq", 0, -1)]
    missing_confirmed = sorted(confirmed - set(got))
    print(f"\nRELIABILITY {{'test': 'kill -9 proxy, acknowledged writes', 'sent': {n}, 'arrived': {len(set(got))}, "
          f"'duplicated': {len(got) - len(set(got))}, 'lost_acknowledged': {len(missing_confirmed)}}}")
    assert got == sorted(set(got)), "no duplicate, in order"
    assert missing_confirmed == [], "every acknowledged write arrived"
    assert len(confirmed) > n // 2


def test_c_intc_sync(syncs_factory, redis_target, tmp_path):
    s = syncs_factory(default_rules(redis_target.url, None))
    src = tmp_path / "sync.c"
    src.write_text(r'''
#include "intc_cli.h"
#include <stdio.h>
int main(int argc, char **argv) {
  if (argc < 2) return 3;
  intc_cli_t *cli = intc_fetch(argv[1]);
  const char *set[] = {"SET", "from_c", "1"};
  if (intc_redis_command(cli, 6379, 0, 3, set, NULL) != INTC_OK) return 2;
  uint32_t refused = 99;
  int rc = intc_sync(cli, 5000, &refused);
  printf("%d %u\n", rc, refused);
  intc_dispose();
  return rc == INTC_OK && refused == 0 ? 0 : 1;
}
''')
    exe = compile_c(src, tmp_path / "sync")
    out = subprocess.run([str(exe), s.socket], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.split() == ["0", "0"], out
    wait_for(lambda: redis_target.client(0).get("from_c") == b"1", what="the write")


def test_sync_is_not_held_by_the_fsync_spacing(syncs_factory, redis_target):
    """`--fsync-spacing`: the fsyncs of writes nobody waits for are held
    apart, while a SYNC is answered once its frames are fsynced without
    waiting out the spacing (it asks for its fsync at once)."""
    import intc

    spacing, rounds, lone = 1.0, 4, 50
    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=["--fsync-spacing", "1s"])
    ic = intc.IncClient()
    target = redis_target.client(0)
    # Writes without a SYNC: replicated at once, fsynced together.
    before = s.proxy_metric("syncs_proxy_spool_fsyncs_total")
    started = time.monotonic()
    for i in range(lone):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "lone", str(i)))
    wait_for(lambda: target.llen("lone") == lone, what="the lone writes applied")
    fsyncs = s.proxy_metric("syncs_proxy_spool_fsyncs_total") - before
    assert fsyncs <= 2 + (time.monotonic() - started) / spacing, fsyncs
    # Each SYNC: its own fsync, not a spacing after the one before.
    before = s.proxy_metric("syncs_proxy_spool_fsyncs_total")
    started = time.monotonic()
    for i in range(rounds):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "l", str(i)))
        assert ic.sync(s.socket) == 0
    elapsed = time.monotonic() - started
    fsyncs = s.proxy_metric("syncs_proxy_spool_fsyncs_total") - before
    assert fsyncs >= rounds, fsyncs
    assert elapsed < (rounds - 1) * spacing, elapsed
    wait_for(lambda: target.llen("l") == rounds, what="writes applied")


def test_an_fsync_spacing_needs_fsync_always(tmp_path):
    err = proxy_refusal(tmp_path, "--fsync", "never", "--fsync-spacing", "1ms")
    assert "an fsync spacing applies to Fsync::Always (`--fsync always`) only" in err, err


def test_a_client_that_reads_no_sync_reply_is_let_go_and_holds_up_no_one(syncs_factory, redis_target):
    """A client sends SYNCs and never reads a reply. Once its socket's
    buffer is full of replies, the proxy waits at most 10 s for it to read
    one, then ends its connection, with a log line; meanwhile other clients
    are answered, and the proxy stops as usual. Before, the connection was
    held for ever, and so was the proxy's SIGTERM."""
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    sync = struct.pack("<I", 10) + b"\x03S" + struct.pack("<Q", 7)
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.connect(s.socket)
    outcome: list[str] = []

    def send_syncs():
        try:
            deaf.sendall(sync * 20_000)
            outcome.append("sent")
        except OSError as e:
            outcome.append(repr(e))

    t = threading.Thread(target=send_syncs, daemon=True)
    t.start()
    try:
        ic = intc.IncClient()
        ic.redis_one(s.socket, 6379, 0, ("set", "other", "1"))
        assert ic.sync(s.socket) == 0
        wait_for(lambda: "cannot answer a SYNC: the client read no reply for 10s" in s.proxy.text(),
                 timeout=40, what="the proxy to give up on the client that reads nothing")
        t.join(30)
        assert outcome, "the client's sends still blocked once the proxy let it go"
        ic.redis_one(s.socket, 6379, 0, ("set", "other", "2"))
        assert ic.sync(s.socket) == 0
    finally:
        deaf.close()
    wait_for(lambda: redis_target.client(0).get("other") == b"2", what="the other client's writes applied")
    assert s.proxy.stop(signal.SIGTERM) == 0
