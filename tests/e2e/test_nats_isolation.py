"""NATS transport, target isolation: each target reads each partition
through a JetStream consumer of its own (daemons/src/server/nats/), so a
target that is down holds back only itself, and its backlog waits in the
stream, not in the server's memory.

Real processes: nats-server -js, two redis-servers, a sync_server with
`[transport] kind = nats`, a proxy publishing to NATS. One writer sends
RPUSH 1..N (paced), fanned out to Redis a and b; b is stopped for a while
and the sync_server is killed (SIGKILL) and started again while b is down.
Checked:

- a keeps up (every write visible within MAX_LAG s) before the kill and
  from a few seconds after the restart (the new server waits for the old
  lease to lapse);
- b, once back, ends with exactly the list a has: no loss, no duplicate,
  in order;
- b is shown behind and down by the gauges while it is down;
- once both are done, the partition purge has emptied the stream (a record
  stays only until the last target that reads it is done with it).
"""

from __future__ import annotations

import signal
import time

from conftest import Redis, wait_for
from test_isolation import (Sampler, Writer, assert_kept_up, fanout_rules, lag_figures,
                            list_figures, report)
from test_nats import Cluster

KEY = "fan:nats"
N = 6_000
WRITE_S = 30.0
B_DOWN_AT = 5.0
B_DOWN_S = 15.0
KILL_AT = B_DOWN_AT + 6.0
# After a kill -9 the lease of the dead server lapses after lease_ttl (3 s
# in these tests) and the new server takes it on its next round.
RESTART_GRACE_S = 8.0


def target_gauge(server, name: str, target: str) -> float:
    return server.metric_where(name, target=target)


def test_nats_fanout_one_target_down_then_server_killed(tmp_path):
    a = Redis(tmp_path)
    b = Redis(tmp_path, persistent=True)
    c = Cluster(tmp_path, a.url)
    try:
        c.rules.write_text(fanout_rules(a.url, b.url))
        s = c.server("s1")
        p = c.proxy("p1")
        ra, rb = a.client(0), b.client(0)
        sampler = Sampler(a, KEY)
        writer = Writer(p.socket, N, WRITE_S, KEY)
        sampler.start()
        writer.start()
        try:
            wait_for(lambda: writer.sent_at and time.monotonic() - writer.started_at >= B_DOWN_AT,
                     timeout=B_DOWN_AT + 10, interval=0.05, what="time to stop b")
            wait_for(lambda: rb.llen(KEY) > 0, timeout=10, what="b receiving before it stops")
            b.proc.stop()
            down_at = time.monotonic()
            wait_for(lambda: target_gauge(s, "syncs_server_target_down_seconds", "b") > 0,
                     timeout=15, interval=0.25, what="b shown down")
            wait_for(lambda: time.monotonic() - writer.started_at >= KILL_AT,
                     timeout=KILL_AT + 10, interval=0.05, what="time to kill the server")
            killed_at = time.monotonic()
            s.stop(signal.SIGKILL)
            c.servers.remove(s)
            s = c.server("s1")
            restarted_at = time.monotonic()
            wait_for(lambda: target_gauge(s, "syncs_server_target_down_seconds", "b") > 0,
                     timeout=20, interval=0.25, what="b shown down by the restarted server")
            b_pending = s.metric_where("syncs_server_nats_pending_records", target="b")
            wait_for(lambda: time.monotonic() - down_at >= B_DOWN_S, timeout=B_DOWN_S + 10,
                     interval=0.1, what="the end of b's outage")
            b.proc.start()
            up_at = time.monotonic()
            wait_for(b.ping, what="b back")
            writer.finish(timeout=WRITE_S + 60)
            wait_for(lambda: ra.llen(KEY) >= N, timeout=30, what="every write at a")
            sampler.wait_seen(N)
            wait_for(lambda: rb.llen(KEY) >= N, timeout=120, interval=0.2, what="every write at b")
            b_caught_up_s = time.monotonic() - up_at
            # Both consumers have acknowledged everything and the purge has
            # emptied the stream.
            wait_for(lambda: s.metric_where("syncs_server_nats_pending_records", target="a") == 0
                     and s.metric_where("syncs_server_nats_pending_records", target="b") == 0,
                     timeout=30, interval=0.25, what="no record pending for a or b")
            wait_for(lambda: c.nats.stream_messages("SYNCS") == 0, timeout=30, interval=0.25,
                     what="the stream purged")
        finally:
            sampler.stop()
        lags = sampler.lags(writer.sent_at)
        fa, fb = list_figures(ra, KEY, N), list_figures(rb, KEY, N)
        report("nats fan-out a,b; b stopped 15 s; server kill -9 meanwhile", sent=N,
               arrived_a=fa["arrived"], arrived_b=fb["arrived"],
               duplicates_a=fa["duplicates"], duplicates_b=fb["duplicates"],
               lost_a=fa["lost"], lost_b=fb["lost"],
               in_order_a=fa["in_order"], in_order_b=fb["in_order"],
               a_p99_lag_s_before_kill=lag_figures(
                   [l if t < killed_at - 0.5 else 0.0 for l, t in zip(lags, writer.sent_at)],
                   writer.sent_at)["p99"],
               a_max_lag_s_after_restart=lag_figures(lags, writer.sent_at,
                                                     restarted_at + RESTART_GRACE_S)["max"],
               b_down_s=round(up_at - down_at, 1), b_pending_after_restart=b_pending,
               b_caught_up_after_restart_s=round(b_caught_up_s, 1))
        before = [l if t < killed_at - 0.5 else 0.0 for l, t in zip(lags, writer.sent_at)]
        assert_kept_up(before, writer.sent_at, "a before the server was killed")
        assert_kept_up(lags, writer.sent_at, "a after the server restarted, b still down",
                       since=restarted_at + RESTART_GRACE_S)
        assert b_pending > 0, "b's consumer showed nothing pending while b was down"
        assert fa["exact"], {k: v for k, v in fa.items() if k != "values"}
        assert fb["exact"], {k: v for k, v in fb.items() if k != "values"}
        assert fb["values"] == fa["values"]
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
        a.stop()
        b.stop()
