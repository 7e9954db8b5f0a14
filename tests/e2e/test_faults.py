"""Fault tests: real processes, real Redis, bounded in time.

Each test writes a numbered sequence (RPUSH i, INCR) and checks the target
afterwards: every write arrives exactly once and in order. The figures
(sent, arrived, duplicated, lost) are printed for docs/reliability.md.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import Redis, default_rules, free_port, wait_for, wait_settled
from relay import Relay

N = 3000


def verdict(r, n: int, name: str) -> dict:
    got = [int(x) for x in r.lrange("seq", 0, -1)]
    counter = int(r.get("count") or 0)
    dup = len(got) - len(set(got))
    report = {"test": name, "sent": n, "arrived": len(set(got)), "duplicated": dup,
              "lost": n - len(set(got)), "in_order": got == sorted(got), "incr": counter}
    print(f"\nRELIABILITY {report}")
    return report


def assert_exactly_once(r, n: int, name: str):
    report = verdict(r, n, name)
    assert report["duplicated"] == 0 and report["lost"] == 0 and report["in_order"], report
    assert report["incr"] == n, report
    assert [int(x) for x in r.lrange("seq", 0, -1)] == list(range(1, n + 1))


def settle(s, counters, confirm: bool = True, timeout: float = 60.0) -> None:
    """Waits until nothing more can reach the target, before asserting
    "exactly once" (a fixed wait lets a late duplicate land just after it):

    1. the proxy holds every frame sent: with `confirm`, a SYNC on this
       process's shared connection says so (a first SYNC after frames went
       out on a broken connection reports them unconfirmed: the next one
       answers); otherwise every client connection has been read to its end
       (syncs_proxy_clients == 0);
    2. then the proxy has no record unacknowledged (every record applied,
       none to send again) and `counters()` (the target's state) does not
       change (conftest.wait_settled).
    """
    import intc

    if confirm:
        ic = intc.IncClient()

        def synced():
            try:
                return ("answered", ic.sync(s.socket, 5.0))
            except intc.IntcError:
                return None

        _, refused = wait_for(synced, timeout=timeout, interval=0.1, what="a SYNC for every frame sent")
        assert refused == 0, f"the proxy refused {refused} frame(s)"
    else:
        wait_for(lambda: s.proxy_metric("syncs_proxy_clients") == 0, timeout=timeout,
                 what="every client connection read to its end")
    wait_settled(s.proxy_metrics, counters, timeout=timeout)


def seq_and_count(r):
    return lambda: (r.llen("seq"), r.get("count"))


def writer(socket_path: str, n: int, pause_every: int = 100, pause: float = 0.01, retry: bool = False):
    import intc

    ic = intc.IncClient()

    def send(*args: str):
        # Each frame is retried on its own: retrying the pair would resend
        # an RPUSH the proxy had already taken.
        while True:
            try:
                ic.redis_one(socket_path, 6379, 0, args)
                return
            except intc.IntcError:
                if not retry:
                    raise
                time.sleep(0.05)

    for i in range(1, n + 1):
        send("rpush", "seq", str(i))
        send("incr", "count")
        if i % pause_every == 0:
            time.sleep(pause)


def test_kill_9_server_mid_stream(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(0)
    t = threading.Thread(target=writer, args=(s.socket, N))
    t.start()
    wait_for(lambda: r.llen("seq") > N // 4, what="a quarter applied")
    s.server.stop(signal.SIGKILL)
    time.sleep(0.5)
    s.start_server()
    t.join()
    wait_for(lambda: r.llen("seq") >= N, timeout=60, what="every write after the restart")
    settle(s, seq_and_count(r))
    assert_exactly_once(r, N, "kill -9 server")


def test_kill_9_server_with_four_proxies_on_a_pool_of_four(syncs_factory, redis_target):
    """Four proxies (four streams) into one server whose target has
    `pool = 4`: each stream gets a connection of its own (a new stream
    takes the least used one; `stream % pool` gave four streams four
    connections 9 % of the time), and a kill -9 of the server mid-stream
    still applies every write of every stream exactly once, in order."""
    import intc

    n = 1500
    plain = f'redis "{redis_target.url}"'
    rules = default_rules(redis_target.url, None).replace(plain, plain + " { pool = 4 }")
    assert "pool = 4" in rules
    s = syncs_factory(rules)
    metrics = [s.proxy_metrics]
    socks = [s.socket]
    for k in range(1, 4):
        port = free_port()
        socks.append(s.add_proxy(f"p{k}", ["--metrics", f"127.0.0.1:{port}"]))
        metrics.append(port)
    r = redis_target.client(0)
    r.client_setname("the-test")

    def write(k: int) -> None:
        ic = intc.IncClient()
        for i in range(1, n + 1):
            ic.redis_one(socks[k], 6379, 0, ("rpush", f"seq:{k}", str(i)))
            ic.redis_one(socks[k], 6379, 0, ("incr", f"count:{k}"))
            if i % 100 == 0:
                time.sleep(0.01)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()

    def server_connections() -> int:
        return sum(1 for c in r.client_list() if c["name"] != "the-test")

    wait_for(lambda: all(r.llen(f"seq:{k}") > 0 for k in range(4)) and server_connections() >= 4,
             what="four streams applied on four connections of the server")
    wait_for(lambda: r.llen("seq:0") > n // 4, what="a quarter of the first stream applied")
    s.server.stop(signal.SIGKILL)
    time.sleep(0.5)
    s.start_server()
    for t in threads:
        t.join()

    def state():
        return [(r.llen(f"seq:{k}"), r.get(f"count:{k}")) for k in range(4)]

    wait_for(lambda: all(length >= n for length, _ in state()), timeout=60,
             what="every write of every stream after the restart")
    for sock in socks:
        assert intc.IncClient().sync(sock, 10.0) == 0
    for port in metrics:
        wait_settled(port, state)
    for k in range(4):
        got = [int(x) for x in r.lrange(f"seq:{k}", 0, -1)]
        assert got == list(range(1, n + 1)), f"stream {k}: {len(got)} entries, {len(got) - len(set(got))} duplicated"
        assert int(r.get(f"count:{k}")) == n


def test_target_redis_stopped_and_started(syncs_factory, tmp_path):
    # The target keeps its data across the restart (AOF, fsync always).
    target = Redis(tmp_path, persistent=True)
    try:
        s = syncs_factory(default_rules(target.url, None))
        r = target.client(0)
        t = threading.Thread(target=writer, args=(s.socket, N))
        t.start()
        wait_for(lambda: r.llen("seq") > N // 4, what="a quarter applied")
        target.proc.stop()
        time.sleep(1.0)
        target.proc.start()
        wait_for(lambda: target.ping(), what="target back")
        t.join()
        wait_for(lambda: r.llen("seq") >= N, timeout=60, what="every write after the target is back")
        settle(s, seq_and_count(r))
        assert_exactly_once(r, N, "target Redis stopped and started")
        assert "holding the acknowledgement" in s.server.text()
    finally:
        target.stop()


def test_link_cut_and_restored(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None), start_server=True)
    relay = Relay(s.server_port)
    try:
        s.proxy.stop()
        s.proxy_dest = relay.port
        s.start_proxy()
        r = redis_target.client(0)
        t = threading.Thread(target=writer, args=(s.socket, N))
        t.start()
        for _ in range(3):
            wait_for(lambda: r.llen("seq") > 0, what="writes flowing")
            relay.cut(0.7)
        t.join()
        wait_for(lambda: r.llen("seq") >= N, timeout=60, what="every write after the cuts")
        settle(s, seq_and_count(r))
        assert_exactly_once(r, N, "proxy-server link cut 3 times")
        assert "link lost" in s.proxy.text()
    finally:
        relay.stop()


def _metric_total(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over all its labels."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def _redis_asleep(port: int, probes: list[socket.socket]) -> bool:
    """True when the Redis at `port` does not answer a PING within 0.1 s
    (DEBUG SLEEP under way). The probe stays open (in `probes`): its PING
    waits in Redis' queue, and `_queued_at_redis` must tell it apart."""
    probe = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    probes.append(probe)
    probe.sendall(b"PING\r\n")
    probe.settimeout(0.1)
    try:
        probe.recv(64)
    except TimeoutError:
        return True
    return False


def _queued_at_redis(port: int, probes: list[socket.socket]) -> int:
    """Bytes received by the Redis at `port` and not yet read by it, over
    its connections other than `probes` (from /proc/net/tcp)."""
    mine = {p.getsockname()[1] for p in probes}
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) != port or int(remote.split(":")[1], 16) in mine:
            continue
        waiting += int(queues.split(":")[1], 16)
    return waiting


