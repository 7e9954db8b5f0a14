"""Redis Cluster and Sentinel targets, through the whole path (client
library → proxy → sync_server → the target group), with faults.

Load: numbered `RPUSH list:<k> <i>` on 64 keys whose slots cover every
master's ranges. Oracle: every list holds exactly 1..N, in order, read from
the group as it is at the end (after a failover: from the new master).
One cluster and one sentinel set per module (starting them is the slow
part); each test leaves its group healthy for the next.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import RedisCluster, RedisSentinels, Syncs, wait_for

KEYS = [f"list:{k}" for k in range(64)]
N = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    s = RedisSentinels(tmp_path_factory.mktemp("sentinels"))
    yield s
    s.stop()


def cluster_rules(c: RedisCluster, options: str = "") -> str:
    return (f'target c = redis-cluster "{c.url}"{options}\n'
            "rule all: redis db 0 -> c\n")


def sentinel_rules(s: RedisSentinels, options: str = "") -> str:
    return (f'target s = redis-sentinel "{s.url}" {{ master = "{s.MASTER}"{options} }}\n'
            "rule all: redis db 0 -> s\n")


class Writer:
    """Sends RPUSH list:<k> i for i in 1..n, key after key, from a thread;
    `progress` is the last i sent for every key."""

    def __init__(self, socket_path: str, prefix: str, n: int = N):
        self.socket, self.prefix, self.n = socket_path, prefix, n
        self.progress = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> int:
        """Ends the writer after the round in progress; returns how many
        rounds every key got."""
        self.stopping.set()
        self.join()
        return self.progress

    def _run(self):
        import intc

        ic = intc.IncClient()
        for i in range(1, self.n + 1):
            for k in KEYS:
                for _ in range(400):
                    try:
                        ic.redis_one(self.socket, 6379, 0, ("rpush", f"{self.prefix}{k}", str(i)))
                        break
                    except intc.IntcError:
                        time.sleep(0.05)
                else:
                    raise AssertionError("the proxy refused a frame for 20 s")
            self.progress = i
            if self.stopping.is_set():
                return
            time.sleep(0.002)

    def join(self):
        self.thread.join(300)
        assert not self.thread.is_alive(), "the writer did not finish"


def lists(read, prefix: str) -> dict[str, list[int]]:
    return {k: [int(x) for x in read(f"{prefix}{k}")] for k in KEYS}


def wait_exact(read, prefix: str, n: int, s: Syncs, timeout: float = 120):
    """Until every list holds n entries, then: each exactly 1..n in order."""
    def complete():
        try:
            return all(len(v) >= n for v in lists(read, prefix).values())
        except Exception:  # noqa: BLE001 - the group is failing over
            return False

    try:
        wait_for(complete, timeout=timeout, interval=0.2, what=f"{n} entries in every list")
    except AssertionError:
        print(s.logs()[-20000:])
        raise
    got = lists(read, prefix)
    bad = {k: v for k, v in got.items() if v != list(range(1, n + 1))}
    assert not bad, f"{len(bad)} lists not exactly 1..{n}: " + repr(
        {k: (len(v), v[:5], v[-5:]) for k, v in list(bad.items())[:3]})


def cluster_read(c: RedisCluster):
    client = c.client()
    return lambda key: client.lrange(key, 0, -1)


def test_cluster_keys_cover_every_master(cluster):
    """The load is meaningful: the 64 keys land on every master."""
    client = cluster.client()
    owners = {client.get_node_from_key(k).port for k in KEYS}
    assert owners == set(cluster.masters()), owners


def test_cluster_no_fault(cluster, tmp_path):
    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        w = Writer(s.socket, "a:")
        w.join()
        wait_exact(cluster_read(cluster), "a:", N, s)
    finally:
        s.stop()


def test_cluster_master_killed_mid_stream(cluster, tmp_path):
    """kill -9 of a master while records flow: its replica is promoted
    (node timeout 1 s). The promoted master has no replica of its own, so
    with `replicas = 1` its writes are held (WAIT falls short: an
    acknowledged write must survive the next failover); once the killed
    node is back, as a replica, every list ends exactly 1..N."""
    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        w = Writer(s.socket, "b:")
        wait_for(lambda: w.progress >= N // 3, timeout=60, what="a third sent")
        victim = cluster.masters()[0]
        cluster.kill(victim)
        wait_for(lambda: victim not in cluster.masters(), timeout=30, interval=0.2,
                 what="a replica promoted")
        wait_for(lambda: s.server_metric('syncs_server_redis_wait_shortfalls_total{target="c"}') > 0,
                 timeout=60, interval=0.2, what="writes held: the new master has no replica")
        cluster.restart(victim)  # rejoins as the new master's replica
        cluster.wait_ok()
        w.join()
        wait_exact(cluster_read(cluster), "b:", N, s)
    finally:
        s.stop()


def test_cluster_slot_migrated_mid_stream(cluster, tmp_path):
    """A slot holding a key of the load moves to another master, step by
    step, while records flow: the server follows ASK, then MOVED."""
    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        client = cluster.client()
        key = "c:" + KEYS[0]
        slot = client.keyslot(key)
        w = Writer(s.socket, "c:")
        wait_for(lambda: w.progress >= N // 4, timeout=60, what="a quarter sent")
        src = client.get_node_from_key(key).port
        dst = next(p for p in cluster.masters() if p != src)
        a, b = cluster.node(src), cluster.node(dst)
        a_id, b_id = a.execute_command("CLUSTER", "MYID"), b.execute_command("CLUSTER", "MYID")
        b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", a_id)
        a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", b_id)
        # Keys move one at a time while the writer goes on: ASK for moved keys.
        while keys := a.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            a.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
            time.sleep(0.05)
        for p in cluster.masters():
            cluster.node(p).execute_command("CLUSTER", "SETSLOT", slot, "NODE", b_id)
        w.join()
        wait_exact(cluster_read(cluster), "c:", N, s)
        assert client.get_node_from_key(key).port == dst or cluster.client().get_node_from_key(
            key).port == dst
    finally:
        s.stop()


def test_cluster_resharded_mid_stream(cluster, tmp_path):
    """`redis-cli --cluster reshard` moves 2,000 slots between masters while
    records flow (as an operator rebalancing does), the writer going on
    until it is over: every list exactly 1..n. About 21 of the 64 keys live
    on the source, so some are in moved slots (a miss has odds of ~1e-4)."""
    from conftest import find_tool

    cli = find_tool("redis-cli")
    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        w = Writer(s.socket, "r:", n=10**9)
        wait_for(lambda: w.progress >= 20, timeout=60, what="writes flowing")
        src, dst = cluster.masters()[:2]
        ids = {p: cluster.node(p).execute_command("CLUSTER", "MYID") for p in (src, dst)}
        ids = {p: i.decode() if isinstance(i, bytes) else i for p, i in ids.items()}
        out = subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{src}", "--cluster-from", ids[src],
             "--cluster-to", ids[dst], "--cluster-slots", "2000", "--cluster-yes"],
            capture_output=True, timeout=300)
        assert out.returncode == 0, out.stdout.decode(errors="replace")[-2000:] + out.stderr.decode(
            errors="replace")
        cluster.wait_ok()
        after = w.progress
        wait_for(lambda: w.progress >= after + 20, timeout=60, what="writes after the reshard")
        n = w.stop()
        wait_exact(cluster_read(cluster), "r:", n, s)
        moved = sum(v for k, v in s._metrics(s.server_metrics).items()
                    if k.startswith("syncs_server_redis_redirects_total{"))
        assert moved > 0, "no redirect followed: the reshard did not meet the stream"
    finally:
        s.stop()


def test_cluster_cross_slot_transaction_dead_lettered_whole(cluster, tmp_path):
    """A transaction over keys of two slots is refused whole (reason
    cross_slot) and nothing of it is applied; one within a slot applies."""
    import intc

    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        client = cluster.client()
        assert client.keyslot("x:a") != client.keyslot("x:b")
        ic = intc.IncClient()
        ic.redis_many(s.socket, 6379, 0, (("set", "x:a", "1"), ("set", "x:b", "2")))
        ic.redis_many(s.socket, 6379, 0, (("set", "{t}:a", "1"), ("incr", "{t}:n")))
        wait_for(lambda: client.get("{t}:n") == b"1", what="the one-slot transaction applied")
        dead = wait_for(s.dead_letters, what="the cross-slot transaction dead-lettered")
        assert len(dead) == 1, dead
        assert "cross_slot" in dead[0]["reason"], dead[0]
        assert client.get("x:a") is None and client.get("x:b") is None
        assert client.get("{t}:a") == b"1"
    finally:
        s.stop()


def test_cluster_keys_of_stream_groups_and_a_misplaced_key(cluster, tmp_path):
    """XGROUP's key is its third word: the group is created at the stream's
    node. A command whose key syncs looks for in the wrong place (XINFO
    stream <key>, not in syncs' table: its second word is taken for the key)
    is sent by Redis to another slot: it is dead-lettered (cross_slot), and
    the writes after it are applied. Before, XGROUP went to the slot of
    `create`, and both were redirected round after round, then retried for
    ever: the stream stopped at that target."""
    import intc

    s = Syncs(tmp_path, cluster_rules(cluster))
    try:
        client = cluster.client()

        def node(key: str) -> int:
            return client.get_node_from_key(key).port

        key = next(k for k in (f"xs:{i}" for i in range(1000))
                   if node(k) not in (node("create"), node("stream")))
        ic = intc.IncClient()
        ic.redis_one(s.socket, 6379, 0, ("xadd", key, "*", "f", "v"))
        ic.redis_one(s.socket, 6379, 0, ("xgroup", "create", key, "g", "0"))
        ic.redis_one(s.socket, 6379, 0, ("xinfo", "stream", key))
        ic.redis_one(s.socket, 6379, 0, ("set", "{" + key + "}:after", "1"))
        assert ic.sync(s.socket) == 0
        wait_for(lambda: client.get("{" + key + "}:after") == b"1", what="the write after XINFO applied")
        assert [g["name"] for g in client.xinfo_groups(key)] in ([b"g"], ["g"])
        dead = wait_for(s.dead_letters, what="the misplaced command dead-lettered")
        assert len(dead) == 1, dead
        assert dead[0]["reason"].startswith("cross_slot: Redis moved it to slot"), dead[0]
        assert s.server_metric_sum("syncs_server_ops_dead_lettered_total") == 1
    finally:
        s.stop()


def sentinel_read(g: RedisSentinels):
    return lambda key: g.master().lrange(key, 0, -1)


def test_sentinel_no_fault(sentinels, tmp_path):
    s = Syncs(tmp_path, sentinel_rules(sentinels))
    try:
        Writer(s.socket, "a:").join()
        wait_exact(sentinel_read(sentinels), "a:", N, s)
    finally:
        s.stop()


def test_sentinel_failover_mid_stream(sentinels, tmp_path):
    """SENTINEL FAILOVER while records flow: the server follows the new
    master; every list exactly 1..N there.

    `replicas = 2` (every replica): the old master stays up and takes writes
    for a moment after a replica is promoted, and the other replica still
    confirms them to WAIT, then drops them when it follows the new master.
    Waiting for every replica makes the promoted one's absence a shortfall
    (docs/reliability.md, "Sentinel targets")."""
    s = Syncs(tmp_path, sentinel_rules(sentinels, ", replicas = 2"))
    try:
        w = Writer(s.socket, "b:")
        wait_for(lambda: w.progress >= N // 3, timeout=60, what="a third sent")
        old = sentinels.master_port()
        sentinels.failover()
        w.join()
        wait_exact(sentinel_read(sentinels), "b:", N, s)
        sentinels.wait_healthy(old, replicas=1)
    finally:
        s.stop()


def test_sentinel_master_killed_mid_stream(sentinels, tmp_path):
    """kill -9 of the master: after the sentinels promote a replica, every
    list is exactly 1..N on it (WAIT made every acknowledged run survive)."""
    s = Syncs(tmp_path, sentinel_rules(sentinels))
    try:
        w = Writer(s.socket, "c:")
        wait_for(lambda: w.progress >= N // 3, timeout=60, what="a third sent")
        old = sentinels.master_port()
        sentinels.kill(old)
        sentinels.wait_master_moved(old)
        w.join()
        wait_exact(sentinel_read(sentinels), "c:", N, s)
    finally:
        s.stop()
