"""Test harness: starts real redis-server, FerretDB, sync_server and proxy.

Nothing here mocks a database. Binaries come from `target/release` (built by
`scripts/test.sh`). When SYNCS_REQUIRE_ALL=1 (CI), a missing redis-server or
FerretDB is an error, not a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SYNCS_BIN_DIR", ROOT / "target" / "release"))
REQUIRE_ALL = os.environ.get("SYNCS_REQUIRE_ALL") == "1"
SEED_SOCKET = "/tmp/us1"


_taken: set[int] = set()


def free_port(bus_offset: int = 0) -> int:
    """A free TCP port below the kernel's ephemeral range, so that no
    outgoing connection (a proxy retrying, a client) can take it between
    now and the moment the daemon binds it. With `bus_offset` (a Redis
    Cluster node's bus port is its port + 10000), that port is free and
    below the range too."""
    import random

    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(1000):
        port = random.randrange(10000, max(low - bus_offset, 10100))
        wanted = [port, port + bus_offset] if bus_offset else [port]
        if any(p in _taken for p in wanted):
            continue
        try:
            for p in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _taken.update(wanted)
        return port
    raise AssertionError("no free port below the ephemeral range")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_settled(proxy_metrics: int, counters, timeout: float = 60.0, quiet: float = 1.5,
                 what: str = "no record pending at the proxy and the targets still") -> None:
    """Waits until nothing more can reach the targets, in place of a fixed
    wait before asserting "nothing more arrives / no duplicate": the proxy
    whose metrics are on port `proxy_metrics` has no record pending (every
    record acknowledged by every destination, none to send again) and
    `counters()` (the targets' state) does not change, both for `quiet`
    seconds in a row. `quiet` is longer than the period (1 s) at which the
    proxy republishes syncs_proxy_pending_records, so that a 0 read before
    the newest records were counted cannot end the wait. The caller makes
    sure first that the proxy has every frame (a SYNC, say)."""
    still: dict = {"since": None, "seen": None}

    def settled() -> bool:
        now = time.monotonic()
        pending = Syncs._metrics(proxy_metrics).get("syncs_proxy_pending_records")
        seen = counters()
        if pending != 0 or seen != still["seen"]:
            still.update(since=now if pending == 0 else None, seen=seen if pending == 0 else None)
            return False
        return now - still["since"] >= quiet

    wait_for(settled, timeout=timeout, interval=0.1, what=what)


def frame(payload: bytes) -> bytes:
    """A client frame built by hand (not by syncs' encoder): the u32
    little-endian length, then the payload."""
    return struct.pack("<I", len(payload)) + payload


def resp(*args: bytes) -> bytes:
    """A RESP command (array of bulk strings), built by hand."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def proxy_refusal(tmp_path: Path, *flags: str) -> str:
    """Starts a proxy with `flags` (its socket and spool under `tmp_path`,
    an unreachable server) that must refuse to start; returns what it said
    on stderr."""
    out = subprocess.run([str(BIN / "proxy"), "-u", str(tmp_path / "p.sock"), "-d", "127.0.0.1:1",
                          "--spool-dir", str(tmp_path / "spool"), *flags],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "RUST_BACKTRACE": "0"})
    assert out.returncode != 0, out
    return out.stderr


def compile_c(source: Path, exe: Path, *flags: str) -> Path:
    """Compiles the C program `source` into `exe` with cc against the
    library's header and the built libintc (BIN), warnings as errors;
    `flags` go before the library (another library's flags). `exe` finds
    libintc by its rpath, with no LD_LIBRARY_PATH."""
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", str(source),
                    "-I", str(ROOT / "bindings" / "c" / "include"), *flags, "-L", str(BIN), "-lintc",
                    f"-Wl,-rpath,{BIN}", "-o", str(exe)], check=True)
    return exe


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def find_tool(name: str, extra: list[str] | None = None) -> str | None:
    for cand in [shutil.which(name), *(extra or [])]:
        if cand and Path(cand).exists():
            return cand
    return None


