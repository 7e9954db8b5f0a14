"""Target isolation: a target that is down or slow holds back only itself.

Since 3ec8de2 the server gives each target of a stream its own lane
(daemons/src/server/lane.rs): the stream's ACK is the lowest position over
its targets, and a lane holds at most `[server] target_backlog` bytes (past
that it spills and, once drained, asks the proxy to resend: REWIND).

Each test runs real processes (redis-server, FerretDB, sync_server, proxy),
writes a numbered sequence (RPUSH i) at a fixed pace while one target is
down, and checks:

- the target that is up keeps up: every write is visible there within
  MAX_LAG seconds of being sent (a sampler polls LLEN; a write's lag is the
  time from its send to the first sample that shows it, so it is an upper
  bound, sampling interval included);
- once the other target is back, it ends with exactly what was sent, in
  order, no loss, no duplicate;
- the per-target gauges tell the story (behind while down, 0 after).

Each test prints a RELIABILITY line with its figures.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

from conftest import Ferret, Redis, default_rules, free_port, wait_for

# A write must be visible at a target that is up within this many seconds.
MAX_LAG = 2.0


# --- writers and samplers -------------------------------------------------------------------


class Writer(threading.Thread):
    """Sends RPUSH `key` i for i in 1..n, paced evenly over `seconds`, and
    records when each call returned (the frame is in the proxy's socket).

    `value_pad`: bytes of padding after "i:" (0: the value is just "i").
    `every`/`extra`: every `every` writes, `extra(ic, i)` sends more frames
    (the Mongo writes of the first test)."""

    def __init__(self, socket_path: str, n: int, seconds: float, key: str, value_pad: int = 0,
                 every: int = 0, extra=None):
        super().__init__(daemon=True)
        self.socket_path, self.n, self.seconds, self.key = socket_path, n, seconds, key
        self.pad = "x" * value_pad
        self.every, self.extra = every, extra
        self.sent_at: list[float] = []
        self.started_at = 0.0
        self.error: BaseException | None = None

    def value(self, i: int) -> str:
        return f"{i}:{self.pad}" if self.pad else str(i)

    def run(self):
        import intc

        ic = intc.IncClient()
        try:
            self.started_at = t0 = time.monotonic()
            for i in range(1, self.n + 1):
                due = t0 + self.seconds * (i - 1) / self.n
                ahead = due - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                ic.redis_one(self.socket_path, 6379, 0, ("rpush", self.key, self.value(i)))
                self.sent_at.append(time.monotonic())
                if self.every and i % self.every == 0:
                    self.extra(ic, i)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def sent(self) -> int:
        return len(self.sent_at)

    def finish(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), f"the writer did not finish in {timeout}s ({self.sent()} sent)"
        if self.error is not None:
            raise AssertionError(f"the writer failed after {self.sent()} writes: {self.error!r}")


class Sampler(threading.Thread):
    """Polls LLEN `key` on the Redis `target` every `interval` s, on a
    connection of its own: (time of the reply, length)."""

    def __init__(self, target: Redis, key: str, interval: float = 0.02):
        super().__init__(daemon=True)
        self.client = target._redis.Redis(host="127.0.0.1", port=target.port, socket_timeout=2.0)
        self.key, self.interval = key, interval
        self.samples: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                n = self.client.llen(self.key)
                self.samples.append((time.monotonic(), n))
            except Exception as e:  # noqa: BLE001 - counted, shown in the verdict
                self.errors.append(repr(e))
            self.halt.wait(self.interval)

    def seen(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def wait_seen(self, n: int):
        """Until a sample shows `n` entries (the main thread saw them already)."""
        wait_for(lambda: self.seen() >= n or not self.is_alive(), timeout=10,
                 what=f"the sampler to see {n} entries")
        assert self.seen() >= n, f"sampler stopped at {self.seen()}: {self.errors[-3:]}"

    def stop(self):
        self.halt.set()
        self.join(5)

    def lags(self, sent_at: list[float]) -> list[float | None]:
        """Per write: seconds from its send to the first sample showing it
        (None: no sample showed it)."""
        out: list[float | None] = []
        j = 0
        for i, sent in enumerate(sent_at, 1):
            while j < len(self.samples) and self.samples[j][1] < i:
                j += 1
            out.append(None if j == len(self.samples) else max(0.0, self.samples[j][0] - sent))
        return out


def lag_figures(lags: list[float | None], sent_at: list[float], since: float = 0.0) -> dict:
    """Max and p99 lag over the writes sent at or after `since`."""
    chosen = [l for l, t in zip(lags, sent_at) if t >= since]
    seen = sorted(l for l in chosen if l is not None)
    return {"writes": len(chosen), "unseen": len(chosen) - len(seen),
            "max": round(seen[-1], 3) if seen else None,
            "p99": round(seen[int(len(seen) * 0.99) - 1], 3) if seen else None}


def assert_kept_up(lags, sent_at, what: str, since: float = 0.0):
    figures = lag_figures(lags, sent_at, since)
    late = [(i, None if l is None else round(l, 3)) for i, (l, t) in enumerate(zip(lags, sent_at), 1)
            if t >= since and (l is None or l > MAX_LAG)]
    assert not late, (f"{what}: {len(late)} writes not visible within {MAX_LAG}s "
                      f"(first: {late[:10]}); {figures}")
    return figures


# --- metrics --------------------------------------------------------------------------------

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def series(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of metric `name` over its series whose labels include `labels`."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(LABEL.findall(rest))
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def server_metrics(s) -> dict[str, float]:
    try:
        return s._metrics(s.server_metrics)
    except OSError:  # the server is down (killed on purpose) or restarting
        return {}


GAUGES = {
    "position": "syncs_server_target_position",
    "behind_records": "syncs_server_target_behind_records",
    "behind_seconds": "syncs_server_target_behind_seconds",
    "down_seconds": "syncs_server_target_down_seconds",
    "backlog_bytes": "syncs_server_target_backlog_bytes",
}


def gauge(s, what: str, target: str) -> float:
    return series(server_metrics(s), GAUGES[what], target=target)


class GaugeWatcher(threading.Thread):
    """Samples the per-target gauges every `interval` s: (time, {(what, target): value})."""

    def __init__(self, s, targets: list[str], interval: float = 0.25):
        super().__init__(daemon=True)
        self.s, self.targets, self.interval = s, targets, interval
        self.samples: list[tuple[float, dict[tuple[str, str], float]]] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            m = server_metrics(self.s)
            if m:
                self.samples.append((time.monotonic(), {
                    (what, t): series(m, name, target=t)
                    for what, name in GAUGES.items() for t in self.targets}))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(5)

    def peak(self, what: str, target: str, start: float = 0.0, end: float = float("inf")) -> float:
        return max((v[(what, target)] for t, v in self.samples if start <= t <= end), default=0.0)


# --- verdicts -------------------------------------------------------------------------------


def list_figures(r, key: str, n: int) -> dict:
    got = [int(x.split(b":", 1)[0]) for x in r.lrange(key, 0, -1)]
    distinct = set(got)
    return {"arrived": len(distinct), "duplicates": len(got) - len(distinct),
            "lost": len(set(range(1, n + 1)) - distinct),
            "in_order": got == sorted(got), "exact": got == list(range(1, n + 1)),
            "values": got}


def report(name: str, **figures) -> dict:
    line = {"test": name, **figures}
    print(f"\nRELIABILITY {line}")
    return line


def fanout_rules(a_url: str, b_url: str) -> str:
    return f"""
target a = redis "{a_url}"
target b = redis "{b_url}"
rule r: redis key "fan:*" -> a, b
"""


def wait_all_acked(s, timeout: float = 120):
    """Every record the proxy took is done at every target (the ACK is the
    lowest position over the targets)."""
    wait_for(lambda: s.proxy_metric("syncs_proxy_pending_records") == 0, timeout=timeout,
             interval=0.2, what="the proxy's pending records at 0 (every target done)")


def wait_caught_up(s, target: str, timeout: float = 30):
    """The server's gauges say `target` is done with everything and not down."""
    wait_for(lambda: all(gauge(s, w, target) == 0
                         for w in ("behind_records", "behind_seconds", "down_seconds")),
             timeout=timeout, interval=0.25, what=f"target {target}'s behind/down gauges at 0")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# --- 1. Mongo down, Redis unaffected --------------------------------------------------------

MONGO_DOWN_S = 60.0
N1 = 10_000
MONGO_EVERY = 100
MONGO_DB, MONGO_DOCS, MONGO_LOG = "iso", "docs", "log"


def test_mongo_down_does_not_hold_back_redis(syncs_factory, redis_target, tmp_path):
    """The shipped default rules; FerretDB is not running for the first 60 s
    while one writer sends 10,000 RPUSHes (paced over those 60 s) and a Mongo
    write every 100. Redis keeps up all along; once FerretDB starts (on the
    port the rules name), every Mongo write arrives, in order, once."""
    from intc_mg import mg_insert_many, mg_update_one

    mongo_port = free_port()
    s = syncs_factory(default_rules(redis_target.url, f"mongodb://127.0.0.1:{mongo_port}/"))
    r = redis_target.client(0)
    sent_mongo: list[int] = []

    def mongo_write(ic, i: int):
        k = i // MONGO_EVERY
        # An insert (count and set of `n` show loss and duplicates)...
        ic.mongo_exec(s.socket, MONGO_DB, MONGO_DOCS, mg_insert_many([{"_id": k, "n": k, "i": i}]))
        # ...and a $push onto one log document: its array is the order in
        # which the target applied the stream's Mongo writes.
        ic.mongo_exec(s.socket, MONGO_DB, MONGO_LOG,
                      mg_update_one({"_id": "order"}, {"$push": {"seq": k}}, upsert=True))
        sent_mongo.append(k)

    sampler = Sampler(redis_target, "seq")
    watcher = GaugeWatcher(s, ["local_redis", "local_mongo"])
    writer = Writer(s.socket, N1, MONGO_DOWN_S, "seq", every=MONGO_EVERY, extra=mongo_write)
    ferret: Ferret | None = None
    sampler.start()
    watcher.start()
    t0 = time.monotonic()
    writer.start()
    try:
        # While FerretDB is down: the server says local_mongo is down and
        # behind, local_redis is not.
        wait_for(lambda: gauge(s, "down_seconds", "local_mongo") > 0
                 and gauge(s, "behind_records", "local_mongo") > 0,
                 timeout=20, interval=0.25, what="local_mongo shown down and behind")
        # The outage itself: the writer runs; FerretDB starts 60 s after the writer did.
        writer.finish(timeout=MONGO_DOWN_S + 60)
        wait_for(lambda: time.monotonic() - t0 >= MONGO_DOWN_S, timeout=MONGO_DOWN_S + 5,
                 interval=0.1, what="the end of the Mongo outage")
        wait_for(lambda: r.llen("seq") >= N1, timeout=10, what="every Redis write while Mongo is down")
        sampler.wait_seen(N1)
        mongo_down_until = time.monotonic()
        redis_during = list_figures(r, "seq", N1)
        ferret = Ferret(tmp_path, port=mongo_port)
        mongo_up_at = time.monotonic()
        coll = ferret.client()[MONGO_DB]
        m_total = len(sent_mongo)

        def mongo_done():
            log = coll[MONGO_LOG].find_one({"_id": "order"})
            return coll[MONGO_DOCS].count_documents({}) >= m_total and log and len(log["seq"]) >= m_total

        wait_for(mongo_done, timeout=90, interval=0.5, what="every Mongo write after FerretDB started")
        caught_up_s = time.monotonic() - mongo_up_at
        wait_all_acked(s)
        wait_caught_up(s, "local_mongo")
    finally:
        sampler.stop()
        watcher.stop()
    try:
        lags = sampler.lags(writer.sent_at)
        redis_lag = lag_figures(lags, writer.sent_at)
        docs = sorted(d["n"] for d in coll[MONGO_DOCS].find({}, {"n": 1}))
        order = coll[MONGO_LOG].find_one({"_id": "order"})["seq"]
        redis_final = list_figures(r, "seq", N1)
        m = server_metrics(s)
        report("mongo down 60 s, redis unaffected", sent_redis=N1, sent_mongo=m_total,
               redis_arrived=redis_final["arrived"], redis_duplicates=redis_final["duplicates"],
               redis_lost=redis_final["lost"], redis_in_order=redis_final["in_order"],
               redis_max_lag_s=redis_lag["max"], redis_p99_lag_s=redis_lag["p99"],
               mongo_arrived=len(set(docs)), mongo_docs=len(docs),
               mongo_duplicates=len(order) - len(set(order)), mongo_lost=m_total - len(set(docs)),
               mongo_in_order=order == sorted(order),
               mongo_down_s=round(mongo_down_until - t0, 1),
               mongo_caught_up_after_start_s=round(caught_up_s, 1),
               gauge_mongo_max_behind_records=watcher.peak("behind_records", "local_mongo"),
               gauge_mongo_max_down_s=watcher.peak("down_seconds", "local_mongo"),
               gauge_mongo_max_behind_s=watcher.peak("behind_seconds", "local_mongo"),
               gauge_redis_max_behind_s=watcher.peak("behind_seconds", "local_redis", end=mongo_down_until),
               mongo_duplicate_keys=series(m, "syncs_server_mongo_duplicate_keys_total"),
               dead_letters=len(s.dead_letters()), sampler_errors=len(sampler.errors))
        assert redis_during["exact"], {k: v for k, v in redis_during.items() if k != "values"}
        assert_kept_up(lags, writer.sent_at, "Redis while Mongo was down")
        assert redis_final["exact"]
        assert docs == list(range(1, m_total + 1)), docs
        assert order == list(range(1, m_total + 1)), order
        assert m_total == N1 // MONGO_EVERY
        assert series(m, "syncs_server_mongo_duplicate_keys_total") == 0
        assert s.dead_letters() == []
        # The oldest Mongo write (sent ~0.6 s in) waited the whole outage.
        # down_seconds counts from the first failed attempt, which ends only
        # at the driver's server-selection timeout (10 s here): not compared.
        assert watcher.peak("behind_seconds", "local_mongo", end=mongo_down_until) >= MONGO_DOWN_S - 5
        assert watcher.peak("down_seconds", "local_mongo", end=mongo_down_until) > 0
        assert watcher.peak("down_seconds", "local_redis") == 0
        assert watcher.peak("behind_seconds", "local_redis", end=mongo_down_until) < MAX_LAG
    finally:
        if ferret is not None:
            ferret.stop()


# --- 2, 3. fan-out to two Redis, one stopped -------------------------------------------------

N2 = 20_000
WRITE_S = 40.0
B_DOWN_AT = 5.0
B_DOWN_S = 30.0
KEY = "fan:list"


def fanout_run(syncs_factory, tmp_path, name: str, kill_server_at: float | None = None):
    """RPUSH 1..N2 to fan:list, routed to a and b, paced over WRITE_S; b is
    stopped from B_DOWN_AT for B_DOWN_S. With `kill_server_at`, the
    sync_server is killed (SIGKILL) and restarted at that time, b still down."""
    a = Redis(tmp_path)
    b = Redis(tmp_path, persistent=True)
    try:
        s = syncs_factory(fanout_rules(a.url, b.url))
        ra, rb = a.client(0), b.client(0)
        sampler = Sampler(a, KEY)
        watcher = GaugeWatcher(s, ["a", "b"])
        writer = Writer(s.socket, N2, WRITE_S, KEY)
        sampler.start()
        watcher.start()
        writer.start()
        restarted_at = killed_at = None
        try:
            wait_for(lambda: writer.sent_at and time.monotonic() - writer.started_at >= B_DOWN_AT,
                     timeout=B_DOWN_AT + 10, interval=0.05, what="time to stop b")
            assert rb.llen(KEY) > 0, "b received nothing before it was stopped"
            b.proc.stop()  # SIGTERM: Redis writes its AOF and exits
            down_at = time.monotonic()
            wait_for(lambda: gauge(s, "behind_records", "b") > 0 and gauge(s, "down_seconds", "b") > 0,
                     timeout=10, interval=0.25, what="b shown behind and down")
            if kill_server_at is not None:
                wait_for(lambda: time.monotonic() - writer.started_at >= kill_server_at,
                         timeout=kill_server_at + 10, interval=0.05, what="time to kill the server")
                killed_at = time.monotonic()
                s.server.stop(signal.SIGKILL)
                s.start_server()
                restarted_at = time.monotonic()
                # The new server knows nothing of b's position but its
                # own; it must find b behind again, not hold a back.
                wait_for(lambda: gauge(s, "behind_records", "b") > 0 and gauge(s, "down_seconds", "b") > 0,
                         timeout=15, interval=0.25, what="b shown behind and down by the restarted server")
            wait_for(lambda: time.monotonic() - down_at >= B_DOWN_S, timeout=B_DOWN_S + 10,
                     interval=0.1, what="the end of b's outage")
            b_behind_at_end = gauge(s, "behind_records", "b")
            b_down_gauge_at_end = gauge(s, "down_seconds", "b")
            a_behind_at_end = gauge(s, "behind_records", "a")
            b.proc.start()
            up_at = time.monotonic()
            wait_for(b.ping, what="b back")
            writer.finish(timeout=WRITE_S + 60)
            wait_for(lambda: ra.llen(KEY) >= N2, timeout=20, what="every write at a")
            sampler.wait_seen(N2)
            wait_for(lambda: rb.llen(KEY) >= N2, timeout=120, interval=0.2, what="every write at b")
            b_caught_up_s = time.monotonic() - up_at
            wait_all_acked(s)
            wait_caught_up(s, "b")
            wait_caught_up(s, "a")
        finally:
            sampler.stop()
            watcher.stop()
        lags = sampler.lags(writer.sent_at)
        fa, fb = list_figures(ra, KEY, N2), list_figures(rb, KEY, N2)
        whole = lag_figures(lags, writer.sent_at)
        report(name, sent=N2, arrived_a=fa["arrived"], arrived_b=fb["arrived"],
               duplicates_a=fa["duplicates"], duplicates_b=fb["duplicates"],
               lost_a=fa["lost"], lost_b=fb["lost"], in_order_a=fa["in_order"], in_order_b=fb["in_order"],
               a_max_lag_s=whole["max"], a_p99_lag_s=whole["p99"],
               a_max_lag_after_restart_s=(lag_figures(lags, writer.sent_at, restarted_at + 5)["max"]
                                          if restarted_at else None),
               server_restart_s=round(restarted_at - killed_at, 2) if restarted_at else None,
               b_down_s=round(up_at - down_at, 1),
               sent_while_b_down=sum(1 for t in writer.sent_at if down_at <= t < up_at),
               b_caught_up_after_restart_s=round(b_caught_up_s, 1),
               gauge_b_behind_records_at_end_of_outage=b_behind_at_end,
               gauge_b_down_s_at_end_of_outage=b_down_gauge_at_end,
               gauge_a_behind_records_at_end_of_outage=a_behind_at_end,
               gauge_b_max_behind_records=watcher.peak("behind_records", "b"),
               gauge_a_max_behind_s_while_b_down=watcher.peak("behind_seconds", "a", down_at, up_at),
               # records a had already (redelivered after the kill: skipped by its marker)
               a_already_applied=series(server_metrics(s), "syncs_server_redis_already_applied_total",
                                        target="a"),
               dead_letters=len(s.dead_letters()), sampler_errors=len(sampler.errors))
        if restarted_at is None:
            assert_kept_up(lags, writer.sent_at, "a while b was down")
        else:
            # Before the kill and from 5 s after the restart, a keeps up
            # (the writes sent in between wait for the new server).
            before = [l if t < killed_at - 0.5 else 0.0 for l, t in zip(lags, writer.sent_at)]
            assert_kept_up(before, writer.sent_at, "a before the server was killed")
            assert_kept_up(lags, writer.sent_at, "a after the server restarted, b still down",
                           since=restarted_at + 5)
        assert b_behind_at_end > 0 and b_down_gauge_at_end > 0
        assert fa["exact"], {k: v for k, v in fa.items() if k != "values"}
        assert fb["exact"], {k: v for k, v in fb.items() if k != "values"}
        assert fb["values"] == fa["values"]
        assert s.dead_letters() == []
        return s, watcher
    finally:
        a.stop()
        b.stop()


def test_fanout_one_redis_stopped(syncs_factory, tmp_path):
    fanout_run(syncs_factory, tmp_path, "fan-out a,b; b stopped 30 s")


def test_fanout_server_killed_while_one_target_behind(syncs_factory, tmp_path):
    fanout_run(syncs_factory, tmp_path, "fan-out a,b; b stopped 30 s; server kill -9 meanwhile",
               kill_server_at=B_DOWN_AT + 10)


# --- 4. backlog cap exceeded while a target is down ------------------------------------------

N4 = 60_000
PAD4 = 200
WRITE4_S = 30.0
CAP = "1MiB"
CAP_BYTES = 1 << 20
# RSS allowed above the baseline: the cap, plus what the server holds
# whatever the cap: the batches in hand (a gathered batch is up to 8,192
# records, ~250 B each: 2 MiB, and its decoded operations), the lane of the
# target that is up, socket buffers and the allocator's slack. Measured on
# the 2-core VM (same workload, b down): with the 1MiB cap the peak is
# baseline + 7.5 MiB; with the default 64MiB cap (nothing spills) b's lane
# holds 15 MB of records and the peak is baseline + 82 MiB. 32 MiB sits
# well between the two.
RSS_MARGIN = 32 << 20


def test_backlog_cap_exceeded_while_target_down(syncs_factory, tmp_path):
    a = Redis(tmp_path)
    b = Redis(tmp_path, persistent=True)
    try:
        s = syncs_factory(fanout_rules(a.url, b.url), server_ini=f"target_backlog = {CAP}\n")
        ra, rb = a.client(0), b.client(0)
        pid = s.server.p.pid
        # Warm up both targets (connections, pools), then take the baseline.
        import intc

        ic = intc.IncClient()
        for i in range(1, 201):
            ic.redis_one(s.socket, 6379, 0, ("rpush", "fan:warm", f"{i}:" + "x" * PAD4))
        wait_for(lambda: ra.llen("fan:warm") == 200 and rb.llen("fan:warm") == 200, what="warm-up at a and b")
        wait_all_acked(s, timeout=20)
        baseline = rss_kib(pid)

        b.proc.stop()
        down_at = time.monotonic()
        sampler = Sampler(a, KEY)
        watcher = GaugeWatcher(s, ["a", "b"])
        writer = Writer(s.socket, N4, WRITE4_S, KEY, value_pad=PAD4)
        rss: list[int] = []
        halt = threading.Event()

        def measure():
            while not halt.is_set():
                rss.append(rss_kib(pid))
                halt.wait(0.05)

        meter = threading.Thread(target=measure, daemon=True)
        meter.start()
        sampler.start()
        watcher.start()
        writer.start()
        try:
            wait_for(lambda: series(server_metrics(s), "syncs_server_target_spilled_records_total",
                                    target="b") > 0,
                     timeout=WRITE4_S, interval=0.25, what="b's backlog spilled")
            writer.finish(timeout=WRITE4_S + 60)
            wait_for(lambda: ra.llen(KEY) >= N4, timeout=20, what="every write at a")
            sampler.wait_seen(N4)
            wait_for(lambda: time.monotonic() - down_at >= B_DOWN_S, timeout=B_DOWN_S + 10,
                     interval=0.1, what="b down for 30 s at least")
            peak_backlog_b = watcher.peak("backlog_bytes", "b")
            spilled = series(server_metrics(s), "syncs_server_target_spilled_records_total", target="b")
            rewinds_before = series(server_metrics(s), "syncs_server_rewinds_total")
            halt.set()
            meter.join(5)
            peak_rss = max(rss)
            b.proc.start()
            up_at = time.monotonic()
            wait_for(b.ping, what="b back")
            wait_for(lambda: rb.llen(KEY) >= N4, timeout=180, interval=0.25, what="every write at b")
            b_caught_up_s = time.monotonic() - up_at
            wait_all_acked(s)
            wait_caught_up(s, "b")
        finally:
            halt.set()
            sampler.stop()
            watcher.stop()
        m = server_metrics(s)
        rewinds = series(m, "syncs_server_rewinds_total")
        proxy_rewinds = s.proxy_metric("syncs_proxy_rewinds_total")
        lags = sampler.lags(writer.sent_at)
        lag = lag_figures(lags, writer.sent_at)
        fa, fb = list_figures(ra, KEY, N4), list_figures(rb, KEY, N4)
        limit_kib = baseline + (CAP_BYTES + RSS_MARGIN) // 1024
        report("backlog cap 1MiB exceeded while b down", sent=N4, value_bytes=PAD4,
               arrived_a=fa["arrived"], arrived_b=fb["arrived"],
               duplicates_a=fa["duplicates"], duplicates_b=fb["duplicates"],
               lost_a=fa["lost"], lost_b=fb["lost"], in_order_a=fa["in_order"], in_order_b=fb["in_order"],
               a_max_lag_s=lag["max"], a_p99_lag_s=lag["p99"],
               rss_baseline_mib=round(baseline / 1024, 1), rss_peak_mib=round(peak_rss / 1024, 1),
               rss_limit_mib=round(limit_kib / 1024, 1),
               gauge_b_peak_backlog_bytes=peak_backlog_b, spilled_records_b=spilled,
               rewinds_before_b_back=rewinds_before, rewinds=rewinds, proxy_rewinds=proxy_rewinds,
               b_down_s=round(up_at - down_at, 1), b_caught_up_after_restart_s=round(b_caught_up_s, 1),
               dead_letters=len(s.dead_letters()), sampler_errors=len(sampler.errors))
        assert_kept_up(lags, writer.sent_at, "a while b was down and spilling")
        assert peak_rss <= limit_kib, (peak_rss, baseline)
        # A lane with nothing queued takes a whole batch (up to 8,192
        # records gathered) whatever its size; past that, the cap holds.
        assert peak_backlog_b <= CAP_BYTES + 8192 * (PAD4 + 40), peak_backlog_b
        assert spilled > 0
        assert rewinds > 0 and proxy_rewinds > 0
        assert fa["exact"], {k: v for k, v in fa.items() if k != "values"}
        assert fb["exact"], {k: v for k, v in fb.items() if k != "values"}
        assert fb["values"] == fa["values"]
        assert s.dead_letters() == []
        # The counter is "records a target's backlog had no room for": b's
        # lane held at most peak_backlog_b bytes of records (each > PAD4
        # bytes), so every other record written while b was down spilled.
        held_at_most = int(peak_backlog_b) // PAD4
        assert spilled >= N4 - held_at_most, (
            f"syncs_server_target_spilled_records_total{{target=\"b\"}} is {spilled:.0f}, but b's lane "
            f"held at most {held_at_most} of the {N4} records written while b was down")
    finally:
        a.stop()
        b.stop()
