"""The benchmark suite: syncs side by side with what users would otherwise
run, in one run on one machine (docs/benchmarks.md explains each row).

    python3 tests/bench/suite.py                 # full: N = 1,000,000, 3 runs
    python3 tests/bench/suite.py --smoke         # CI: tiny N, one run
    python3 tests/bench/suite.py --out DIR       # results.json + benchmarks.png there
    python3 tests/bench/suite.py --rows latency  # some rows only (throughput, callcost, latency, isolation,
                                                 # writers, cluster, nats, mongo, backlog)
    SYNCS_BIN_DIR=DIR python3 tests/bench/suite.py ...   # daemons and libintc of another build
    python3 tests/bench/suite.py --redis-options "merge_sets = false"   # options of every redis target
    python3 tests/bench/suite.py --proxy-nice 10  # every proxy started under `nice -n 10`

Starts its own redis-server (and FerretDB when installed), sync_server and
proxy on loopback, from target/release (scripts/test.sh builds them) with
the installed Python library. Rows:

 1. redis-benchmark -t set -P 128 -c 1 against the target (the physical limit)
 2. redis-py straight to the target, one command at a time and pipelined by 1,000
 3. syncs end to end, C library and Python library, each unbuffered (one
    write per call, as the seed's examples) and buffered (64 KiB, 1 ms
    linger), and C in the seed example's style (each frame built by hand,
    its length prefix and payload in two `intc_send` calls): N SETs
    (16-byte keys, 64-byte values), first call to a final marker visible in
    the target
 4. latency at a steady rate (10,000/s, and 100,000/s): client call to the
    key visible in the target; each run also notes the CPU time the
    hypervisor took from the VM meanwhile (steal) and the sender's longest
    pause past its schedule; a run whose sender was itself held over 5 ms
    (the machine busy or paused) is named in the summary
 5. Mongo: inserts in batches of 100 through syncs versus pymongo insert_many
    (each run both back to back; the run with the median ratio)
 6. client call cost: one buffered call (C intc_redis_command, Python
    IncClient.redis_one) with a forked reader discarding the bytes, no proxy
    (tests/bench/c/bench_call.c, tests/bench/bench_call.py); row 3 also
    reports its time spent in the calls / N
 7. peak RSS of proxy and server, and of the proxy holding a backlog with the
    server down
 8. the C buffered load of row 3 into one Redis and into a Redis Cluster of
    3 masters with a replica each (`replicas = 1`: every run waits for a
    replica, and `replicas = 0`), with the ratio
 9. the Python buffered load of row 3 through NATS JetStream (proxy → NATS
    → server, one machine) and over TCP, runs alternated, with the ratio
10. many writers: the C buffered load of row 3 split over 16 client
    processes into one proxy, and over 4 proxies (a client each) into one
    server, against one client in the same run; from the first client's
    first call to every key in the target

Rows 1 and 3 also give CPU per SET (user + system, from /proc) of each
process: proxy, server and the target Redis (and nats-server in row 9); in
row 1, Redis' own CPU per SET under redis-benchmark.

Not a test: figures vary between machines; the ratios to rows 1 and 2 are
what carries over.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import (  # noqa: E402
    BIN, ROOT, Ferret, Nats, Redis, RedisCluster, Syncs, compile_c, default_rules, find_tool, wait_for)

WORKERS = [sys.executable, str(HERE / "workers.py")]
# The rows `--rows` can pick.
ROWS = ("throughput", "callcost", "latency", "isolation", "writers", "cluster", "nats", "mongo", "backlog")


def run_client(cmd: list[str], what: str, timeout: float = 1800) -> dict[str, str]:
    """Runs a client program (a worker, bench_set, bench_call); returns the
    `key=value` words of its output as a dict."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr}")
    return key_values(out.stdout)


def key_values(text: str) -> dict[str, str]:
    """The `key=value` words of a client program's output."""
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def worker(*args: object, timeout: float = 1800) -> dict[str, str]:
    """Runs one client worker (workers.py); returns its `key=value` line."""
    return run_client([*WORKERS, *map(str, args)], f"worker {args[0]}", timeout)


def monotonic() -> float:
    """CLOCK_MONOTONIC in seconds: the clock the workers stamp their first
    call with (`start_ns`), shared by every process of the machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def first_call(got: dict[str, str]) -> float:
    """When a worker made its first call (`monotonic()` seconds): rows
    through syncs run from there to the marker, as rows 1 and 2 count only
    their own calls, so a Python worker's start (~0.1 s of interpreter and
    imports) is not charged to syncs."""
    return int(got["start_ns"]) / 1e9


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, user + system, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_ms() -> float:
    """CPU time the hypervisor has taken from this VM so far (the `steal`
    column of /proc/stat, summed over CPUs), in ms; 0 on bare metal."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def cpu_us_per_op(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / n * 1e6 for k in after}


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def build_c_bench(tmp: Path, name: str = "bench_set") -> Path:
    """Compiles tests/bench/c/<name>.c against the built libintc."""
    return compile_c(HERE / "c" / f"{name}.c", tmp / name)


# Options written into every `redis` target of the rigs' rules
# (`--redis-options`): measuring a setting both ways.
REDIS_OPTIONS = ""


def with_redis_options(rules: str) -> str:
    """`rules` with REDIS_OPTIONS given to each `redis` target."""
    if not REDIS_OPTIONS:
        return rules
    # Into the target's own `{ ... }` when it has one, else a new one.
    rules = re.sub(r'(= redis "[^"]*"\s*\{)', lambda m: f"{m.group(1)} {REDIS_OPTIONS},", rules)
    return re.sub(r'(= redis "[^"]*")(?!\s*\{)', lambda m: f"{m.group(1)} {{ {REDIS_OPTIONS} }}", rules)