def need(tool: str | None, name: str) -> str:
    if tool:
        return tool
    if REQUIRE_ALL:
        raise AssertionError(f"{name} is required (SYNCS_REQUIRE_ALL=1) but not installed")
    pytest.skip(f"{name} not installed")


class Proc:
    """A child process with its log file; stopped at teardown."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.args = args
        self.log = log
        self.env = env
        self.p: subprocess.Popen | None = None
        self.start()

    def start(self):
        self.fh = open(self.log, "ab")
        self.p = subprocess.Popen(self.args, stdout=self.fh, stderr=subprocess.STDOUT, env=self.env)

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def send_signal(self, sig: int):
        if self.alive():
            self.p.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fh.close()
        code = self.p.returncode
        self.p = None
        return code

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Redis:
    def __init__(self, tmp: Path, persistent: bool = False, extra_args: list[str] | None = None):
        """`extra_args`: more redis-server flags, e.g. ["--enable-debug-command", "yes"]."""
        exe = need(find_tool("redis-server"), "redis-server")
        self.port = free_port()
        durability = (["--appendonly", "yes", "--appendfsync", "always", "--save", ""] if persistent
                      else ["--save", "", "--appendonly", "no"])
        data = tmp / f"redis-{self.port}"
        data.mkdir()
        self.proc = Proc(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", *durability, "--dir", str(data),
             *(extra_args or [])],
            tmp / f"redis-{self.port}.log",
        )
        wait_for(lambda: port_open(self.port), what="redis-server")
        import redis  # redis-py: only the test's eyes on the target

        self.url = f"redis://127.0.0.1:{self.port}"
        self._redis = redis

    def client(self, db: int = 0):
        return self._redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # noqa: BLE001 - any failure means "not up yet"
            return False

    def stop(self):
        self.proc.stop()


class RedisCluster:
    """A Redis Cluster on loopback: `masters` masters with one replica each,
    made by `redis-cli --cluster create`; ready when every node reports
    `cluster_state:ok` and all 16384 slots assigned."""

    def __init__(self, tmp: Path, masters: int = 3):
        self.exe = need(find_tool("redis-server"), "redis-server")
        cli = need(find_tool("redis-cli"), "redis-cli")
        import redis

        self._redis = redis
        self.tmp = tmp
        self.ports = [free_port(bus_offset=10000) for _ in range(2 * masters)]
        self.procs = {p: self._start(p) for p in self.ports}
        for p in self.ports:
            wait_for(lambda p=p: port_open(p), what=f"cluster node {p}")
        out = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60)
        assert out.returncode == 0, out.stdout.decode(errors="replace") + out.stderr.decode(
            errors="replace")
        self.wait_ok()
        self.url = ",".join(f"redis://127.0.0.1:{p}" for p in self.ports[:masters])

    def _start(self, port: int) -> Proc:
        data = self.tmp / f"cluster-{port}"
        data.mkdir(exist_ok=True)
        return Proc(
            [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", str(data)],
            self.tmp / f"cluster-{port}.log")

    def node(self, port: int):
        return self._redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def client(self):
        """redis-py's cluster client: the test's eyes on the whole cluster."""
        from redis.cluster import RedisCluster as Client

        return Client(host="127.0.0.1", port=self.masters()[0])

    def _ok(self, port: int) -> bool:
        try:
            info = self.node(port).cluster("info")
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384

    def _replicated(self) -> bool:
        """Every master serving slots has a replica whose link is up (else
        a target with `replicas = 1` holds its writes: WAIT falls short)."""
        try:
            for p in self.masters():
                info = self.node(p).info("replication")
                links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                if not any(l.get("state") == "online" for l in links):
                    return False
            return True
        except Exception:  # noqa: BLE001 - not ready
            return False

    def wait_ok(self, timeout: float = 30):
        """Until every live node reports cluster_state:ok with all slots,
        and every master has an online replica."""
        wait_for(lambda: all(self._ok(p) for p, proc in self.procs.items() if proc.alive()),
                 timeout=timeout, interval=0.1, what="cluster_state:ok on every node")
        wait_for(self._replicated, timeout=timeout, interval=0.1,
                 what="an online replica for every master")

    def masters(self) -> list[int]:
        """Ports of the masters that serve slots now, seen from a live node."""
        for p, proc in self.procs.items():
            if not proc.alive():
                continue
            try:
                slots = self.node(p).execute_command("CLUSTER", "SLOTS")
            except Exception:  # noqa: BLE001 - ask the next node
                continue
            return sorted({int(r[2][1]) for r in slots})
        raise AssertionError("no live cluster node answers CLUSTER SLOTS")

    def kill(self, port: int):
        self.procs[port].stop(signal.SIGKILL)

    def restart(self, port: int):
        self.procs[port].start()
        wait_for(lambda: port_open(port), what=f"cluster node {port} restarted")

    def stop(self):
        for proc in self.procs.values():
            proc.stop()


class RedisSentinels:
    """A master with two replicas and three sentinels watching it as
    `mymaster` (down after 1 s); there is no redis-sentinel binary here,
    `redis-server <conf> --sentinel` is the same program."""

    MASTER = "mymaster"

    def __init__(self, tmp: Path):
        self.exe = need(find_tool("redis-server"), "redis-server")
        import redis

        self._redis = redis
        self.tmp = tmp
        self.data_ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, Proc] = {}
        master = self.data_ports[0]
        for p in self.data_ports:
            data = tmp / f"sentinel-data-{p}"
            data.mkdir()
            extra = [] if p == master else ["--replicaof", "127.0.0.1", str(master)]
            self.procs[p] = Proc(
                [self.exe, "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(data), *extra],
                tmp / f"sentinel-data-{p}.log")
        for p in self.sentinel_ports:
            conf = tmp / f"sentinel-{p}.conf"
            conf.write_text(
                f"port {p}\nbind 127.0.0.1\ndir {tmp}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n")
            self.procs[p] = Proc([self.exe, str(conf), "--sentinel"], tmp / f"sentinel-{p}.log")
        self.wait_healthy()
        self.url = ",".join(f"redis://127.0.0.1:{p}" for p in self.sentinel_ports)

    def sentinel(self, port: int):
        return self._redis.Redis(host="127.0.0.1", port=port, socket_timeout=5,
                                 decode_responses=True)

    def _ready(self, old: int | None = None, replicas: int = 2) -> bool:
        """Every sentinel names the same master (not `old`) and sees
        `replicas` replicas with their link to it up (else a failover has no replica
        to promote: NOGOODSLAVE), and knows the other sentinels."""
        try:
            masters = set()
            for p in self.sentinel_ports:
                if not self.procs[p].alive():
                    continue
                s = self.sentinel(p)
                _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
                masters.add(int(port))
                seen = s.execute_command("SENTINEL", "REPLICAS", self.MASTER)
                up = [r for r in seen if r.get("master-link-status") == "ok"
                      and "down" not in r.get("flags", "") and int(r.get("master-port", 0)) == int(port)]
                if len(up) < replicas:
                    return False
                master = s.execute_command("SENTINEL", "MASTER", self.MASTER)
                if int(master.get("num-other-sentinels", 0)) < 2:
                    return False
            return len(masters) == 1 and old not in masters
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def master_port(self) -> int:
        """The master's port as the first live sentinel sees it."""
        for p in self.sentinel_ports:
            try:
                _, port = self.sentinel(p).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
                return int(port)
            except Exception:  # noqa: BLE001 - ask the next one
                continue
        raise AssertionError("no sentinel answers")

    def master(self):
        return self._redis.Redis(host="127.0.0.1", port=self.master_port(), socket_timeout=5)

    def failover(self):
        """`SENTINEL FAILOVER`: waits until the sentinels name another master
        that says it is one."""
        old = self.master_port()
        self.sentinel(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", self.MASTER)
        self.wait_master_moved(old)

    def wait_master_moved(self, old: int, timeout: float = 30):
        """Until the sentinels agree on a master other than `old` that says
        it is one."""
        def moved() -> bool:
            try:
                port = self.master_port()
                role = self._redis.Redis(host="127.0.0.1", port=port,
                                         socket_timeout=2).execute_command("ROLE")
            except Exception:  # noqa: BLE001 - failover in progress
                return False
            return port != old and role[0] in (b"master", "master")

        wait_for(moved, timeout=timeout, interval=0.1, what="the sentinels promoted a replica")

    def wait_healthy(self, old: int | None = None, replicas: int = 2, timeout: float = 30):
        """Until every live sentinel agrees on one master (not `old`) with
        `replicas` replicas linked to it: ready for the next failover."""
        wait_for(lambda: self._ready(old, replicas), timeout=timeout, interval=0.1,
                 what=f"every sentinel agrees on the master and sees {replicas} replicas linked")

    def kill(self, port: int):
        self.procs[port].stop(signal.SIGKILL)

    def stop(self):
        for proc in self.procs.values():
            proc.stop()


class Ferret:
    def __init__(self, tmp: Path, port: int | None = None):
        """`port`: listen there (one taken earlier with free_port(), e.g. to
        start FerretDB after the rules that name it)."""
        exe = need(find_tool("ferretdb", [str(Path.home() / "go" / "bin" / "ferretdb"),
                                          "/usr/local/bin/ferretdb"]), "FerretDB")
        self.port = port or free_port()
        data = tmp / f"ferret-{self.port}"
        data.mkdir()
        self.proc = Proc(
            [exe, "--handler=sqlite", f"--sqlite-url=file:{data}/", f"--state-dir={data}",
             f"--listen-addr=127.0.0.1:{self.port}", "--telemetry=disable", "--log-level=WARN",
             "--debug-addr=-"],
            tmp / f"ferret-{self.port}.log",
        )
        wait_for(lambda: port_open(self.port), timeout=20, what="FerretDB")
        self.url = f"mongodb://127.0.0.1:{self.port}/"

    def client(self):
        import pymongo

        return pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)

    def stop(self):
        self.proc.stop()