def test_reset_while_exec_is_held_applies_once(syncs_factory, tmp_path):
    """The server has sent a run's MULTI ... EXEC to a target that is busy
    (DEBUG SLEEP), and the proxy's connection is reset (TCP RST) meanwhile.
    The proxy reconnects and offers the record again (it never saw it
    acknowledged); once the target wakes, the record must be applied once,
    not once per session. Before the fix in 0b3c1cc the list ended as
    [1, 2, 2]."""
    import intc

    target = Redis(tmp_path, extra_args=["--enable-debug-command", "yes"])
    relay: Relay | None = None
    probes: list[socket.socket] = []
    try:
        s = syncs_factory(default_rules(target.url, None))
        relay = Relay(s.server_port)
        s.proxy.stop()
        s.proxy_dest = relay.port
        s.start_proxy()
        r = target.client(0)
        ic = intc.IncClient()
        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", "1"))
        wait_for(lambda: r.lrange("seq", 0, -1) == [b"1"], what="record 1 applied")
        wait_for(lambda: s.proxy_metric("syncs_proxy_pending_records") == 0, what="record 1 acknowledged")

        def received() -> float:
            return _metric_total(s._metrics(s.server_metrics), "syncs_server_records_received_total")

        before = received()
        bytes_before = relay.bytes_up

        slept: list[object] = []
        sleeper = target.client(0)
        t = threading.Thread(target=lambda: slept.append(sleeper.execute_command("DEBUG", "SLEEP", 2)))
        t.start()
        wait_for(lambda: _redis_asleep(target.port, probes), timeout=1.5, interval=0,
                 what="DEBUG SLEEP under way")

        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", "2"))
        wait_for(lambda: relay.bytes_up > bytes_before and received() >= before + 1, timeout=1.0,
                 what="record 2 through the relay and received by the server")
        wait_for(lambda: _queued_at_redis(target.port, probes) > 0, timeout=1.0,
                 what="the server's run waiting in the sleeping target's socket")
        assert t.is_alive(), "the target woke before the reset: the scenario did not happen (slow machine?)"
        relay.cut_now(reset=True)
        relay.restore()

        t.join(10)
        assert slept == [b"OK"], slept
        wait_for(lambda: relay.accepted >= 2 and relay.live >= 1, timeout=20, what="the proxy reconnected")
        wait_for(lambda: s.proxy_metric("syncs_proxy_pending_records") == 0, timeout=20,
                 what="record 2 acknowledged")
        got = r.lrange("seq", 0, -1)
        print(f"\nRELIABILITY {{'test': 'RST while EXEC held', 'sent': 2, 'list': {got!r}}}")
        assert got == [b"1", b"2"]
    finally:
        for p in probes:
            p.close()
        if relay is not None:
            relay.stop()
        target.stop()