class Rig:
    """A fresh target Redis plus syncs (server and proxy) for one run.

    `second`: also fan every write out to a second Redis, "up" or "down"
    (stopped before the run: the isolation row)."""

    def __init__(self, tmp: Path, proxy_args: list[str] | None = None, start_server: bool = True,
                 second: str | None = None, nats: bool = False, nats_ini: str = ""):
        self.dir = Path(tempfile.mkdtemp(dir=tmp))
        self.nats = Nats(self.dir) if nats else None
        self.target = Redis(self.dir)
        self.second = Redis(self.dir) if second else None
        if self.second is not None:
            rules = (f'target a = redis "{self.target.url}"\n'
                     f'target b = redis "{self.second.url}"\n'
                     'rule all: redis key "*" -> a, b\n')
            if second == "down":
                self.second.stop()
        else:
            rules = default_rules(self.target.url, None)
        self.syncs = Syncs(self.dir, with_redis_options(rules), start_server=start_server, proxy_args=proxy_args,
                           nats=self.nats, nats_ini=nats_ini)
        self.r = self.target.client(0)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each kind of process of the rig (every
        proxy together)."""
        procs = {"proxy": [self.syncs.proxy, *self.syncs.more_proxies], "server": [self.syncs.server],
                 "redis": [self.target.proc]}
        if self.nats is not None:
            procs["nats"] = [self.nats.proc]
        return {k: sum(cpu_seconds(p.p.pid) for p in ps if p is not None and p.alive())
                for k, ps in procs.items()}

    def wait_marker(self, timeout: float = 1200) -> float:
        """Polls the target for the final marker; returns when it is seen."""
        wait_for(lambda: self.r.get("marker") == b"done", timeout=timeout, interval=0.001,
                 what="the final marker")
        return monotonic()

    def rss(self) -> dict[str, int]:
        out = {"proxy": peak_rss(self.syncs.proxy.p.pid)}
        if self.syncs.server is not None and self.syncs.server.alive():
            out["server"] = peak_rss(self.syncs.server.p.pid)
        return out

    def stop(self) -> None:
        self.syncs.stop()
        if self.nats is not None:
            self.nats.stop()
        self.target.stop()
        if self.second is not None:
            self.second.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def row_redis_benchmark(tmp: Path, n: int) -> dict:
    """Row 1: pipelined SET ingest of one connection (keys `key:` + 12 digits
    = 16 bytes, 64-byte values)."""
    exe = find_tool("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark not found (apt-get install redis-tools)")
    target = Redis(Path(tempfile.mkdtemp(dir=tmp)))
    try:
        cpu0 = cpu_seconds(target.proc.p.pid)
        out = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(target.port), "-t", "set", "-P", "128",
                              "-c", "1", "-n", str(n), "-d", "64", "-r", "100000000", "--csv"],
                             capture_output=True, text=True, check=True, timeout=600).stdout
        cpu = {"redis": (cpu_seconds(target.proc.p.pid) - cpu0) / n * 1e6}
    finally:
        target.stop()
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] == "SET":
            return {"ops_per_s": float(cells[1]), "cpu_us": cpu}
    raise RuntimeError(f"no SET line in redis-benchmark output:\n{out}")


def row_redis_py(tmp: Path, n: int, pipeline: int) -> float:
    """Row 2: redis-py straight to the target."""
    target = Redis(Path(tempfile.mkdtemp(dir=tmp)))
    try:
        got = worker("redis_py", target.port, n, pipeline)
        return n / (int(got["calls_ns"]) / 1e9)
    finally:
        target.stop()


def row_syncs(tmp: Path, n: int, client: str, c_exe: Path | None, proxy_args: list[str]) -> dict:
    """Row 3 (and 6, 7): N SETs through syncs, first call to the marker."""
    rig = Rig(tmp, proxy_args)
    try:
        cpu0 = rig.cpu()
        if client.startswith("c"):
            mode = {"c-buffered": ["buffered"], "c-seed": ["seed"]}.get(client, [])
            got = run_client([str(c_exe), rig.syncs.socket, str(n), "c", *mode], "bench_set")
        else:
            got = worker("py_set", rig.syncs.socket, n, "p", *(["buffered"] if client == "py-buffered" else []))
        t0, t1 = first_call(got), rig.wait_marker()
        cpu = cpu_us_per_op(cpu0, rig.cpu(), n)
        rss = rig.rss()
        applied = rig.r.dbsize()
        # n keys, the marker, the exactly-once marker hash.
        if applied != n + 2:
            raise RuntimeError(f"{applied} keys in the target, expected {n + 2}")
        return {"ops_per_s": n / (t1 - t0), "seconds": t1 - t0,
                "call_ns": int(got["calls_ns"]) / n, "rss": rss, "cpu_us": cpu}
    finally:
        rig.stop()


def row_syncs_cluster(tmp: Path, n: int, c_exe: Path, proxy_args: list[str], replicas: int) -> dict:
    """Row 8: N SETs from the buffered C client through syncs into a fresh
    3-master cluster (one replica each), first call to the marker."""
    d = Path(tempfile.mkdtemp(dir=tmp))
    cluster = RedisCluster(d)
    rules = (f'target c = redis-cluster "{cluster.url}" {{ replicas = {replicas} }}\n'
             "rule all: redis db 0 -> c\n")
    syncs = Syncs(d, rules, proxy_args=proxy_args)
    client = cluster.client()
    try:
        got = run_client([str(c_exe), syncs.socket, str(n), "c", "buffered"], "bench_set")
        wait_for(lambda: client.get("marker") == b"done", timeout=1200, interval=0.001,
                 what="the final marker")
        t0, t1 = first_call(got), monotonic()
        applied = sum(cluster.node(p).dbsize() for p in cluster.masters())
        if applied < n + 1:
            raise RuntimeError(f"{applied} keys in the cluster, expected at least {n + 1}")
        return {"ops_per_s": n / (t1 - t0), "seconds": t1 - t0}
    finally:
        syncs.stop()
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)


def cluster_rows(tmp: Path, n: int, runs: int, c_exe: Path, proxy_args: list[str]) -> dict:
    """Row 8: one Redis against a 3-master cluster, same load, same run."""
    single = [row_syncs(tmp, n, "c-buffered", c_exe, proxy_args) for _ in range(runs)]
    out = {"n": n, "runs": runs, "single_ops_per_s": median_of(single, "ops_per_s")}
    for replicas in (1, 0):
        samples = [row_syncs_cluster(tmp, n, c_exe, proxy_args, replicas) for _ in range(runs)]
        out[f"cluster_r{replicas}_ops_per_s"] = median_of(samples, "ops_per_s")
        out[f"ratio_r{replicas}"] = out[f"cluster_r{replicas}_ops_per_s"] / out["single_ops_per_s"]
    return out


def row_writers(tmp: Path, n: int, c_exe: Path, proxy_args: list[str], clients: int, proxies: int) -> dict:
    """Row 10: N buffered C SETs split over `clients` processes, spread over
    `proxies` proxies into one server; the clients start and set up, then
    go together; from the first client's first call (as rows 3, 8 and 9)
    to every key in the target."""
    rig = Rig(tmp, proxy_args)
    try:
        sockets = [rig.syncs.socket] + [rig.syncs.add_proxy(f"bench-{i}", proxy_args) for i in range(1, proxies)]
        per = n // clients
        cpu0 = rig.cpu()
        # Every client is started and set up before any makes a call, then
        # all go at once: the row times writers, not process starts.
        procs = [subprocess.Popen([str(c_exe), sockets[i % proxies], str(per), chr(ord("a") + i), "buffered"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "BENCH_SET_WAIT": "1"})
                 for i in range(clients)]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"bench_set did not start: {p.communicate(timeout=60)[1]}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("g")
            p.stdin.flush()
        starts = []
        for p in procs:
            out, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"bench_set failed: {err}")
            starts.append(first_call(key_values(out)))
        total = per * clients
        # Every key, the marker and the exactly-once marker hash.
        wait_for(lambda: rig.r.dbsize() >= total + 2, timeout=1200, interval=0.001, what="every key")
        t0, t1 = min(starts), monotonic()
        return {"ops_per_s": total / (t1 - t0), "clients": clients, "proxies": proxies,
                "cpu_us": cpu_us_per_op(cpu0, rig.cpu(), total)}
    finally:
        rig.stop()


def writers_rows(tmp: Path, n: int, runs: int, c_exe: Path, proxy_args: list[str]) -> dict:
    """Row 10: one client, 16 clients into one proxy, 4 proxies into one
    server; runs alternated."""
    shapes = {"one": (1, 1), "clients16": (16, 1), "proxies4": (4, 4)}
    samples: dict[str, list[dict]] = {k: [] for k in shapes}
    for _ in range(runs):
        for k, (clients, proxies) in shapes.items():
            samples[k].append(row_writers(tmp, n, c_exe, proxy_args, clients, proxies))
    out: dict = {"n": n, "runs": runs}
    for k, rows in samples.items():
        out[k] = {"ops_per_s": median_of(rows, "ops_per_s"), "samples": [r["ops_per_s"] for r in rows],
                  "cpu_us": median_cpu(rows)}
    return out


def row_syncs_nats(tmp: Path, n: int, proxy_args: list[str], nats_ini: str) -> dict:
    """Row 9, NATS half: N buffered Python SETs, proxy → NATS JetStream →
    server, first call to the marker."""
    rig = Rig(tmp, proxy_args, nats=True, nats_ini=nats_ini)
    try:
        # The server holds every partition before the clock starts.
        wait_for(lambda: rig.syncs.server_metric_sum("syncs_server_nats_partitions_held") >= 16,
                 timeout=60, what="NATS partitions held")
        counters = ("syncs_proxy_records_acked_total", "syncs_server_records_received_total")
        cpu0 = rig.cpu()
        got = worker("py_set", rig.syncs.socket, n, "p", "buffered")
        t0, t1 = first_call(got), rig.wait_marker()
        cpu = cpu_us_per_op(cpu0, rig.cpu(), n)
        if rig.r.dbsize() != n + 2:
            raise RuntimeError(f"{rig.r.dbsize()} keys in the target, expected {n + 2}")
        runs = rig.syncs.server_metric_sum("syncs_server_batch_duration_seconds_count")
        return {"ops_per_s": n / (t1 - t0), "seconds": t1 - t0, "call_ns": int(got["calls_ns"]) / n,
                "cpu_us": cpu, "records_per_run": n / runs if runs else 0.0,
                **{c: rig.syncs.proxy_metric_sum(c) + rig.syncs.server_metric_sum(c) for c in counters}}
    finally:
        rig.stop()


def nats_rows(tmp: Path, n: int, runs: int, proxy_args: list[str], nats_proxy_args: list[str],
              nats_ini: str) -> dict:
    """Row 9: TCP and NATS runs alternated, so both see the same machine."""
    tcp, nats = [], []
    for _ in range(runs):
        tcp.append(row_syncs(tmp, n, "py-buffered", None, proxy_args))
        nats.append(row_syncs_nats(tmp, n, [*proxy_args, *nats_proxy_args], nats_ini))
    out = {"n": n, "runs": runs, "tcp_ops_per_s": median_of(tcp, "ops_per_s"),
           "nats_ops_per_s": median_of(nats, "ops_per_s"),
           "records_per_run": median_of(nats, "records_per_run"),
           "nats_cpu_us": median_cpu(nats),
           "tcp_cpu_us": median_cpu(tcp),
           "samples": {"tcp": [s["ops_per_s"] for s in tcp], "nats": [s["ops_per_s"] for s in nats]}}
    out["ratio"] = out["nats_ops_per_s"] / out["tcp_ops_per_s"]
    return out


def cpu_text(cpu: dict[str, float]) -> str:
    """`proxy 1.2 + server 0.8 = 2.0 µs (redis 1.1, nats 3.0)`."""
    own = cpu.get("proxy", 0.0) + cpu.get("server", 0.0)
    rest = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k not in ("proxy", "server"))
    return f"proxy {cpu.get('proxy', 0.0):.2f} + server {cpu.get('server', 0.0):.2f} = {own:.2f} µs ({rest})"


def row_latency(tmp: Path, rate: int, seconds: float, proxy_args: list[str], second: str | None = None) -> dict:
    """Row 4: client call to visible in the target, at a steady rate
    (`second`: see `Rig`)."""
    rig = Rig(tmp, proxy_args, second=second)
    try:
        steal0 = steal_ms()
        sent_file, seen_file = rig.dir / "sent.bin", rig.dir / "seen.bin"
        n = int(rate * seconds)
        # Sender and listener in C: the Python ones took most of a core and
        # a third of one at 100,000/s, from the processes measured.
        sender, listen = tmp / "bench_latency", tmp / "latency_listen"
        for exe in (sender, listen):
            if not exe.exists():
                build_c_bench(tmp, exe.name)
        listener = subprocess.Popen([str(listen), str(rig.target.port), str(n), str(seen_file)],
                                    stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            raise RuntimeError("the keyspace listener did not start")
        cpu0 = rig.cpu()
        run_client([str(sender), rig.syncs.socket, str(rate), str(seconds), str(sent_file)], "bench_latency",
                   timeout=600)
        if listener.wait(timeout=180) != 0:
            raise RuntimeError(f"the keyspace listener failed (exit {listener.returncode})")
        steal = steal_ms() - steal0
        # At a steady rate records come one or a few at a time: what each
        # costs the relay and Redis then, against a throughput row's batches.
        cpu = cpu_us_per_op(cpu0, rig.cpu(), n)
        sent = array.array("q", sent_file.read_bytes())
        seen = array.array("q", seen_file.read_bytes())
        lat_ms = sorted((seen[i] - sent[i]) / 1e6 for i in range(n) if seen[i])
        # The sender's longest pause past its schedule: when the sending
        # process itself could not run (a VM's vCPU taken away shows here
        # and in `steal`), the write before the pause waits with it.
        late_ms = max(((sent[i] - sent[i - 1]) / 1e6 - 1e3 / rate for i in range(1, n)), default=0.0)
        if len(lat_ms) != n:
            raise RuntimeError(f"only {len(lat_ms)} of {n} writes were seen in the target")

        def q(p: float) -> float:
            return lat_ms[min(len(lat_ms) - 1, int(p * len(lat_ms)))]

        # The rate the sender kept (it sleeps between writes).
        achieved = (n - 1) / ((sent[-1] - sent[0]) / 1e9) if n > 1 else float(rate)
        return {"rate": rate, "n": n, "achieved_rate": achieved, "proxy_args": proxy_args, "p50_ms": q(0.50),
                "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": lat_ms[-1],
                "steal_ms": steal, "sender_pause_ms": max(late_ms, 0.0), "cpu_us": cpu,
                "cdf_ms": [q(i / 200) for i in range(200)] + [lat_ms[-1]]}
    finally:
        rig.stop()


def latency_runs(tmp: Path, rate: int, seconds: float, proxy_args: list[str], runs: int,
                 second: str | None = None) -> dict:
    """Row 4 over several runs: the run with the median p99, with every
    run's percentiles beside it (the tail varies from run to run on a
    shared 2-core machine)."""
    samples = [row_latency(tmp, rate, seconds, proxy_args, second) for _ in range(runs)]
    out = median_run(samples, "p99_ms", ("achieved_rate", "p50_ms", "p99_ms", "p999_ms", "max_ms", "steal_ms",
                                         "sender_pause_ms", "cpu_us"))
    out["cpu_us"] = median_cpu(samples)
    return out


def held_runs(lat: dict) -> str:
    """The latency runs whose sender was itself held over 5 ms (the
    machine busy, or paused by the hypervisor: see the run's steal), for
    the summary; "" if none."""
    hit = [f"run {i + 1}: max {r['max_ms']:.1f} ms, sender held {r.get('sender_pause_ms', 0):.1f} ms, "
           f"steal {r.get('steal_ms', 0):.0f} ms" for i, r in enumerate(lat.get("runs", []))
           if r.get("sender_pause_ms", 0) > 5]
    return f"; sender held: {'; '.join(hit)}" if hit else ""


def row_mongo(tmp: Path, n: int, batch: int, direct_first: bool = True) -> dict | None:
    """Row 5: Mongo inserts through syncs versus pymongo direct, into one
    fresh FerretDB (separate databases); `direct_first` says which goes
    first (the one that goes second finds FerretDB warmed up and holding
    the first one's documents)."""
    if find_tool("ferretdb", [str(Path.home() / "go" / "bin" / "ferretdb"), "/usr/local/bin/ferretdb"]) is None:
        return None
    d = Path(tempfile.mkdtemp(dir=tmp))
    ferret = Ferret(d)
    try:
        ferret_pid = ferret.proc.p.pid

        def run_direct() -> tuple[float, dict[str, float]]:
            cpu0 = cpu_seconds(ferret_pid)
            direct = worker("mongo_direct", ferret.url, n, batch)
            return (n / (int(direct["calls_ns"]) / 1e9),
                    {"ferretdb": (cpu_seconds(ferret_pid) - cpu0) / n * 1e6})

        if direct_first:
            direct_ops, direct_cpu = run_direct()
        syncs = Syncs(d, default_rules(None, ferret.url))
        try:
            db = ferret.client()["bench"]
            pids = {"proxy": syncs.proxy.p.pid, "server": syncs.server.p.pid, "ferretdb": ferret_pid}
            cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
            got = worker("mongo_syncs", syncs.socket, n, batch)
            wait_for(lambda: db["marker"].find_one({"_id": "done"}) is not None, timeout=1200,
                     interval=0.01, what="the Mongo marker")
            t0, t1 = first_call(got), monotonic()
            cpu = cpu_us_per_op(cpu0, {k: cpu_seconds(v) for k, v in pids.items()}, n)
            count = db["users"].count_documents({})
            if count != n:
                raise RuntimeError(f"{count} documents in the target, expected {n}")
        finally:
            syncs.stop()
        if not direct_first:
            direct_ops, direct_cpu = run_direct()
        via = n / (t1 - t0)
        return {"n": n, "batch": batch, "direct_first": direct_first, "direct_ops_per_s": direct_ops,
                "syncs_ops_per_s": via, "ratio": via / direct_ops, "direct_cpu_us": direct_cpu,
                "syncs_cpu_us": cpu}
    finally:
        ferret.stop()


def mongo_runs(tmp: Path, n: int, batch: int, runs: int) -> dict | None:
    """Row 5 over several runs: the run with the median ratio, with every
    run's ratio beside it (FerretDB's own speed moves by a fifth from run
    to run; each run measures direct and through syncs back to back, which
    goes first alternating from run to run)."""
    samples = [row_mongo(tmp, n, batch, direct_first=i % 2 == 0) for i in range(runs)]
    done = [r for r in samples if r is not None]
    if not done:
        return None
    return median_run(done, "ratio", ("direct_ops_per_s", "syncs_ops_per_s", "ratio"))


def row_backlog(tmp: Path, n: int, c_exe: Path) -> dict:
    """Row 7b: the proxy's RSS while it holds N records with the server down."""
    rig = Rig(tmp, ["--spool-max", "64GiB"], start_server=False)
    try:
        t0 = time.perf_counter()
        run_client([str(c_exe), rig.syncs.socket, str(n), "b", "buffered"], "bench_set", timeout=3600)
        t1 = time.perf_counter()
        spool = sum(f.stat().st_size for f in rig.syncs.spool.iterdir() if f.is_file())
        pending = rig.syncs.proxy_metric("syncs_proxy_pending_records")
        return {"records": n, "pending": pending, "spool_bytes": spool, "proxy_rss": rig.rss()["proxy"],
                "ingest_ops_per_s": n / (t1 - t0)}
    finally:
        rig.stop()


def row_call_cost(tmp: Path, n_c: int, n_py: int, runs: int) -> dict:
    """Row 6: what one buffered call costs the caller, C and Python (median
    over `runs` runs of N calls each, wall clock and the caller's CPU)."""
    exe = build_c_bench(tmp, "bench_call")

    c = run_client([str(exe), str(n_c), str(runs)], "bench_call")
    py = run_client([sys.executable, str(HERE / "bench_call.py"), str(n_py), str(runs)], "bench_call.py")
    return {"runs": runs,
            "c_n": n_c, "c_ns_per_frame": float(c["ns_per_frame"]),
            "c_cpu_ns_per_frame": float(c["cpu_ns_per_frame"]),
            "c_runs_ns": [float(x) for x in c["runs"].split(",")],
            "py_n": n_py, "py_ns_per_call": float(py["ns_per_call"]),
            "py_cpu_ns_per_call": float(py["cpu_ns_per_call"]),
            "py_runs_ns": [float(x) for x in py["runs"].split(",")]}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def median_run(runs: list[dict], key: str, shown: tuple[str, ...]) -> dict:
    """The run with the median `key` (the upper one of an even count),
    with every run's `shown` fields beside it under "runs"."""
    out = dict(sorted(runs, key=lambda r: r[key])[len(runs) // 2])
    out["runs"] = [{k: r[k] for k in shown} for r in runs]
    return out


def median_cpu(runs: list[dict]) -> dict[str, float]:
    """The median over `runs` of each process's CPU per operation."""
    return {k: statistics.median(r["cpu_us"][k] for r in runs) for k in runs[0]["cpu_us"]}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def chart(results: dict, path: Path) -> None:
    """Throughput bars and the latency CDF, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["throughput"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [r["name"] for r in rows]
    values = [r["ops_per_s"] / 1000 for r in rows]
    colors = ["#888888" if r["kind"] == "baseline" else "#2a7ab9" for r in rows]
    bars = a.barh(names[::-1], values[::-1], color=colors[::-1])
    a.bar_label(bars, labels=[f"{v:,.0f}k" for v in values[::-1]], padding=3, fontsize=8)
    a.set_xlabel("thousand SETs per second (median)")
    a.set_title(f"Throughput, N = {results['n']:,}")
    a.margins(x=0.2)
    for key, label, color in (("latency", "fsync always (default)", "#2a7ab9"),
                              ("latency_no_fsync", "--fsync never", "#e08a1e")):
        lat = results.get(key)
        if lat:
            cdf = lat["cdf_ms"]
            b.plot(cdf, [i / (len(cdf) - 1) for i in range(len(cdf))], color=color,
                   label=f"{label}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
            b.set_title(f"Latency at {lat['rate']:,} ops/s, call to visible in the target")
    b.set_xscale("log")
    b.set_xlabel("milliseconds")
    b.set_ylabel("fraction of writes")
    b.grid(True, which="both", alpha=0.3)
    if b.lines:  # no latency row in this run: no curve to name
        b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings(results: dict) -> str:
    """The run's settings other than the defaults, as one line ("" when
    none): a table's figures are of these."""
    parts = []
    if results.get("proxy_args"):
        parts.append("every proxy with " + " ".join(results["proxy_args"]))
    if results.get("proxy_nice"):
        parts.append(f"every proxy under nice -n {results['proxy_nice']}")
    if results.get("redis_options"):
        parts.append(f"every redis target with {{ {results['redis_options']} }}")
    return "settings: " + "; ".join(parts) if parts else ""


def table(results: dict) -> str:
    lines = ["| row | ops/s (median) | vs redis-benchmark | vs redis-py pipelined | µs per call | CPU per SET |",
             "|---|---|---|---|---|---|"]
    line = settings(results)
    if line:
        lines.insert(0, line + "\n")
    rows = results["throughput"]
    limit = rows[0]["ops_per_s"] if rows else 0.0
    pipelined = next((r["ops_per_s"] for r in rows if r["id"] == "redis-py-p1000"), 0.0)
    for r in rows:
        call = f"{r['call_ns'] / 1000:.2f}" if r.get("call_ns") else "—"
        cpu = r.get("cpu_us")
        cpu = "—" if not cpu else (cpu_text(cpu) if "proxy" in cpu else f"redis {cpu['redis']:.2f} µs")
        lines.append(f"| {r['name']} | {r['ops_per_s']:,.0f} | {r['ops_per_s'] / limit:.0%} | "
                     f"{r['ops_per_s'] / pipelined:.2f}× | {call} | {cpu} |")
    args = results.get("proxy_args") or []
    default = f"proxy {' '.join(args)}" if args else "proxy defaults (fsync always)"
    no_fsync = "proxy " + " ".join([*without_fsync_spacing(args), "--fsync", "never"])
    for key, what in (("latency", default), ("latency_no_fsync", no_fsync), ("latency_100k", default),
                      ("latency_fanout", "fanned out to Redis a and b, both up; latency at a"),
                      ("latency_fanout_b_down", "fanned out to Redis a and b, b stopped; latency at a")):
        lat = results.get(key)
        if lat:
            each = ", ".join(f"{r['p99_ms']:.2f}" for r in lat.get("runs", []))
            lines.append(f"latency at {lat['rate']:,} ops/s ({lat['n']:,} writes, sent at "
                         f"{lat['achieved_rate']:,.0f}/s), {what}: p50 {lat['p50_ms']:.2f} ms, "
                         f"p99 {lat['p99_ms']:.2f} ms, p99.9 {lat['p999_ms']:.2f} ms, max {lat['max_ms']:.2f} ms "
                         f"(the median run by p99; p99 of each run: {each} ms{held_runs(lat)})"
                         + (f"; CPU per write (median): {cpu_text(lat['cpu_us'])}" if "cpu_us" in lat else ""))
    w = results.get("writers")
    if w:
        one = w["one"]["ops_per_s"]
        lines.append(f"many writers, C buffered, {w['n']:,} SETs (median of {w['runs']}): one client "
                     f"{one:,.0f}/s; 16 clients into one proxy {w['clients16']['ops_per_s']:,.0f}/s "
                     f"({w['clients16']['ops_per_s'] / one:.0%}); 4 proxies with a client each into one server "
                     f"{w['proxies4']['ops_per_s']:,.0f}/s ({w['proxies4']['ops_per_s'] / one:.0%}); CPU per SET: "
                     f"one {cpu_text(w['one']['cpu_us'])}; 16 clients {cpu_text(w['clients16']['cpu_us'])}; "
                     f"4 proxies {cpu_text(w['proxies4']['cpu_us'])}")
    cl = results.get("cluster")
    if cl:
        lines.append(f"C buffered, {cl['n']:,} SETs (median of {cl['runs']}): one Redis "
                     f"{cl['single_ops_per_s']:,.0f}/s; Redis Cluster, 3 masters with a replica each: "
                     f"{cl['cluster_r1_ops_per_s']:,.0f}/s with replicas = 1 ({cl['ratio_r1']:.0%}), "
                     f"{cl['cluster_r0_ops_per_s']:,.0f}/s with replicas = 0 ({cl['ratio_r0']:.0%})")
    nr = results.get("nats")
    if nr:
        lines.append(f"Python buffered, {nr['n']:,} SETs (median of {nr['runs']}, alternated): TCP "
                     f"{nr['tcp_ops_per_s']:,.0f}/s, through NATS JetStream {nr['nats_ops_per_s']:,.0f}/s "
                     f"({nr['ratio']:.0%}); {nr['records_per_run']:,.0f} records per run on the server; "
                     f"CPU per SET through NATS: {cpu_text(nr['nats_cpu_us'])}; over TCP: "
                     f"{cpu_text(nr['tcp_cpu_us'])}")
    m = results.get("mongo")
    if m:
        cpu = m.get("syncs_cpu_us", {})
        lines.append(f"mongo {m['n']:,} inserts in batches of {m['batch']}: direct {m['direct_ops_per_s']:,.0f}/s, "
                     f"through syncs {m['syncs_ops_per_s']:,.0f}/s ({m['ratio']:.0%}; the median run of "
                     f"{len(m.get('runs', [m]))}, ratios "
                     + ", ".join(f"{r['ratio']:.0%}" for r in m.get("runs", [m]))
                     + "); CPU per document: "
                     f"FerretDB {m.get('direct_cpu_us', {}).get('ferretdb', 0.0):.1f} µs direct, through syncs "
                     + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) + " µs")
    cc = results.get("call_cost")
    if cc:
        lines.append(f"client call cost, buffered, no proxy (median of {cc['runs']} runs): C intc_redis_command "
                     f"{cc['c_ns_per_frame'] / 1000:.3f} µs per frame (CPU {cc['c_cpu_ns_per_frame'] / 1000:.3f}), "
                     f"Python IncClient.redis_one {cc['py_ns_per_call'] / 1000:.2f} µs per call "
                     f"(CPU {cc['py_cpu_ns_per_call'] / 1000:.2f})")
    rss = results.get("rss")
    if rss:
        lines.append("peak RSS during the end-to-end runs: " + ", ".join(
            f"{k} {v / 2**20:.1f} MiB" for k, v in rss.items()))
    bl = results.get("backlog")
    if bl:
        lines.append(f"backlog of {bl['records']:,} records, server down: proxy peak RSS "
                     f"{bl['proxy_rss'] / 2**20:.1f} MiB, spool {bl['spool_bytes'] / 2**20:.0f} MiB on disk, "
                     f"ingest {bl['ingest_ops_per_s']:,.0f}/s")
    return "\n".join(lines)


def without_fsync_spacing(args: list[str]) -> list[str]:
    """`args` without `--fsync-spacing` (it applies to `--fsync always`
    only, and the proxy refuses it with another policy)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--fsync-spacing":
            skip = True
        elif not arg.startswith("--fsync-spacing="):
            out.append(arg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one run: checks that every row runs")
    ap.add_argument("-n", type=int, help="SETs per end-to-end run (default 1,000,000; smoke 2,000)")
    ap.add_argument("--runs", type=int, help="runs per throughput row, median quoted (default 3; smoke 1)")
    ap.add_argument("--backlog", type=int, help="records in the backlog row (default 10,000,000)")
    ap.add_argument("--rate", type=int, default=10_000, help="latency row: writes per second")
    ap.add_argument("--seconds", type=float, help="latency row: duration (default 10; smoke 1)")
    ap.add_argument("--proxy-args", default="", help="extra proxy flags for the syncs rows")
    ap.add_argument("--nats-proxy-args", default="", help="extra proxy flags for the NATS row's NATS runs")
    ap.add_argument("--nats-ini", default="", help="extra [transport] lines for the NATS row's server, "
                    "e.g. 'batch = 4096\\n'")
    ap.add_argument("--redis-options", default="", help='options for every redis target, e.g. "merge_sets = false"')
    ap.add_argument("--proxy-nice", type=int, default=0,
                    help="start every proxy under `nice -n N` (as systemd's Nice= would); default 0, as started")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench", help="results directory")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"rows to run, comma-separated (default all: {','.join(ROWS)})")
    a = ap.parse_args()
    wanted = {r.strip() for r in a.rows.split(",") if r.strip()}
    if not wanted or wanted - set(ROWS):
        ap.error(f"--rows takes some of: {', '.join(ROWS)}")
    n = a.n or (2_000 if a.smoke else 1_000_000)
    runs = a.runs or (1 if a.smoke else 3)
    backlog = a.backlog or (20_000 if a.smoke else 10_000_000)
    seconds = a.seconds or (1.0 if a.smoke else 10.0)
    rate = 1_000 if a.smoke and a.rate == 10_000 else a.rate
    proxy_args = a.proxy_args.split()
    global REDIS_OPTIONS
    REDIS_OPTIONS = a.redis_options
    if a.proxy_nice:
        Syncs.proxy_launcher = ["nice", "-n", str(a.proxy_nice)]
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="syncs-bench-"))
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "n": n,
                     "runs": runs, "smoke": a.smoke, "proxy_args": proxy_args, "redis_options": REDIS_OPTIONS,
                     "proxy_nice": a.proxy_nice, "throughput": []}
    try:
        c_exe = build_c_bench(tmp)

        def add(id_: str, name: str, kind: str, samples: list[dict]) -> None:
            row = {"id": id_, "name": name, "kind": kind, "ops_per_s": median_of(samples, "ops_per_s"),
                   "samples": [s["ops_per_s"] for s in samples]}
            if "call_ns" in samples[0]:
                row["call_ns"] = median_of(samples, "call_ns")
            if "cpu_us" in samples[0]:
                row["cpu_us"] = median_cpu(samples)
            results["throughput"].append(row)
            print(f"{name}: {row['ops_per_s']:,.0f} ops/s", flush=True)

        if "throughput" in wanted:
            throughput_rows(tmp, n, runs, c_exe, proxy_args, add, results)
        if "callcost" in wanted:
            results["call_cost"] = row_call_cost(tmp, 20_000 if a.smoke else 2_000_000,
                                                 20_000 if a.smoke else 500_000, 1 if a.smoke else 5)
            cc = results["call_cost"]
            print(f"call cost: C {cc['c_ns_per_frame']:.0f} ns per frame, Python {cc['py_ns_per_call']:.0f} ns "
                  "per call", flush=True)
        if "latency" in wanted:
            # The defaults (fsync always: a record is sent once written,
            # and the client's SYNC waits for its fsync) and no fsync.
            results["latency"] = latency_runs(tmp, rate, seconds, proxy_args, runs)
            results["latency_no_fsync"] = latency_runs(tmp, rate, seconds,
                                                       [*without_fsync_spacing(proxy_args), "--fsync", "never"],
                                                       runs)
            results["latency_100k"] = latency_runs(tmp, 5_000 if a.smoke else 100_000, seconds, proxy_args, runs)
            for key in ("latency", "latency_no_fsync", "latency_100k"):
                lat = results[key]
                each = ", ".join(f"{r['p99_ms']:.2f}" for r in lat["runs"])
                print(f"{key}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms (median run of {runs}; "
                      f"p99 of each run: {each}{held_runs(lat)}); CPU per write {cpu_text(lat['cpu_us'])}",
                      flush=True)
        if "isolation" in wanted:
            # Every write fanned out to a second Redis, up, then stopped for
            # the whole run: the first target's latency must not change.
            for key, second in (("latency_fanout", "up"), ("latency_fanout_b_down", "down")):
                results[key] = latency_runs(tmp, rate, seconds, proxy_args, runs, second)
                lat = results[key]
                print(f"{key}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms (median run of {runs})",
                      flush=True)
        if "writers" in wanted:
            results["writers"] = writers_rows(tmp, n, runs, c_exe, proxy_args)
            w = results["writers"]
            print(f"writers: one {w['one']['ops_per_s']:,.0f}/s, 16 clients {w['clients16']['ops_per_s']:,.0f}/s, "
                  f"4 proxies {w['proxies4']['ops_per_s']:,.0f}/s", flush=True)
        if "cluster" in wanted:
            results["cluster"] = cluster_rows(tmp, n, runs, c_exe, proxy_args)
            cl = results["cluster"]
            print(f"cluster: one Redis {cl['single_ops_per_s']:,.0f}/s, 3-master cluster "
                  f"{cl['cluster_r1_ops_per_s']:,.0f}/s with replicas = 1 ({cl['ratio_r1']:.0%}), "
                  f"{cl['cluster_r0_ops_per_s']:,.0f}/s with replicas = 0 ({cl['ratio_r0']:.0%})", flush=True)
        if "nats" in wanted:
            if find_tool("nats-server") is None:
                print("nats: skipped, no nats-server (apt-get install nats-server)", flush=True)
            else:
                results["nats"] = nats_rows(tmp, n, runs, proxy_args, a.nats_proxy_args.split(),
                                            a.nats_ini.replace("\\n", "\n"))
                nr = results["nats"]
                print(f"nats: TCP {nr['tcp_ops_per_s']:,.0f}/s, NATS {nr['nats_ops_per_s']:,.0f}/s "
                      f"({nr['ratio']:.0%}), {nr['records_per_run']:,.0f} records per run", flush=True)
        if "mongo" in wanted:
            results["mongo"] = mongo_runs(tmp, 1_000 if a.smoke else 100_000, 100, runs)
        if "backlog" in wanted:
            results["backlog"] = row_backlog(tmp, backlog, c_exe)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(results, a.out)


def throughput_rows(tmp: Path, n: int, runs: int, c_exe: Path, proxy_args: list[str], add, results: dict) -> None:
    """Rows 1 to 3, and the peak RSS of row 7 over the row-3 runs.

    The runs of rows 1 and 3 alternate (redis-benchmark, then each client
    once; `runs` times), so that a slower spell of the machine weighs on
    both sides of the ratios to row 1, as in the writers and NATS rows."""
    clients = (("c", "syncs, C library"), ("c-buffered", "syncs, C library, buffered"),
               ("c-seed", "syncs, C library, seed style (two intc_send per frame)"),
               ("py", "syncs, Python library"), ("py-buffered", "syncs, Python library, buffered"))
    limit: list[dict] = []
    samples: dict[str, list[dict]] = {client: [] for client, _ in clients}
    for _ in range(runs):
        limit.append(row_redis_benchmark(tmp, max(n, 100_000)))
        for client, _ in clients:
            samples[client].append(row_syncs(tmp, n, client, c_exe, proxy_args))
    add("redis-benchmark", "redis-benchmark -P 128 -c 1", "baseline", limit)
    direct_n = min(n, 100_000)
    add("redis-py-p1", "redis-py, one at a time", "baseline",
        [{"ops_per_s": row_redis_py(tmp, direct_n, 1)} for _ in range(runs)])
    add("redis-py-p1000", "redis-py, pipelined by 1,000", "baseline",
        [{"ops_per_s": row_redis_py(tmp, n, 1000)} for _ in range(runs)])
    rss: dict[str, int] = {}
    for client, name in clients:
        for s in samples[client]:
            for k, v in s["rss"].items():
                rss[k] = max(rss.get(k, 0), v)
        add(f"syncs-{client}", name, "syncs", samples[client])
    results["rss"] = rss


def write_results(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    print(text)
    try:
        chart(results, out / "benchmarks.png")
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'benchmarks.png'}")
    except ImportError:
        print(f"wrote {out / 'results.json'}, {out / 'results.md'} (no chart: pip install matplotlib)")


if __name__ == "__main__":
    main()