class Nats:
    """A nats-server with JetStream (file storage in the test's directory).

    `max_file_store` is set, never left to nats-server's default (75% of the
    free disk): JetStream reserves each stream's whole `max_bytes` against it,
    so the default made the tests depend on how full the machine's disk is.
    """

    def __init__(self, tmp: Path, max_file_store: str = "1TB"):
        exe = need(find_tool("nats-server"), "nats-server")
        self.port = free_port()
        self.monitor = free_port()
        data = tmp / f"nats-{self.port}"
        data.mkdir()
        conf = tmp / f"nats-{self.port}.conf"
        conf.write_text(
            f'jetstream {{\n  store_dir: "{data}"\n  max_file_store: {max_file_store}\n'
            "  max_memory_store: 256MB\n}\n"
        )
        self.proc = Proc(
            [exe, "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.monitor)],
            tmp / f"nats-{self.port}.log",
        )
        wait_for(lambda: port_open(self.port), what="nats-server")
        self.url = f"nats://127.0.0.1:{self.port}"

    def _stream(self, stream: str) -> dict:
        """`stream`'s entry in the monitoring endpoint's /jsz, with its consumers."""
        import json
        import urllib.request

        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor}/jsz?streams=true&consumers=true",
                timeout=5) as r:
            jsz = json.load(r)
        for account in jsz.get("account_details") or []:
            for st in account.get("stream_detail") or []:
                if st.get("name") == stream:
                    return st
        raise AssertionError(f"no stream {stream} in /jsz")

    def stream_messages(self, stream: str) -> int:
        """Messages stored in `stream` now."""
        return int(self._stream(stream)["state"]["messages"])

    def consumers_settled(self, stream: str) -> bool:
        """Every consumer of `stream` has been delivered everything and acked
        it: nothing can be redelivered any more."""
        consumers = self._stream(stream).get("consumer_detail") or []
        return bool(consumers) and all(
            c.get("num_pending", 0) == 0 and c.get("num_ack_pending", 0) == 0
            for c in consumers)

    def stop(self, sig: int = signal.SIGTERM):
        self.proc.stop(sig)

    def start(self):
        self.proc.start()
        wait_for(lambda: port_open(self.port), what="nats-server restarted")