def test_kill_9_proxy_mid_stream(syncs_factory, redis_target):
    """Frames the proxy had spooled survive kill -9; the writer retries what
    failed while the proxy was down."""
    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(0)
    t = threading.Thread(target=writer, args=(s.socket, N), kwargs={"retry": True})
    t.start()
    wait_for(lambda: r.llen("seq") > N // 4, what="a quarter applied")
    s.proxy.stop(signal.SIGKILL)
    time.sleep(0.3)
    s.start_proxy()
    t.join()
    # The writer's last frames reach the restarted proxy, so the run ends
    # with N.
    wait_for(lambda: r.lindex("seq", -1) == str(N).encode(), timeout=60, what="the last write")
    settle(s, seq_and_count(r))
    report = verdict(r, N, "kill -9 proxy")
    # Without acknowledged writes (SYNC, see test_sync.py), frames still in
    # the unix socket's buffer at the kill vanish with the process: those
    # are the only losses allowed. So nothing is duplicated or reordered,
    # and what is missing is one unbroken run of the sequence.
    assert report["duplicated"] == 0 and report["in_order"], report
    got = [int(x) for x in r.lrange("seq", 0, -1)]
    missing = sorted(set(range(1, N + 1)) - set(got))
    if missing:
        assert missing == list(range(missing[0], missing[-1] + 1)), missing
    # The INCRs lost are the ones interleaved with those RPUSHes.
    assert abs(report["incr"] - (N - len(missing))) <= 1, report


def test_spool_full_blocks_writers_until_the_server_catches_up(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None), start_server=False,
                      proxy_args=["--spool-max", "256KiB", "--segment-size", "64KiB", "--when-full", "block"])
    ic = intc.IncClient(send_timeout=0.5)
    value = "x" * 1000
    sent = 0
    with pytest.raises(intc.IntcError):
        for i in range(1, 2001):
            ic.redis_one(s.socket, 6379, 0, ("rpush", "big", f"{i}:{value}"))
            sent = i
    assert sent < 2000, "the writer must be held back when the spool is full"
    wait_for(lambda: s.proxy_metric('syncs_proxy_spool_full_total{policy="block"}') >= 1, what="spool full counted")
    s.start_server()
    r = redis_target.client(0)
    # Frames the proxy read before the cap are delivered; the ones still in
    # the socket buffer when the writer gave up go in once there is room.
    wait_for(lambda: r.llen("big") >= sent, timeout=30, what="spooled writes delivered")
    # The writer's connection broke when it gave up: the proxy reads what
    # is left of it once there is room.
    settle(s, lambda: r.llen("big"), confirm=False)
    got = [int(x.split(b":")[0]) for x in r.lrange("big", 0, -1)]
    assert got == list(range(1, len(got) + 1)), "in order, no gap, no duplicate"
    print(f"\nRELIABILITY {{'test': 'spool full (block)', 'sent': {sent}, 'arrived': {len(got)}}}")


