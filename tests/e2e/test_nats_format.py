"""NATS envelope formats (docs/protocol.md §4): many records per message
(format 2, the default), one per message (format 1), both in one stream,
message boundaries that change across proxy restarts, the fence key that
stops servers too old for format 2, and hand-made hostile messages.

Messages are published and the KV bucket read with nats-py, a client of
its own, so these tests see the broker as a third party would.
"""

from __future__ import annotations

import asyncio
import re
import signal

from conftest import wait_for
from test_nats import Cluster, NatsProxy, assert_exactly_once, run_writers, wait_all

N = 3000


def fnv1a(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def partition_of(stream: int, partitions: int = 16) -> int:
    return fnv1a(f"{stream:016x}".encode()) % partitions


def batch_body(first: int, records: list[bytes]) -> bytes:
    out = first.to_bytes(8, "little") + len(records).to_bytes(4, "little")
    for r in records:
        out += len(r).to_bytes(4, "little") + r
    return out


def resp(*args: str) -> bytes:
    """A new-format Redis frame payload for port 6379, db 0 (protocol.md §1a)."""
    body = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    return b"6379,0\x01" + body


async def _publish(url: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for subject, payload, headers in messages:
            await js.publish(subject, payload, headers=headers)
    finally:
        await nc.close()


async def _kv_get(url: str, bucket: str, key: str) -> bytes | None:
    import nats

    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        try:
            return (await kv.get(key)).value
        except Exception:  # noqa: BLE001 - nats-py raises KeyNotFoundError and kin
            return None
    finally:
        await nc.close()


def proxy_partition(proxy: NatsProxy) -> int:
    """The partition the proxy publishes to, from its log."""
    def found():
        text = re.sub(r"\x1b\[[0-9;]*m", "", proxy.proc.text())  # colours in the log
        return re.search(r"subject=syncs\.(\d+)\.[0-9a-f]{16}", text)

    wait_for(lambda: found() is not None, timeout=30, what="the proxy's subject in its log")
    m = found()
    assert m is not None
    return int(m.group(1))


def write_synced(socket_path: str, lo: int, hi: int) -> None:
    """RPUSH seq:a i and INCR count:a for i in lo..hi, then SYNC: every
    frame is in the proxy's spool on disk when this returns (without it,
    frames in the socket's buffer at a kill -9 are lost, test_faults.py)."""
    import intc

    ic = intc.IncClient()
    for i in range(lo, hi + 1):
        ic.redis_one(socket_path, 6379, 0, ("rpush", "seq:a", str(i)))
        ic.redis_one(socket_path, 6379, 0, ("incr", "count:a"))
    assert ic.sync(socket_path, 30.0) == 0


def test_proxy_restarts_with_other_message_sizes_each_record_once(tmp_path, redis_target):
    """kill -9 of the proxy right after each third of the writes is in its
    spool, restarted with 1 then 7 records per message: records resent in
    messages cut at other boundaries, in both formats, are applied once and
    in order."""
    c = Cluster(tmp_path, redis_target.url)
    try:
        s1 = c.server("s1")
        c.proxy("p1")
        r = redis_target.client(0)
        third = N // 3
        for step, size in enumerate(("1", "7")):
            write_synced(c.proxies[0].socket, step * third + 1, (step + 1) * third)
            c.proxies[0].stop(signal.SIGKILL)
            c.proxies[0] = NatsProxy(tmp_path, "p1", c.nats.url, ["--nats-records-per-message", size])
        write_synced(c.proxies[0].socket, 2 * third + 1, N)
        wait_all(c, r, ["a"], N, timeout=120)
        assert_exactly_once(r, ["a"], N, "nats: proxy restarted with other message sizes")
        print(f"\nrecords received again after the restarts (skipped): "
              f"{s1.metric('syncs_server_records_duplicate_total')}")
        fence = asyncio.run(_kv_get(c.nats.url, "SYNCS_applied", "ffffffffffffffff"))
        assert fence is not None and b"upgrade" in fence, fence
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_hostile_messages_are_counted_and_stop_only_their_partition(tmp_path, redis_target):
    """Hand-made messages on the stream: a format-2 message whose body does
    not match its headers is counted and terminated; one naming the fence
    as its source too; a message of a newer format is never terminated (its
    partition waits for a newer server) and holds back no other partition;
    a well-formed hand-made format-2 message is applied."""
    c = Cluster(tmp_path, redis_target.url)
    try:
        s1 = c.server("s1")
        proxy = c.proxy("p1")
        r = redis_target.client(0)
        mine = proxy_partition(proxy)
        # The newer-format source in another partition than the proxy's; the
        # other hand-made sources in neither of the two.
        newer = next(s for s in range(1, 5000) if partition_of(s) != mine)
        held = {mine, partition_of(newer)}
        bad_body, fence_src, good = [s for s in range(5000, 10000) if partition_of(s) not in held][:3]

        def headers(src: int, first: int, count: int, prev: int, fmt: str = "2") -> dict[str, str]:
            return {"Nats-Msg-Id": f"{src:016x}:{first}-{first + count - 1}", "Syncs-Format": fmt,
                    "Syncs-Stream": "ffffffffffffffff", "Syncs-Source": f"{src:016x}",
                    "Syncs-Seq": str(first), "Syncs-Count": str(count), "Syncs-Prev": str(prev),
                    "Syncs-Name": "hand-made"}

        def subject(src: int) -> str:
            return f"syncs.{partition_of(src)}.{src:016x}"

        two = [resp("rpush", "hand", "1"), resp("rpush", "hand", "2")]
        asyncio.run(_publish(c.nats.url, [
            # Says 3 records, holds 2.
            (subject(bad_body), batch_body(1, two), headers(bad_body, 1, 3, 0)),
            # The fence as its own source.
            (subject(fence_src), batch_body(1, two), {**headers(fence_src, 1, 2, 0),
                                                      "Syncs-Source": "ffffffffffffffff"}),
            # From a syncs with a format 3.
            (subject(newer), b"whatever format 3 holds", headers(newer, 1, 1, 0, fmt="3")),
            # Well formed.
            (subject(good), batch_body(1, two), headers(good, 1, 2, 0)),
        ]))
        wait_for(lambda: s1.metric_where("syncs_server_records_refused_total",
                                         reason="bad_nats_message") >= 2,
                 timeout=30, what="both bad messages counted")
        wait_for(lambda: "from a newer syncs" in s1.proc.text(), timeout=30,
                 what="the newer format named in the log")
        wait_for(lambda: r.lrange("hand", 0, -1) == [b"1", b"2"], timeout=30,
                 what="the well-formed hand-made message applied")
        # The proxy's records flow on while the newer message's partition waits.
        for t in run_writers(c, ["a"], 500):
            t.join(120)
        wait_for(lambda: r.llen("seq:a") >= 500, timeout=60, what="the proxy's writes applied")
        assert [int(x) for x in r.lrange("seq:a", 0, -1)] == list(range(1, 501))
        assert s1.metric_where("syncs_server_records_refused_total", reason="bad_nats_message") == 2
        assert s1.proc.alive()
        # Never terminated: the format-3 message is still owed to a consumer.
        assert not c.nats.consumers_settled("SYNCS")
        assert "bad message" in s1.proc.text()
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