def socket_answers(path: str) -> bool:
    """Whether a proxy accepts on the unix socket `path` (a stale socket
    file from a killed proxy exists but refuses)."""
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
        return True
    except OSError:
        return False


class Syncs:
    """A sync_server and a proxy wired to the given rules."""

    # Put before every proxy's command line (the bench suite's
    # `--proxy-nice`: `nice -n N`).
    proxy_launcher: list[str] = []

    def __init__(self, tmp: Path, rules: str, socket_path: str | None = None,
                 start_server: bool = True, proxy_args: list[str] | None = None,
                 server_ini: str = "", nats: "Nats | None" = None, nats_ini: str = ""):
        """`nats`: the transport is NATS JetStream through that nats-server
        (`nats_ini`: more `[transport]` keys) instead of the proxy's TCP link."""
        for b in ("sync_server", "proxy"):
            if not (BIN / b).exists():
                raise AssertionError(f"{BIN / b} missing: run scripts/test.sh (it builds first)")
        self.tmp = tmp
        self.nats = nats
        self.rules_path = tmp / "rules.sync"
        self.rules_path.write_text(rules)
        self.dead_letter = tmp / "dead-letter.jsonl"
        self.server_port = free_port()
        self.server_metrics = free_port()
        self.proxy_metrics = free_port()
        self.config = tmp / "server.ini"
        # A NATS server does not listen for proxies: it consumes the stream.
        listen = "" if nats else f"listen = 127.0.0.1:{self.server_port}\n"
        transport = (f"[transport]\nkind = nats\nnats_url = {nats.url}\nserver_id = {tmp.name}\n{nats_ini}"
                     if nats else "")
        self.config.write_text(
            "[server]\n"
            f"{listen}"
            f"rules = {self.rules_path}\n"
            f"dead_letter = {self.dead_letter}\n"
            f"metrics = 127.0.0.1:{self.server_metrics}\n"
            f"{server_ini}"  # more [server] keys, then sections such as [tls]
            f"{transport}"
            "[log]\nlevel = info\n"
        )
        self.socket = socket_path or str(tmp / "proxy.sock")
        self.spool = tmp / "spool"
        self.server: Proc | None = None
        self.proxy: Proc | None = None
        self.more_proxies: list[Proc] = []
        if start_server:
            self.start_server()
        self.proxy_args: list[str] = []
        self.proxy_dest: int | None = None  # a port in front of the server (fault tests)
        self.start_proxy(proxy_args or [])

    def start_server(self):
        self.server = Proc([str(BIN / "sync_server"), str(self.config)], self.tmp / "server.log")
        port = self.server_metrics if self.nats else self.server_port
        wait_for(lambda: port_open(port) or not self.server.alive(), what="sync_server")
        assert self.server.alive(), self.server.text()

    def start_proxy(self, extra: list[str] | None = None):
        if extra is not None:
            self.proxy_args = extra
        self.proxy = self._proxy(self.socket, self.spool, self.tmp / "proxy.log",
                                 ["--metrics", f"127.0.0.1:{self.proxy_metrics}", *self.proxy_args])

    def add_proxy(self, name: str, extra: list[str]) -> str:
        """One more proxy into the same server (stopped with the rest);
        returns its socket."""
        sock = str(self.tmp / f"{name}.sock")
        self.more_proxies.append(self._proxy(sock, self.tmp / f"{name}.spool", self.tmp / f"{name}.log",
                                             ["--name", name, *extra]))
        return sock

    def _proxy(self, sock: str, spool: Path, log: Path, args: list[str]) -> Proc:
        dest = (["--nats", self.nats.url] if self.nats
                else ["-d", f"127.0.0.1:{self.proxy_dest or self.server_port}"])
        proc = Proc([*self.proxy_launcher, str(BIN / "proxy"), "-u", sock, *dest, "--spool-dir", str(spool), *args],
                    log)
        wait_for(lambda: socket_answers(sock) or not proc.alive(), what="proxy socket")
        assert proc.alive(), proc.text()
        return proc

    @staticmethod
    def _metrics(port: int) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def server_metric(self, name: str) -> float:
        return self._metrics(self.server_metrics).get(name, 0.0)

    def proxy_metric(self, name: str) -> float:
        return self._metrics(self.proxy_metrics).get(name, 0.0)

    @classmethod
    def _metric_sum(cls, port: int, name: str) -> float:
        """Metric `name` summed over all its labelled series."""
        try:
            metrics = cls._metrics(port)
        except OSError:
            return 0.0
        return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))

    def server_metric_sum(self, name: str) -> float:
        return self._metric_sum(self.server_metrics, name)

    def proxy_metric_sum(self, name: str) -> float:
        return self._metric_sum(self.proxy_metrics, name)

    def dead_letters(self) -> list[dict]:
        import json

        if not self.dead_letter.exists():
            return []
        return [json.loads(l) for l in self.dead_letter.read_text().splitlines() if l.strip()]

    def logs(self) -> str:
        parts = []
        for name, p in (("server", self.server), ("proxy", self.proxy)):
            if p is not None:
                parts.append(f"--- {name} log ---\n{p.text()}")
        return "\n".join(parts)

    def stop(self):
        for p in (*self.more_proxies, self.proxy, self.server):
            if p is not None:
                p.stop()