def test_spool_full_refuse_counts_and_closes(syncs_factory, redis_target):
    import intc

    s = syncs_factory(default_rules(redis_target.url, None), start_server=False,
                      proxy_args=["--spool-max", "256KiB", "--segment-size", "64KiB", "--when-full", "refuse"])
    ic = intc.IncClient(send_timeout=0.5)
    value = "x" * 1000
    for i in range(1, 601):
        try:
            ic.redis_one(s.socket, 6379, 0, ("rpush", "big", f"{i}:{value}"))
        except intc.IntcError:
            pass
    wait_for(lambda: s.proxy_metric('syncs_proxy_frames_refused_total{reason="spool_full"}') >= 1,
             what="refusals counted")
    assert s.proxy_metric('syncs_proxy_spool_full_total{policy="refuse"}') >= 1
    assert "frame not accepted" in s.proxy.text()
    s.start_server()
    r = redis_target.client(0)
    wait_for(lambda: r.llen("big") > 0 and s.proxy_metric("syncs_proxy_pending_records") == 0,
             timeout=30, what="spooled writes delivered")
    got = [int(x.split(b":")[0]) for x in r.lrange("big", 0, -1)]
    assert got == sorted(set(got)), "in order, no duplicate"
    refused = s.proxy_metric('syncs_proxy_frames_refused_total{reason="spool_full"}')
    assert len(got) + refused == 600, "every frame is either delivered or counted as refused"
    print(f"\nRELIABILITY {{'test': 'spool full (refuse)', 'sent': 600, 'arrived': {len(got)}, 'refused_counted': {int(refused)}}}")


def _segment_record_offsets(path) -> list[tuple[int, int]]:
    """(offset, sequence) of every record of a spool segment (docs/spool.md)."""
    data = path.read_bytes()
    out, off = [], 48
    while off + 28 <= len(data):
        length = int.from_bytes(data[off + 4:off + 8], "little")
        seq = int.from_bytes(data[off + 8:off + 16], "little")
        out.append((off, seq))
        off += 28 + length
    return out


def _reserved_from_another_boot(spool) -> int:
    """Rewrites the spool's `reserved` file as if the machine had rebooted
    since it was written (another boot id, checksum recomputed); returns
    its mark."""
    import zlib

    path = spool / "reserved"
    b = bytearray(path.read_bytes())
    assert len(b) == 56 and b[0:8] == b"SYNCSRSV"
    b[32:48] = bytes(16)  # boot id 0: "unknown", never this boot
    b[48:52] = zlib.crc32(bytes(b[0:48])).to_bytes(4, "little")
    path.write_bytes(bytes(b))
    return int.from_bytes(b[24:32], "little")


def test_machine_crash_never_reuses_a_sequence_a_server_applied(syncs_factory, redis_target):
    """Records are sent before their fsync. A machine crash can then take
    records off the proxy's disk that a server had already applied; the
    restarted proxy must not give their sequence numbers to new records
    (the server would skip those as already applied: silent loss)."""
    import intc

    s = syncs_factory(default_rules(redis_target.url, None))
    r = redis_target.client(0)
    ic = intc.IncClient()
    half = N // 2
    for i in range(1, half + 1):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
        ic.redis_one(s.socket, 6379, 0, ("incr", "count"))
    assert ic.sync(s.socket, 10.0) == 0
    wait_for(lambda: r.llen("seq") == half, timeout=30, what="the first half applied")
    # The machine crashes: the proxy dies, and the last 40 records it had
    # sent (and the server applied) were still only in the page cache.
    s.proxy.stop(signal.SIGKILL)
    newest = sorted(s.spool.glob("*.seg"))[-1]
    records = _segment_record_offsets(newest)
    lost_at, first_lost = records[-40]
    with open(newest, "r+b") as f:
        f.truncate(lost_at)
    mark = _reserved_from_another_boot(s.spool)
    assert mark >= first_lost + 39
    s.start_proxy()
    for i in range(half + 1, N + 1):
        ic.redis_one(s.socket, 6379, 0, ("rpush", "seq", str(i)))
        ic.redis_one(s.socket, 6379, 0, ("incr", "count"))
    assert ic.sync(s.socket, 10.0) == 0
    wait_for(lambda: r.llen("seq") >= N, timeout=60, what="every write after the crash")
    settle(s, seq_and_count(r))
    assert_exactly_once(r, N, "machine crash after sending unfsynced records")
    assert "sequences" in s.proxy.text() and "skipped" in s.proxy.text()
    assert "sequence gap" in s.server.text()
    wait_for(lambda: s.proxy_metric("syncs_proxy_pending_records") == 0, timeout=10,
             what="the skipped sequences are not pending")
