"""Soak: writers under random faults, then exact accounting of every write.

    python3 tests/soak/soak.py --minutes 20               # the full soak
    python3 tests/soak/soak.py --seconds 60 --rate 1500 --fault-every 1 3 --out soak.json
    python3 tests/soak/soak.py --help                     # every option

Starts its own redis-server (AOF, fsync always), sync_server and proxy from
target/release (SYNCS_BIN_DIR overrides), all on 127.0.0.1, with a relay
(tests/relay.py) between proxy and server, and the shipped default rules
pointed at that Redis.

Writers: separate processes, one list key each (`soak:w<k>`), RPUSH 1, 2,
3, ... at a paced rate. Every write is sent once and never retried:

- *refused*: `redis_one` raised (the frame may still have reached the proxy
  in part or whole: at most once);
- *confirmed*: did not raise, and the next `sync()` call (every
  `--sync-every` writes) returned 0;
- *unconfirmed*: did not raise, and that `sync()` raised or reported
  refusals (at most once). A sync confirms only what was sent since the
  sync call before it, so a write is never counted as confirmed by a later
  sync than its own.

Faults, one at a time, every `--fault-every` seconds (random in the range),
chosen at random: proxy kill -9 + restart, server kill -9 + restart,
server SIGTERM + restart, server SIGHUP (rules reload), target Redis
restart (SIGTERM, start; the AOF keeps the data), relay cut (FIN) and relay
cut (RST) for 0.2-1 s.

When the time is up the faults stop; once the proxy has nothing pending
and the lists have stopped growing, each list is checked against what its
writer knows: every confirmed write exactly once, nothing twice, nothing
out of order, nothing that was never sent. Each duplicate run is shown
with the fault that followed its write (the likely cause).

Exit status: 0 all good; 1 a confirmed write lost, a duplicate, an element
out of order or one never sent (or a daemon crashed); 2 the harness could
not do its job (a daemon would not start again, the target never settled,
a writer failed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import Redis, Syncs, default_rules, wait_for  # noqa: E402
from relay import Relay  # noqa: E402

FAULT_KINDS = ("proxy_kill9", "server_kill9", "server_term", "server_hup",
               "redis_restart", "relay_cut", "relay_reset")

# A writer's status of each number it sent (one byte per number).
CONFIRMED, UNCONFIRMED, REFUSED = 0, 1, 2
_CONFIRM = bytes(CONFIRMED if b == UNCONFIRMED else b for b in range(256))


class HarnessError(Exception):
    """The soak could not do its job: not a finding about syncs."""


# -- writer process ------------------------------------------------------------


def writer_main(args: argparse.Namespace) -> int:
    """One writer: RPUSH soak:w<k> 1, 2, ... until `args.until` (a
    time.monotonic() value; the clock is system-wide on Linux)."""
    import intc

    key = f"soak:w{args.writer}"
    ic = intc.IncClient(send_timeout=args.send_timeout)
    status = bytearray()
    timeline: list[tuple[int, float]] = []  # (last number sent, monotonic time) at each sync
    errors: dict[str, int] = {}
    syncs = {"ok": 0, "failed": 0, "with_refusals": 0}
    since_sync = 0  # index in `status` of the first write since the last sync call

    def sync(timeout: float) -> None:
        nonlocal since_sync
        try:
            refused = ic.sync(args.socket, timeout)
        except intc.IntcError as e:
            syncs["failed"] += 1
            name = f"sync:{type(e).__name__}"
            errors[name] = errors.get(name, 0) + 1
        else:
            if refused == 0:
                syncs["ok"] += 1
                status[since_sync:] = bytes(status[since_sync:]).translate(_CONFIRM)
            else:
                syncs["with_refusals"] += 1
        since_sync = len(status)
        timeline.append((len(status), time.monotonic()))

    rate = args.rate
    base_t = time.monotonic()
    base_i = 0
    i = 0
    try:
        while time.monotonic() < args.until:
            i += 1
            try:
                ic.redis_one(args.socket, 6379, 0, ("rpush", key, str(i)))
                status.append(UNCONFIRMED)
            except intc.IntcError as e:
                status.append(REFUSED)
                name = type(e).__name__
                errors[name] = errors.get(name, 0) + 1
            if i % args.sync_every == 0:
                sync(args.sync_timeout)
            if i % 25 == 0:  # pacing: no catch-up burst after more than 1 s behind
                ahead = base_t + (i - base_i) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -1.0:
                    base_t, base_i = time.monotonic(), i
        if len(status) > since_sync:
            sync(max(args.sync_timeout, 10.0))
    except KeyboardInterrupt:
        return 130
    Path(args.result + ".status").write_bytes(bytes(status))
    Path(args.result).write_text(json.dumps({
        "writer": args.writer, "key": key, "sent": len(status), "errors": errors,
        "syncs": syncs, "timeline": timeline,
        "seconds": time.monotonic() - args.started,
    }))
    return 0


# -- the soak ------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.rng = random.Random(args.seed)
        self.redis: Redis | None = None
        self.syncs: Syncs | None = None
        self.relay: Relay | None = None
        self.writers: list[subprocess.Popen[bytes]] = []
        self.faults: list[dict[str, Any]] = []
        self.crashes: list[str] = []
        self.samples: list[dict[str, float]] = []
        self.harness_notes: list[str] = []
        self.t0 = time.monotonic()
        self._logs: list[Any] = []

    # - setup / teardown -

    def start(self) -> None:
        self.redis = Redis(self.tmp, persistent=True)
        self.syncs = Syncs(self.tmp, default_rules(self.redis.url, None))
        self.relay = Relay(self.syncs.server_port)
        assert self.syncs.proxy is not None
        self.syncs.proxy.stop()
        self.syncs.proxy_dest = self.relay.port
        self.syncs.start_proxy()

    def cleanup(self) -> None:
        for w in self.writers:
            if w.poll() is None:
                w.kill()
            try:
                w.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.relay is not None:
            try:
                self.relay.stop()
            except RuntimeError:
                pass
        if self.syncs is not None:
            self.syncs.stop()
        if self.redis is not None:
            self.redis.stop()
        for fh in self._logs:
            fh.close()

    # - helpers -

    @property
    def s(self) -> Syncs:
        assert self.syncs is not None
        return self.syncs

    @property
    def r(self) -> Redis:
        assert self.redis is not None
        return self.redis

    @property
    def rl(self) -> Relay:
        assert self.relay is not None
        return self.relay

    def proxy_metric(self, name: str) -> float | None:
        try:
            return self.s.proxy_metric(name)
        except OSError:
            return None

    def lengths(self) -> list[int] | None:
        try:
            c = self.r.client(0)
            return [int(c.llen(f"soak:w{k}")) for k in range(1, self.args.writers + 1)]
        except Exception:  # noqa: BLE001 - the target is restarting
            return None

    def _retry(self, what: str, fn: Any, tries: int = 5) -> None:
        """Runs a restart step; a failure is retried a few times, then it
        is the harness' failure (a daemon that will not start again)."""
        for attempt in range(1, tries + 1):
            try:
                fn()
                return
            except AssertionError as e:
                note = f"{what}: attempt {attempt} failed: {str(e)[-400:]}"
                self.harness_notes.append(note)
                print(f"soak: {note}", flush=True)
                time.sleep(0.5)
        raise HarnessError(f"{what}: failed {tries} times")

    def start_proxy(self) -> None:
        def go() -> None:
            if self.s.proxy is not None:
                self.s.proxy.stop()  # a failed start leaves a dead Proc
            self.s.start_proxy()
        self._retry("proxy start", go)

    def start_server(self) -> None:
        def go() -> None:
            if self.s.server is not None:
                self.s.server.stop()
            self.s.start_server()
        self._retry("server start", go)

    def start_redis(self) -> None:
        def go() -> None:
            if not self.r.proc.alive():
                self.r.proc.stop()
                self.r.proc.start()
            wait_for(self.r.ping, timeout=120, what="target Redis answering after a restart")
        self._retry("redis start", go)

    def check_alive(self) -> None:
        """A daemon that died without a fault is a crash: noted, restarted."""
        for name, proc, restart in (("proxy", self.s.proxy, self.start_proxy),
                                    ("server", self.s.server, self.start_server),
                                    ("redis", self.r.proc, self.start_redis)):
            if proc is None or not proc.alive():
                code = proc.p.returncode if proc is not None and proc.p is not None else None
                tail = proc.text()[-2000:] if proc is not None else ""
                self.crashes.append(f"{name} exited by itself (status {code}); log tail:\n{tail}")
                print(f"soak: {name} exited by itself (status {code})", flush=True)
                restart()

    # - faults -

    def fault(self, kind: str) -> dict[str, Any]:
        s, rl = self.s, self.rl
        down = round(self.rng.uniform(0.0, 0.5), 3)
        info: dict[str, Any] = {"kind": kind, "t": time.monotonic()}
        if kind == "proxy_kill9":
            assert s.proxy is not None
            s.proxy.stop(signal.SIGKILL)
            time.sleep(down)
            self.start_proxy()
            info["down"] = down
        elif kind in ("server_kill9", "server_term"):
            assert s.server is not None
            code = s.server.stop(signal.SIGKILL if kind == "server_kill9" else signal.SIGTERM)
            info["exit"] = code
            time.sleep(down)
            self.start_server()
            info["down"] = down
        elif kind == "server_hup":
            assert s.server is not None
            s.server.send_signal(signal.SIGHUP)
        elif kind == "redis_restart":
            code = self.r.proc.stop()
            info["exit"] = code
            time.sleep(down)
            self.r.proc.start()
            self.start_redis()
            info["down"] = down
        elif kind in ("relay_cut", "relay_reset"):
            cut = round(self.rng.uniform(0.2, 1.0), 3)
            rl.cut(cut, reset=kind == "relay_reset")
            info["down"] = cut
        else:
            raise ValueError(kind)
        info["end"] = time.monotonic()
        return info

    def sampler(self, until: float, stop: threading.Event) -> None:
        """Every 0.25 s until `until`: the proxy's pending records and the
        lengths of the lists (-1 while that daemon is down)."""
        while not stop.is_set() and time.monotonic() < until:
            pending = self.proxy_metric("syncs_proxy_pending_records")
            lengths = self.lengths()
            self.samples.append({"t": time.monotonic(), "pending": -1 if pending is None else pending,
                                 "arrived": -1 if lengths is None else sum(lengths)})
            stop.wait(0.25)

    def run_faults(self, until: float) -> None:
        a = self.args
        kinds = a.faults
        nxt = time.monotonic() + self.rng.uniform(*a.fault_every)
        while time.monotonic() < until:
            time.sleep(max(0.0, min(1.0, nxt - time.monotonic(), until - time.monotonic())))
            if time.monotonic() >= until:
                break
            for w in self.writers:
                if w.poll() is not None:
                    raise HarnessError(f"a writer exited early (status {w.returncode})")
            if time.monotonic() < nxt:
                continue
            self.check_alive()
            kind = self.rng.choice(kinds)
            info = self.fault(kind)
            self.faults.append(info)
            print(f"soak: {info['t'] - self.t0:7.1f}s {kind}"
                  + (f" ({info['down']}s)" if "down" in info else ""), flush=True)
            nxt = time.monotonic() + self.rng.uniform(*a.fault_every)

    # - settle -

    def heal(self) -> None:
        self.rl.restore()
        self.check_alive()

    def settle(self, timeout: float) -> float:
        """Waits until the proxy has nothing pending and the lists stopped
        growing (the same lengths for 2 s with nothing pending)."""
        started = time.monotonic()
        stable: dict[str, Any] = {"lengths": None, "since": 0.0}

        def settled() -> bool:
            self.check_alive()
            pending = self.proxy_metric("syncs_proxy_pending_records")
            lengths = self.lengths()
            now = time.monotonic()
            if pending != 0 or lengths is None or lengths != stable["lengths"]:
                stable["lengths"], stable["since"] = lengths, now
                return False
            return now - stable["since"] >= 2.0

        try:
            wait_for(settled, timeout=timeout, interval=0.25, what="nothing pending and the lists stable")
        except AssertionError as e:
            raise HarnessError(f"never settled: {e}") from None
        return time.monotonic() - started

    # - accounting -

    def account(self, k: int, result: dict[str, Any], status: bytes) -> dict[str, Any]:
        """Checks the list of writer k against what the writer knows."""
        n = len(status)
        c = self.r.client(0)
        key = f"soak:w{k}"
        got: list[int] = []
        step = 200_000
        for start in range(0, int(c.llen(key)), step):
            got.extend(int(x) for x in c.lrange(key, start, start + step - 1))
        seen = bytearray(n + 1)  # times each number arrived (capped at 255)
        foreign = 0
        duplicates = 0
        out_of_order = 0
        dup_values: list[int] = []
        prev = 0
        for x in got:
            if 1 <= x <= n:
                if seen[x]:
                    duplicates += 1
                    dup_values.append(x)
                if seen[x] < 255:
                    seen[x] += 1
            else:
                foreign += 1
            if x < prev:
                out_of_order += 1
            prev = x
        counts = {CONFIRMED: 0, UNCONFIRMED: 0, REFUSED: 0}
        arrived_by = {CONFIRMED: 0, UNCONFIRMED: 0, REFUSED: 0}
        lost_confirmed: list[int] = []
        for i, st in enumerate(status, start=1):
            counts[st] += 1
            if seen[i]:
                arrived_by[st] += 1
            elif st == CONFIRMED:
                lost_confirmed.append(i)
        return {
            "writer": k, "key": key, "sent": n,
            "confirmed": counts[CONFIRMED], "unconfirmed": counts[UNCONFIRMED], "refused": counts[REFUSED],
            "arrived": len(got), "distinct_arrived": len(got) - duplicates,
            "unconfirmed_arrived": arrived_by[UNCONFIRMED], "refused_arrived": arrived_by[REFUSED],
            "lost_confirmed": len(lost_confirmed), "lost_confirmed_first": lost_confirmed[:20],
            "duplicates": duplicates, "out_of_order": out_of_order, "never_sent": foreign,
            "duplicate_runs": self.explain(dup_values, result["timeline"]),
            "errors": result["errors"], "syncs": result["syncs"],
            "rate": round(n / max(result["seconds"], 1e-9)),
        }

    def explain(self, values: list[int], timeline: list[list[float]]) -> list[dict[str, Any]]:
        """Groups duplicated numbers into runs of consecutive values; for
        each, when it was written (from the writer's sync timeline) and the
        faults just before and after that moment."""
        runs: list[list[int]] = []
        for v in sorted(set(values)):
            if runs and v == runs[-1][1] + 1:
                runs[-1][1] = v
            else:
                runs.append([v, v])
        marks = [int(m[0]) for m in timeline]
        times = [float(m[1]) for m in timeline]
        fault_t = [f["t"] for f in self.faults]
        out = []
        for lo, hi in runs[:50]:
            j = bisect_left(marks, lo)  # first sync at or after the write
            written = times[min(j, len(times) - 1)] if times else self.t0
            f_before = bisect_right(fault_t, written) - 1
            after = self.faults[f_before + 1] if f_before + 1 < len(self.faults) else None
            before = self.faults[f_before] if f_before >= 0 else None
            out.append({
                "first": lo, "last": hi, "written_at": round(written - self.t0, 2),
                "fault_before": None if before is None else
                f"{before['kind']} at {before['t'] - self.t0:.2f}s",
                "fault_after": None if after is None else
                f"{after['kind']} at {after['t'] - self.t0:.2f}s",
            })
        return out

    # - the whole run -

    def run(self) -> dict[str, Any]:
        a = self.args
        self.start()
        self.t0 = time.monotonic()
        until = self.t0 + a.duration
        for k in range(1, a.writers + 1):
            result = self.tmp / f"writer-{k}.json"
            log = open(self.tmp / f"writer-{k}.log", "ab")
            self._logs.append(log)
            self.writers.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--as-writer", str(k),
                 "--socket", self.s.socket, "--until", repr(until), "--started", repr(self.t0),
                 "--rate", str(a.rate), "--sync-every", str(a.sync_every),
                 "--sync-timeout", str(a.sync_timeout), "--send-timeout", str(a.send_timeout),
                 "--result", str(result)],
                stdout=log, stderr=subprocess.STDOUT))
        print(f"soak: {a.writers} writers at {a.rate}/s each for {a.duration:.0f}s, faults every "
              f"{a.fault_every[0]}-{a.fault_every[1]}s from {', '.join(a.faults)}; seed {a.seed}; "
              f"files in {self.tmp}", flush=True)
        stop = threading.Event()
        sampler = threading.Thread(target=self.sampler, args=(until, stop), daemon=True)
        sampler.start()
        try:
            self.run_faults(until)
        finally:
            stop.set()
            sampler.join(10)
        for w in self.writers:
            try:
                code = w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise HarnessError("a writer did not finish within 60 s of the end") from None
            if code != 0:
                raise HarnessError(f"a writer failed (status {code}); see {self.tmp}/writer-*.log")
        self.heal()
        settle_seconds = self.settle(a.settle_timeout)
        per_writer = []
        for k in range(1, a.writers + 1):
            result = json.loads((self.tmp / f"writer-{k}.json").read_text())
            status = (self.tmp / f"writer-{k}.json.status").read_bytes()
            per_writer.append(self.account(k, result, status))
        totals = {f: sum(w[f] for w in per_writer) for f in (
            "sent", "confirmed", "unconfirmed", "refused", "arrived", "unconfirmed_arrived",
            "refused_arrived", "lost_confirmed", "duplicates", "out_of_order", "never_sent")}
        by_kind = {k: sum(1 for f in self.faults if f["kind"] == k) for k in a.faults}
        pend = [x["pending"] for x in self.samples]
        ok = (totals["lost_confirmed"] == 0 and totals["duplicates"] == 0
              and totals["out_of_order"] == 0 and totals["never_sent"] == 0 and not self.crashes)
        return {
            "ok": ok, "seconds": a.duration, "seed": a.seed, "rate_per_writer": a.rate,
            "writers": a.writers, "totals": totals, "per_writer": per_writer,
            "faults": len(self.faults), "faults_by_kind": by_kind,
            "fault_log": [{**f, "t": round(f["t"] - self.t0, 3), "end": round(f["end"] - self.t0, 3)}
                          for f in self.faults],
            "crashes": self.crashes, "harness_notes": self.harness_notes,
            "settle_seconds": round(settle_seconds, 1), "max_pending": max(pend) if pend else None,
            "last_server_duplicates_skipped": self.server_total("syncs_server_records_duplicate_total"),
            "tmp": str(self.tmp),
        }

    def server_total(self, name: str) -> float | None:
        try:
            metrics = self.s._metrics(self.s.server_metrics)
        except OSError:
            return None
        return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def print_summary(summary: dict[str, Any]) -> None:
    cols = ("sent", "confirmed", "unconfirmed", "refused", "arrived", "unconfirmed_arrived",
            "refused_arrived", "lost_confirmed", "duplicates", "out_of_order", "never_sent")
    heads = ("writer", "sent", "confirmed", "unconf.", "refused", "arrived", "unconf.arr",
             "refused.arr", "LOST conf.", "DUPS", "ORDER", "never sent", "rate/s")
    rows = [[w["key"], *(w[c] for c in cols), w["rate"]] for w in summary["per_writer"]]
    rows.append(["total", *(summary["totals"][c] for c in cols), ""])
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows)]
    line = "  ".join("{:>" + str(wd) + "}" for wd in widths)
    print()
    print(line.format(*heads))
    for row in rows:
        print(line.format(*(str(x) for x in row)))
    print()
    by_kind = ", ".join(f"{k} {v}" for k, v in summary["faults_by_kind"].items())
    print(f"faults: {summary['faults']} ({by_kind})")
    print(f"settled in {summary['settle_seconds']} s; max pending {summary['max_pending']}; "
          f"redeliveries skipped by the last server instance {summary['last_server_duplicates_skipped']}")
    for w in summary["per_writer"]:
        for run in w["duplicate_runs"][:10]:
            print(f"  duplicate {w['key']} {run['first']}..{run['last']} written at {run['written_at']}s; "
                  f"fault before: {run['fault_before']}; after: {run['fault_after']}")
        if w["lost_confirmed"]:
            print(f"  LOST confirmed {w['key']}: first {w['lost_confirmed_first']}")
    for c in summary["crashes"]:
        print(f"  crash: {c[:300]}")
    print("RESULT:", "OK" if summary["ok"] else "FAILED")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, help="how long the writers run under faults")
    p.add_argument("--seconds", type=float, help="the same in seconds (added to --minutes)")
    p.add_argument("--writers", type=int, default=3)
    p.add_argument("--rate", type=float, default=5000, help="writes per second per writer (default 5000)")
    p.add_argument("--sync-every", type=int, default=100, help="a sync() every N writes (default 100)")
    p.add_argument("--sync-timeout", type=float, default=5.0)
    p.add_argument("--send-timeout", type=float, default=1.0, help="IncClient send_timeout")
    p.add_argument("--fault-every", type=float, nargs=2, default=[2.0, 8.0], metavar=("MIN", "MAX"),
                   help="seconds between faults, random in [MIN, MAX] (default 2 8)")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"comma-separated fault kinds (default all: {','.join(FAULT_KINDS)})")
    p.add_argument("--settle-timeout", type=float, default=300.0,
                   help="longest wait after the run for the proxy to drain (default 300 s)")
    p.add_argument("--seed", type=int, help="seed of the fault schedule (default: random, printed)")
    p.add_argument("--out", help="write the summary as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on failure)")
    # The writer processes run this file with these.
    p.add_argument("--as-writer", dest="writer", type=int, help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    p.add_argument("--started", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.writer is None:
        a.duration = (a.minutes or 0) * 60 + (a.seconds or 0)
        if a.duration <= 0:
            p.error("give --minutes and/or --seconds")
        a.faults = [f.strip() for f in a.faults.split(",") if f.strip()]
        for f in a.faults:
            if f not in FAULT_KINDS:
                p.error(f"unknown fault kind {f!r}; known: {', '.join(FAULT_KINDS)}")
        if not a.faults:
            p.error("--faults: at least one kind")
        if not 0 < a.fault_every[0] <= a.fault_every[1]:
            p.error("--fault-every: 0 < MIN <= MAX")
        if a.seed is None:
            a.seed = random.randrange(1 << 32)
    return a


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.writer is not None:
        return writer_main(args)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="syncs-soak-"))
    soak = Soak(args, tmp)
    summary: dict[str, Any] | None = None
    code = 2
    try:
        summary = soak.run()
        code = 0 if summary["ok"] else 1
    except HarnessError as e:
        print(f"soak: HARNESS FAILURE: {e}", file=sys.stderr)
        summary = {"ok": False, "harness_error": str(e), "harness_notes": soak.harness_notes,
                   "crashes": soak.crashes, "faults": len(soak.faults), "tmp": str(tmp)}
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        code = 130
    finally:
        soak.cleanup()
    if summary is not None:
        if "per_writer" in summary:
            print_summary(summary)
        if args.out:
            Path(args.out).write_text(json.dumps(summary, indent=2))
    if code == 0 and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"soak: work directory kept: {tmp}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