@pytest.fixture
def redis_target(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def mongo_target(tmp_path):
    f = Ferret(tmp_path)
    yield f
    f.stop()


@pytest.fixture
def syncs_factory(tmp_path, request):
    made: list[Syncs] = []
    request.node._syncs = made

    def make(rules: str, **kw) -> Syncs:
        s = Syncs(tmp_path, rules, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def assert_seed_example_arrived(redis: Redis, coll) -> None:
    """What the seed's Python example (bindings/python/tests/seed_example.py)
    writes, as it must arrive: Redis dbs 1 and 2 of `redis`, and its
    delete_many applied to `coll`, which held two matching documents and
    one other."""
    r1, r2 = redis.client(1), redis.client(2)
    assert wait_for(lambda: r1.get("a"), what="a in db 1") == b"bcd0"
    assert wait_for(lambda: r2.get("awesome"), what="awesome in db 2").decode() == "中文你好0"
    assert r2.get("cool") == b"hello0"
    wait_for(lambda: coll.count_documents({"key": "value"}) == 0, what="delete_many applied")
    assert coll.count_documents({"key": "other"}) == 1


def default_rules(redis_url: str | None, mongo_url: str | None) -> str:
    """The shipped default rules with the test's own target URLs."""
    text = (ROOT / "rules" / "default.sync").read_text()
    if redis_url:
        text = text.replace("redis://127.0.0.1:6380", redis_url)
    if mongo_url:
        text = text.replace("mongodb://127.0.0.1:27017", mongo_url.rstrip("/"))
    return text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, print the daemons' logs."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for s in getattr(item, "_syncs", []):
            rep.sections.append(("syncs logs", s.logs()))
