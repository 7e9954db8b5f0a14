"""NATS JetStream transport: proxies publish to a real `nats-server -js`,
sync_servers consume it through partition leases and apply to a real Redis.

Every test writes numbered sequences (RPUSH seq:<source> i, INCR
count:<source>, each its own frame) and checks the target afterwards: each
source's list must be exactly 1..n (loss, duplication and reordering all
show) and its counter n.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from conftest import BIN, Nats, Proc, default_rules, free_port, port_open, socket_answers, wait_for

N = 1500


class NatsServer:
    """A sync_server with `[transport] kind = nats`."""

    def __init__(self, tmp: Path, name: str, rules: Path, nats_url: str, extra: str = ""):
        self.name = name
        self.metrics = free_port()
        self.config = tmp / f"{name}.ini"
        self.config.write_text(
            "[server]\n"
            f"rules = {rules}\n"
            f"dead_letter = {tmp / (name + '-dead.jsonl')}\n"
            f"metrics = 127.0.0.1:{self.metrics}\n"
            "[transport]\n"
            "kind = nats\n"
            f"nats_url = {nats_url}\n"
            f"server_id = {name}\n"
            "partitions = 16\n"
            "lease_ttl = 3s\n"
            "ack_wait = 2s\n"
            "gap_timeout = 30s\n"
            f"{extra}"
            "[log]\nlevel = info\n"
        )
        self.log = tmp / f"{name}.log"
        self.proc = Proc([str(BIN / "sync_server"), str(self.config)], self.log)
        wait_for(lambda: port_open(self.metrics) or not self.proc.alive(), what=f"{name} metrics")
        assert self.proc.alive(), self.proc.text()

    def metric(self, name: str) -> float:
        return self.metric_where(name)

    def metric_where(self, name: str, **labels: str) -> float:
        """The sum of metric `name` over its series whose labels include `labels`."""
        import re
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            base, _, rest = key.partition("{")
            if line.startswith("#") or base != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, sig: int = signal.SIGTERM):
        self.proc.stop(sig)


class NatsProxy:
    """A proxy whose only destination is NATS."""

    def __init__(self, tmp: Path, name: str, nats_url: str, extra: list[str] | None = None):
        self.socket = str(tmp / f"{name}.sock")
        self.proc = Proc(
            [str(BIN / "proxy"), "-u", self.socket, "--nats", nats_url, "--name", name,
             "--spool-dir", str(tmp / f"{name}.spool"), "--nats-partitions", "16",
             *(extra or [])],
            tmp / f"{name}.log",
        )
        wait_for(lambda: socket_answers(self.socket) or not self.proc.alive(), what=f"{name} socket")
        assert self.proc.alive(), self.proc.text()

    def stop(self, sig: int = signal.SIGTERM):
        self.proc.stop(sig)


def write(socket_path: str, key: str, n: int, pause_every: int = 100, pause: float = 0.01):
    """RPUSH seq:<key> i and INCR count:<key> for i in 1..n, retrying a
    frame the proxy did not take."""
    import intc

    ic = intc.IncClient()

    def send(*args: str):
        for _ in range(400):
            try:
                ic.redis_one(socket_path, 6379, 0, args)
                return
            except intc.IntcError:
                time.sleep(0.05)
        raise AssertionError(f"proxy at {socket_path} refused {args} for 20s")

    for i in range(1, n + 1):
        send("rpush", f"seq:{key}", str(i))
        send("incr", f"count:{key}")
        if i % pause_every == 0:
            time.sleep(pause)


def verdict(r, key: str, n: int, name: str) -> dict:
    got = [int(x) for x in r.lrange(f"seq:{key}", 0, -1)]
    report = {"test": name, "source": key, "sent": n, "arrived": len(set(got)),
              "duplicated": len(got) - len(set(got)), "lost": n - len(set(got)),
              "in_order": got == sorted(got), "incr": int(r.get(f"count:{key}") or 0)}
    print(f"\nRELIABILITY {report}")
    return report


def assert_exactly_once(r, keys: list[str], n: int, name: str):
    for key in keys:
        report = verdict(r, key, n, name)
        assert [int(x) for x in r.lrange(f"seq:{key}", 0, -1)] == list(range(1, n + 1)), report
        assert report["incr"] == n, report


def wait_all(c: "Cluster", r, keys: list[str], n: int, timeout: float = 90):
    """Every write applied, then every consumer settled (all delivered and
    acked), so no redelivery (a would-be duplicate) can still land."""
    wait_for(lambda: all(r.llen(f"seq:{k}") >= n and int(r.get(f"count:{k}") or 0) >= n for k in keys),
             timeout=timeout, interval=0.1, what="every write applied")
    wait_for(lambda: c.nats.consumers_settled("SYNCS"), timeout=30, interval=0.1,
             what="every consumer delivered and acked")


class Cluster:
    """NATS, servers and proxies of one test; stopped at teardown."""

    def __init__(self, tmp: Path, redis_url: str):
        self.tmp = tmp
        self.nats = Nats(tmp)
        self.rules = tmp / "rules.sync"
        self.rules.write_text(default_rules(redis_url, None))
        self.servers: list[NatsServer] = []
        self.proxies: list[NatsProxy] = []

    def server(self, name: str) -> NatsServer:
        s = NatsServer(self.tmp, name, self.rules, self.nats.url)
        self.servers.append(s)
        return s

    def proxy(self, name: str) -> NatsProxy:
        p = NatsProxy(self.tmp, name, self.nats.url)
        self.proxies.append(p)
        return p

    def logs(self) -> str:
        out = []
        for p in [*self.servers, *self.proxies]:
            out.append(f"--- {p.proc.log.name} ---\n{p.proc.text()[-6000:]}")
        return "\n".join(out)

    def stop(self):
        for p in [*self.proxies, *self.servers]:
            p.stop()
        self.nats.stop()


def run_writers(cluster: Cluster, keys: list[str], n: int) -> list[threading.Thread]:
    threads = []
    for proxy, key in zip(cluster.proxies, keys):
        t = threading.Thread(target=write, args=(proxy.socket, key, n), daemon=True)
        t.start()
        threads.append(t)
    return threads


def test_one_server_every_record_once_in_order(tmp_path, redis_target):
    c = Cluster(tmp_path, redis_target.url)
    try:
        c.server("s1")
        c.proxy("p1")
        r = redis_target.client(0)
        for t in run_writers(c, ["a"], N):
            t.join(120)
        wait_all(c, r, ["a"], N)
        assert_exactly_once(r, ["a"], N, "nats: one server")
        # The exactly-once marker is the same as with TCP.
        assert r.hlen("syncs:applied") == 1
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_two_servers_share_the_stream(tmp_path, redis_target):
    c = Cluster(tmp_path, redis_target.url)
    try:
        s1, s2 = c.server("s1"), c.server("s2")
        # The two split the 16 partitions: 8 each.
        wait_for(lambda: s1.metric("syncs_server_nats_partitions_held") == 8
                 and s2.metric("syncs_server_nats_partitions_held") == 8,
                 timeout=30, interval=0.2, what="leases split 8/8")
        keys = ["a", "b", "c", "d"]
        for k in keys:
            c.proxy(f"p-{k}")
        r = redis_target.client(0)
        for t in run_writers(c, keys, N):
            t.join(180)
        wait_all(c, r, keys, N)
        assert_exactly_once(r, keys, N, "nats: two servers")
        got = [s.metric("syncs_server_records_received_total") for s in (s1, s2)]
        print(f"\nNATS records received per server: {got}")
        assert sum(got) >= 2 * N * len(keys)
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_kill_9_one_of_two_servers_mid_stream(tmp_path, redis_target):
    c = Cluster(tmp_path, redis_target.url)
    try:
        s1, s2 = c.server("s1"), c.server("s2")
        wait_for(lambda: s1.metric("syncs_server_nats_partitions_held") == 8
                 and s2.metric("syncs_server_nats_partitions_held") == 8,
                 timeout=30, interval=0.2, what="leases split 8/8")
        keys = ["a", "b", "c"]
        for k in keys:
            c.proxy(f"p-{k}")
        r = redis_target.client(0)
        threads = run_writers(c, keys, N)
        wait_for(lambda: sum(r.llen(f"seq:{k}") for k in keys) > len(keys) * N // 4,
                 timeout=60, what="a quarter applied")
        # Kill the busier one: its partitions must move to the other.
        busy = max((s1, s2), key=lambda s: s.metric("syncs_server_records_received_total"))
        other = s2 if busy is s1 else s1
        busy.stop(signal.SIGKILL)
        for t in threads:
            t.join(180)
        wait_for(lambda: other.metric("syncs_server_nats_partitions_held") == 16,
                 timeout=30, interval=0.2, what="the survivor holds every partition")
        wait_all(c, r, keys, N)
        assert_exactly_once(r, keys, N, "nats: kill -9 one of two servers")
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_nats_down_then_up_while_proxy_spools(tmp_path, redis_target):
    c = Cluster(tmp_path, redis_target.url)
    try:
        c.server("s1")
        c.proxy("p1")
        r = redis_target.client(0)
        threads = run_writers(c, ["a"], N)
        wait_for(lambda: r.llen("seq:a") > N // 4, timeout=60, what="a quarter applied")
        c.nats.stop(signal.SIGKILL)
        time.sleep(2.0)
        c.nats.start()
        for t in threads:
            t.join(180)
        wait_all(c, r, ["a"], N, timeout=120)
        assert_exactly_once(r, ["a"], N, "nats: broker killed and restarted")
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_marker_changed_under_watch_is_replanned(tmp_path, redis_target):
    """Another server writing its own stream's marker in `syncs:applied`
    between this server's WATCH and EXEC aborts the EXEC; the run is
    planned again from a fresh marker and still applied exactly once."""
    c = Cluster(tmp_path, redis_target.url)
    try:
        s1 = c.server("s1")
        c.proxy("p1")
        r = redis_target.client(0)
        done = threading.Event()

        def other_server():
            other = redis_target.client(0)
            deadline = time.monotonic() + 120
            i = 0
            while not done.is_set() and time.monotonic() < deadline:
                i += 1
                other.hset("syncs:applied", "ffffffffffffffff", i)

        t = threading.Thread(target=other_server, daemon=True)
        t.start()
        for w in run_writers(c, ["a"], N):
            w.join(120)
        wait_all(c, r, ["a"], N)
        done.set()
        t.join(10)
        assert_exactly_once(r, ["a"], N, "nats: marker moved under WATCH")
        conflicts = s1.metric("syncs_server_redis_marker_conflicts_total")
        print(f"\nNATS marker conflicts re-planned: {conflicts}")
        assert conflicts > 0
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_stream_larger_than_nats_storage_says_what_to_change(tmp_path, redis_target):
    """JetStream reserves a stream's whole max_bytes up front. When the NATS
    server cannot (its max_file_store is smaller), the server says which
    setting to change; with max_bytes lowered the same setup replicates."""
    nats = Nats(tmp_path, max_file_store="1GB")
    rules = tmp_path / "rules.sync"
    rules.write_text(default_rules(redis_target.url, None))
    s = NatsServer(tmp_path, "s-big", rules, nats.url)  # default max_bytes: 10 GiB
    try:
        wait_for(lambda: "`max_bytes` in the server's [transport]" in s.proc.text(), timeout=30,
                 interval=0.1, what="the storage hint in the server's log")
        assert s.proc.alive(), s.proc.text()  # it keeps retrying, as for any NATS outage
    finally:
        s.stop()
    c = Cluster.__new__(Cluster)
    c.tmp, c.nats, c.rules, c.servers, c.proxies = tmp_path, nats, rules, [], []
    try:
        c.servers.append(NatsServer(tmp_path, "s-fits", rules, nats.url, extra="max_bytes = 512MiB\n"))
        c.proxies.append(NatsProxy(tmp_path, "p1", nats.url, ["--nats-max-bytes", "512MiB"]))
        r = redis_target.client(0)
        for t in run_writers(c, ["a"], 2_000):
            t.join(120)
        wait_all(c, r, ["a"], 2_000)
        assert_exactly_once(r, ["a"], 2_000, "nats: stream sized to the server's storage")
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
