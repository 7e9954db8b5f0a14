"""Metrics after a known workload: every counter the docs name, with the
value the workload implies, read from both daemons' /metrics endpoints."""

from __future__ import annotations

import socket
import struct
import time

from conftest import frame, resp, wait_for

KEEP, TEMP, OTHER, BAD = 100, 20, 7, 5


def rules(redis_url: str) -> str:
    return f"""
target local_redis = redis "{redis_url}"
rule no_temp: redis key "tmp:*" -> drop
rule keep: redis key "keep:*" -> local_redis prefix "k:"
default redis -> local_redis
"""


def test_counters_and_histograms_after_a_known_workload(syncs_factory, redis_target):
    import intc

    s = syncs_factory(rules(redis_target.url))
    r = redis_target.client(0)
    r.rpush("wrong", "x")  # an INCR on a list is refused by the target (WRONGTYPE)
    ic = intc.IncClient()
    start = time.monotonic()
    for i in range(KEEP):
        ic.redis_one(s.socket, 6379, 0, ("set", f"keep:{i}", "v"))
    for i in range(TEMP):
        ic.redis_one(s.socket, 6379, 0, ("set", f"tmp:{i}", "v"))
    for i in range(OTHER):
        ic.redis_one(s.socket, 6379, 0, ("set", f"other:{i}", "v"))
    ic.redis_one(s.socket, 6379, 0, ("incr", "wrong"))
    # Frames the proxy refuses: a Redis frame whose payload is not RESP.
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(s.socket)
        for _ in range(BAD):
            payload = b"6379,0\x01*2\r\n$3\r\nSET\r\n$99\r\nshort\r\n"
            c.sendall(struct.pack("<I", len(payload)) + payload)
        # A good frame after the bad ones, on the same connection: it stayed in step.
        good = b"6379,0\x01*3\r\n$3\r\nSET\r\n$9\r\nkeep:last\r\n$1\r\nv\r\n"
        c.sendall(struct.pack("<I", len(good)) + good)

    accepted = KEEP + 1 + TEMP + OTHER + 1
    wait_for(lambda: s.proxy_metric("syncs_proxy_records_acked_total") == accepted, timeout=20,
             what="every accepted frame acknowledged")
    # Every record was accepted and acknowledged within this span.
    span = time.monotonic() - start
    assert r.get("k:keep:last") == b"v"

    p = s.proxy_metric
    # Counted when the connection next reads, or within 50 ms (the client
    # library's connection stays open): possibly after the ACK.
    wait_for(lambda: p('syncs_proxy_frames_accepted_total{kind="redis"}') == accepted,
             what="every accepted frame counted")
    assert p('syncs_proxy_frames_refused_total{reason="bad_resp"}') == BAD
    assert p("syncs_proxy_pending_records") == 0
    assert p("syncs_proxy_links_up") == 1
    assert p('syncs_proxy_connects_total{outcome="ok"}') >= 1
    # The server kept up: every record went out from the spool's memory.
    assert p('syncs_proxy_spool_read_records_total{from="memory"}') >= accepted
    assert p('syncs_proxy_spool_read_records_total{from="disk"}') == 0
    # Every acknowledged record was observed once in the latency histogram.
    assert p("syncs_proxy_replication_latency_seconds_count") == accepted
    assert p('syncs_proxy_replication_latency_seconds_bucket{le="+Inf"}') == accepted
    # Each latency is from the record's append to its acknowledgement (in
    # whole milliseconds, hence the 1 ms), so within the span; and the
    # records did take some time to go through a server to Redis and back.
    latency = p("syncs_proxy_replication_latency_seconds_sum")
    assert 0 < latency <= accepted * (span + 0.001), (latency, accepted, span)

    m = s.server_metric
    assert m("syncs_server_records_received_total") == accepted
    assert m('syncs_server_ops_routed_total{rule="keep",target="local_redis"}') == KEEP + 1
    assert m('syncs_server_ops_routed_total{rule="default",target="local_redis"}') == OTHER + 1
    assert m('syncs_server_ops_dropped_total{rule="no_temp",reason="rule"}') == TEMP
    assert m('syncs_server_ops_applied_total{target="local_redis",kind="redis"}') == KEEP + 1 + OTHER
    assert m('syncs_server_ops_dead_lettered_total{target="local_redis",reason="refused"}') == 1
    batches = m("syncs_server_batch_duration_seconds_count")
    assert 1 <= batches <= accepted
    assert m('syncs_server_apply_duration_seconds_count{target="local_redis"}') >= 1
    assert m('syncs_server_apply_duration_seconds_bucket{target="local_redis",le="+Inf"}') == \
        m('syncs_server_apply_duration_seconds_count{target="local_redis"}')
    # The k:… keys, other:…, the list `wrong`, and the exactly-once marker
    # hash `syncs:applied`; no tmp:… key.
    assert r.dbsize() == KEEP + 1 + OTHER + 1 + 1
    assert r.keys("tmp:*") == [] and r.exists("syncs:applied")


def test_records_are_read_from_memory_or_from_disk_when_a_sender_fell_behind(syncs_factory, redis_target):
    """With the server down, more records than `--spool-memory` holds wait in
    the spool: once the server is up, they are read back from disk and
    counted as such; a record sent once the link caught up comes from
    memory."""
    import intc

    n = 400  # about 60 bytes each: 24 KiB, six times the memory
    s = syncs_factory(rules(redis_target.url), start_server=False, proxy_args=["--spool-memory", "4KiB"])
    ic = intc.IncClient()
    for i in range(n):
        ic.redis_one(s.socket, 6379, 0, ("set", f"keep:{i:04}", "v" * 8))
    assert ic.sync(s.socket, timeout=10) == 0, "every record is in the spool"
    s.start_server()
    wait_for(lambda: s.proxy_metric("syncs_proxy_records_acked_total") == n, timeout=20,
             what="every record acknowledged")
    read = {src: s.proxy_metric(f'syncs_proxy_spool_read_records_total{{from="{src}"}}')
            for src in ("disk", "memory")}
    # The oldest record was no longer in memory: the read began on disk (and
    # went on there); each record is read at least once (again after a
    # reconnect).
    assert read["disk"] > 0 and read["disk"] + read["memory"] >= n, read
    # Caught up, the next record goes out from memory.
    ic.redis_one(s.socket, 6379, 0, ("set", "keep:last", "v"))
    wait_for(lambda: s.proxy_metric("syncs_proxy_records_acked_total") == n + 1, timeout=20,
             what="the last record acknowledged")
    assert s.proxy_metric('syncs_proxy_spool_read_records_total{from="memory"}') >= read["memory"] + 1
    assert redis_target.client(0).get("k:keep:last") == b"v"


def test_frames_of_a_connection_that_stays_open_are_counted(syncs_factory, redis_target):
    """A connection does not wait for its batches to be durable, only looks
    at them when it reads (daemons/src/proxy/client.rs, `SETTLE_LAG`): one
    that writes and then goes quiet, its socket left open, still has its
    frames counted (within 50 ms), not only once it closes or sends a SYNC."""
    s = syncs_factory(rules(redis_target.url))
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(s.socket)
        for i in range(KEEP):
            c.sendall(frame(b"6379,0\x01" + resp(b"SET", b"keep:%03d" % i, b"v")))
        wait_for(lambda: s.proxy_metric('syncs_proxy_frames_accepted_total{kind="redis"}') == KEEP,
                 what="the open connection's frames counted as accepted")
        wait_for(lambda: redis_target.client(0).get("k:keep:099") == b"v", what="the last frame at the target")
