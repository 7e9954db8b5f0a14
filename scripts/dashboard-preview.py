#!/usr/bin/env python3
"""Draw docs/img/dashboard.png: the Grafana dashboard's own queries over real data.

Grafana is not needed. The script starts redis-server, sync_server and
proxy (with tests/conftest.py's classes, binaries from target/release) and
a Prometheus scraping both daemons every second; runs a varied workload
through the Python library `intc` (steady writes, keys dropped by a rule,
WRONGTYPE dead letters, bad frames, rules reloads, TLS handshakes the
plaintext server refuses, the server stopped for 10 s while a burst fills
the spool, the target Redis restarted); then, for every panel of
docs/grafana/syncs-dashboard.json, evaluates the panel's PromQL through Prometheus' /api/v1/query_range (`$__rate_interval` = 5s,
`$job` and `$instance` = `.*`, the dashboard's "All") and draws the panels
in the dashboard's grid layout, in the colours of Grafana's dark theme.
The result is a rendering of the dashboard's queries, not a Grafana
screenshot.

Needs: target/release/{proxy,sync_server} (cargo build --release),
redis-server, prometheus (Debian: apt-get install prometheus), and the
Python packages intc (pip install ./bindings/python), redis, pytest
(tests/conftest.py imports it) and matplotlib. Takes about 100 s.

    python3 scripts/dashboard-preview.py [--out docs/img/dashboard.png] [--seconds 80]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Proc, Redis, Syncs, free_port, wait_for  # noqa: E402

DASHBOARD = ROOT / "docs" / "grafana" / "syncs-dashboard.json"
RATE_INTERVAL = "5s"
VARIABLES = {"$__rate_interval": RATE_INTERVAL, "$job": ".*", "$instance": ".*"}

# Grafana 10 dark theme.
CANVAS, PANEL, BORDER, TEXT, WEAK, GRID = "#111217", "#181b1f", "#2a2d33", "#ccccdc", "#8e8e9a", "#25282d"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0",
           "#37872D", "#FADE2A"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "yellow": "#F2CC0C", "blue": "#5794F2", "orange": "#FF780A"}


# --- the daemons, Prometheus and the workload ------------------------------

def rules(redis_url: str, extra: str = "") -> str:
    return (f'target local_redis = redis "{redis_url}"\n'
            'rule no_temp: redis key "tmp:*" -> drop\n'
            'rule users: redis key "user:*" -> local_redis\n'
            f"{extra}\n"
            "default redis -> local_redis\n"
            "default mongo -> drop\n")


def edit_rules(path: Path, text: str):
    """Writes then renames, as editors do, so the watcher sees one whole file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def start_prometheus(tmp: Path, targets: dict[str, int]) -> tuple[Proc, int]:
    """A Prometheus scraping each `job: port` every second; returns it and its port."""
    exe = shutil.which("prometheus")
    if not exe:
        sys.exit("prometheus is not installed (Debian: apt-get install prometheus)")
    jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
                   for job, port in targets.items())
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      f"  evaluation_interval: 1s\nscrape_configs:\n{jobs}")
    port = free_port()
    proc = Proc([exe, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], tmp / "prometheus.log")
    wait_for(lambda: ready(port) or not proc.alive(), timeout=30, what="prometheus")
    if not proc.alive():
        sys.exit(proc.text())
    wait_for(lambda: len(instant(port, "up == 1")) == len(targets), timeout=15, what="both daemons scraped")
    return proc, port


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def api(port: int, path: str, **params) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{params.get('query')}: {body}")
    return body["data"]["result"]


def instant(port: int, query: str) -> list[dict]:
    return api(port, "query", query=query)


def raw_frames(path: str, frames: list[bytes]):
    """Sends length-prefixed frames straight to the proxy's socket."""
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(path)
        for f in frames:
            c.sendall(f)


BAD_RESP = b"6379,0\x01*2\r\n$3\r\nSET\r\n$99\r\nshort\r\n"


def bad_frames(s: Syncs, n: int):
    """`n` Redis frames whose payload is not RESP (reason bad_resp)."""
    raw_frames(s.socket, [struct.pack("<I", len(BAD_RESP)) + BAD_RESP] * n)


def truncated_frames(s: Syncs, n: int):
    """`n` connections that close in the middle of a frame (reason truncated)."""
    for _ in range(n):
        raw_frames(s.socket, [struct.pack("<I", 100) + b"6379,0\x01*1"])


def tls_hellos(s: Syncs, n: int):
    """`n` TLS handshakes with the plaintext server: refused (auth failure
    `unexpected_tls`), as a proxy configured for TLS would be."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", s.server_port), timeout=2) as raw:
            try:
                ctx.wrap_socket(raw).close()
            except (ssl.SSLError, OSError):
                pass


class Workload:
    """Steady writes with scheduled events; every call is bounded in time."""

    def __init__(self, s: Syncs, redis: Redis):
        import intc

        self.s, self.redis, self.intc = s, redis, intc
        self.ic = intc.IncClient(send_timeout=0.5)
        self.n = 0
        self.errors = 0  # writes the library reported as failed

    def send(self, cmd: tuple):
        try:
            self.ic.redis_one(self.s.socket, 6379, 0, cmd)
        except self.intc.IntcError:
            self.errors += 1
            self.ic = self.intc.IncClient(send_timeout=0.5)

    def steady(self, elapsed: float, dt: float):
        """Writes at a rate that swings between 20 and 80 a second."""
        from intc_mg import mg_insert_one

        rate = 50 + 30 * math.sin(elapsed / 9)
        for _ in range(max(1, round(rate * dt))):
            self.n += 1
            kind = self.n % 10
            if kind < 5:
                self.send(("set", f"user:{self.n}", "v"))
            elif kind < 7:
                self.send(("set", f"session:{self.n}", "v"))
            elif kind < 9:
                self.send(("set", f"tmp:{self.n}", "v"))
            else:
                try:
                    self.ic.mongo_exec(self.s.socket, "app", "events", mg_insert_one({"n": self.n}))
                except self.intc.IntcError:
                    self.errors += 1

    def wrongtype(self, n: int):
        for _ in range(n):
            self.send(("incr", "wrong"))  # `wrong` is a list on the target: dead-lettered

    def burst(self, n: int, size: int, limit: float = 3.0):
        """Up to `n` large writes while the server is down, to reach the
        spool's cap; stops after `limit` seconds or once the proxy refused
        some (the library does not see refusals: the proxy counts them)."""
        value = "x" * size
        deadline = time.monotonic() + limit
        for i in range(n):
            if time.monotonic() > deadline:
                break
            if i % 50 == 0 and self.s.proxy_metric('syncs_proxy_frames_refused_total{reason="spool_full"}') >= 20:
                break
            self.send(("rpush", "blob", f"{i}:{value}"))

    def stop_server(self):
        self.s.server.stop()

    def start_server(self):
        self.s.start_server()

    def stop_redis(self):
        self.redis.proc.stop()

    def start_redis(self):
        self.redis.proc.start()
        wait_for(self.redis.ping, what="redis-server back")


def run_workload(s: Syncs, redis: Redis, seconds: float):
    """Steady writes for `seconds`, with faults at fixed fractions of the run."""
    w = Workload(s, redis)
    edit = lambda extra: lambda: edit_rules(s.rules_path, rules(redis.url, extra))  # noqa: E731
    events = [
        (0.04, "first bad frame", lambda: bad_frames(s, 1)),
        (0.08, "bad frames", lambda: bad_frames(s, 4)),
        (0.12, "server stopped", w.stop_server),
        (0.16, "burst to the spool cap", lambda: w.burst(500, 1500)),
        (0.245, "server started", w.start_server),
        (0.30, "first dead letter", lambda: w.wrongtype(1)),
        (0.34, "rules edit: sessions to db 1", edit('rule sessions: redis key "session:*" -> local_redis db 1')),
        (0.40, "bad rules edit (rejected)", edit('rule sessions: redis key "session:*" -> local_redis db')),
        (0.44, "dead letters", lambda: w.wrongtype(2)),
        (0.46, "rules edit fixed", edit('rule sessions: redis key "session:*" -> local_redis db 2')),
        (0.50, "first TLS hello on the plaintext server", lambda: tls_hellos(s, 1)),
        (0.52, "truncated frames", lambda: truncated_frames(s, 2)),
        (0.56, "TLS hellos", lambda: tls_hellos(s, 3)),
        (0.60, "dead letters", lambda: w.wrongtype(3)),
        (0.66, "target Redis stopped", w.stop_redis),
        (0.71, "target Redis started", w.start_redis),
        (0.77, "truncated and bad frames", lambda: (truncated_frames(s, 2), bad_frames(s, 2))),
        (0.80, "TLS hellos", lambda: tls_hellos(s, 2)),
        (0.84, "dead letter", lambda: w.wrongtype(1)),
    ]
    start = last = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        elapsed = now - start
        while events and elapsed >= events[0][0] * seconds:
            _, what, action = events.pop(0)
            print(f"  {elapsed:5.1f}s  {what}", flush=True)
            action()
        w.steady(elapsed, now - last)
        last = now
        time.sleep(0.05)
    print(f"  {seconds:5.1f}s  done: {w.n} steady writes, {w.errors} failed; waiting for the drain", flush=True)
    try:
        wait_for(lambda: s.proxy_metric("syncs_proxy_pending_records") == 0, timeout=60, what="the drain")
    except AssertionError:
        print("\n".join(s.logs().splitlines()[-40:]), file=sys.stderr)
        raise


# --- the dashboard's queries ------------------------------------------------

def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def legend(fmt: str, labels: dict) -> str:
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def evaluate(port: int, panel: dict, start: float, end: float) -> list[tuple[str, list, list]]:
    """Every series the panel's queries return: (legend, times, values)."""
    series = []
    for t in panel["targets"]:
        for r in api(port, "query_range", query=substitute(t["expr"]), start=start, end=end, step=1):
            xs = [datetime.fromtimestamp(float(ts)) for ts, _ in r["values"]]
            ys = [float(v) for _, v in r["values"]]
            series.append((legend(t.get("legendFormat", ""), r["metric"]), xs, ys))
    return series


# --- drawing ---------------------------------------------------------------

def short(v: float) -> str:
    a = abs(v)
    for div, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}" if a else "0"


def fmt_unit(unit: str, v: float) -> str:
    """Axis labels in the style of Grafana's units."""
    a = abs(v)
    if unit == "s":
        if a == 0:
            return "0 s"
        for div, suffix in ((60, " min"), (1, " s"), (1e-3, " ms"), (1e-6, " µs")):
            if a >= div:
                return f"{v / div:.3g}{suffix}"
        return f"{v * 1e9:.3g} ns"
    if unit == "bytes":
        for div, suffix in ((1 << 30, " GiB"), (1 << 20, " MiB"), (1 << 10, " KiB")):
            if a >= div:
                return f"{v / div:.3g}{suffix}"
        return f"{v:.0f} B"
    if unit == "ops":
        return short(v) + " ops/s"
    if unit == "cps":
        return short(v) + " c/s"
    return short(v)


def colours(panel: dict, names: list[str]) -> list[str]:
    fixed = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        if o["matcher"]["id"] == "byName":
            for prop in o["properties"]:
                if prop["id"] == "color":
                    fixed[o["matcher"]["options"]] = NAMED.get(prop["value"]["fixedColor"],
                                                               prop["value"]["fixedColor"])
    return [fixed.get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]


def time_ticks(seconds: float, width: float):
    """Ticks at round seconds, as many as the panel's width allows."""
    from matplotlib.dates import SecondLocator

    fit = max(2, int(width // 90))
    every = next((n for n in (5, 10, 15, 20, 30, 60) if seconds / n <= fit), 120)
    if every >= 60:
        from matplotlib.dates import MinuteLocator

        return MinuteLocator(byminute=range(0, 60, every // 60))
    return SecondLocator(bysecond=range(0, 60, every))


def value_ticks(unit: str, top: float, integer: bool):
    """About four ticks; round in KiB/MiB for bytes, as Grafana does."""
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    if unit == "bytes" and top >= 1024:
        base = 1 << (10 * min(3, int(math.log(top, 1024))))
        raw = top / 4 / base
        nice = next((n for n in (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500) if n >= raw), 1000)
        return MultipleLocator(nice * base)
    return MaxNLocator(4, integer=integer, steps=[1, 2, 2.5, 5, 10])


class Canvas:
    """The figure, with Grafana grid units (24 columns, rows of 30 px) mapped to pixels."""

    COL, ROW, GAP, TOP = 80, 30, 8, 78

    def __init__(self, grid_rows: int):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.w = 24 * self.COL
        self.h = self.TOP + grid_rows * self.ROW + self.GAP
        self.fig = plt.figure(figsize=(self.w / 100, self.h / 100), dpi=100, facecolor=CANVAS)

    def box(self, g: dict) -> tuple[float, float, float, float]:
        """(left, bottom, width, height) in pixels from the bottom-left of a gridPos."""
        col = (self.w - self.GAP) / 24
        left = self.GAP + g["x"] * col
        top = self.TOP + g["y"] * self.ROW
        width = g["w"] * col - self.GAP
        height = g["h"] * self.ROW - self.GAP
        return left, self.h - top - height, width, height

    def fx(self, px: float) -> float:
        return px / self.w

    def fy(self, px: float) -> float:
        return px / self.h

    def text(self, x: float, y: float, s: str, **kw):
        self.fig.text(self.fx(x), self.fy(y), s, **kw)

    def header(self, dash: dict, start: float, end: float):
        t = self.h - 30
        self.text(self.GAP + 4, t, f"Dashboards / {dash['title']}", color=TEXT, fontsize=15, va="center")
        when = (f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M:%S} to "
                f"{datetime.fromtimestamp(end):%H:%M:%S}")
        self.text(self.w - self.GAP - 4, t, when, color=TEXT, fontsize=10, va="center", ha="right")
        pills = "   ".join(f"{v['label']}  [ All ]" for v in dash["templating"]["list"])
        self.text(self.GAP + 4, t - 28, pills, color=TEXT, fontsize=10, va="center",
                  bbox=dict(facecolor=PANEL, edgecolor=BORDER, boxstyle="round,pad=0.4"))
        self.text(self.w - self.GAP - 4, t - 28,
                  "Rendered by scripts/dashboard-preview.py: the dashboard's own PromQL, evaluated by "
                  "Prometheus over a real workload, drawn with matplotlib (not a Grafana screenshot)",
                  color=WEAK, fontsize=9, va="center", ha="right", style="italic")

    def row(self, panel: dict):
        left, bottom, _, height = self.box(panel["gridPos"])
        self.text(left, bottom + height / 2 + 4, "⌄ " + panel["title"], color=TEXT, fontsize=12,
                  weight="bold", va="center")

    def panel(self, panel: dict, series: list[tuple[str, list, list]], start: float, end: float):
        from matplotlib.dates import DateFormatter, date2num
        from matplotlib.patches import FancyBboxPatch
        from matplotlib.ticker import FuncFormatter

        left, bottom, width, height = self.box(panel["gridPos"])
        self.fig.patches.append(FancyBboxPatch(
            (self.fx(left), self.fy(bottom)), self.fx(width), self.fy(height), transform=self.fig.transFigure,
            boxstyle="round,pad=0,rounding_size=0.002", facecolor=PANEL, edgecolor=BORDER, linewidth=1,
            zorder=-1))
        self.text(left + 10, bottom + height - 16, panel["title"], color=TEXT, fontsize=10.5,
                  weight="bold", va="center")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit, custom = defaults.get("unit", "short"), defaults.get("custom", {})
        names = [n for n, _, _ in series]
        cols = colours(panel, names)
        legend_h = self.legend(left + 10, bottom + 8, width - 20, names, cols)
        plot_left, plot_bottom = left + 72, bottom + 8 + legend_h + 22
        ax = self.fig.add_axes((self.fx(plot_left), self.fy(plot_bottom),
                                self.fx(left + width - 12 - plot_left),
                                self.fy(bottom + height - 32 - plot_bottom)))
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=WEAK, labelsize=8, length=0)
        ax.grid(True, color=GRID, linewidth=0.8)
        ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
        clock = DateFormatter("%H:%M:%S")
        # No time label under the bottom value label or past the right edge.
        lo, hi = (date2num(datetime.fromtimestamp(start + (end - start) * f)) for f in (0.07, 0.96))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, i: clock(v, i) if lo < v < hi else ""))
        ax.xaxis.set_major_locator(time_ticks(end - start, width))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_unit(unit, v)))
        step = "steps-post" if custom.get("lineInterpolation") == "stepAfter" else "default"
        alpha = custom.get("fillOpacity", 0) / 100
        top = 0.0
        for (_, xs, ys), colour in zip(series, cols):
            finite = [y for y in ys if math.isfinite(y)]
            top = max([top, *finite])
            ax.plot(xs, ys, color=colour, linewidth=1.3, drawstyle=step)
            if alpha:
                ax.fill_between(xs, ys, 0, color=colour, alpha=alpha, linewidth=0,
                                step="post" if step == "steps-post" else None)
        ax.set_ylim(defaults.get("min", 0), top * 1.1 if top > 0 else 1)
        ax.yaxis.set_major_locator(value_ticks(unit, top, defaults.get("decimals") == 0))
        if not series:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, color=WEAK, fontsize=11,
                    ha="center", va="center")

    def legend(self, x: float, y: float, width: float, names: list[str], cols: list[str]) -> float:
        """Grafana's list legend under the graph; returns its height in pixels."""
        if not names:
            return 0
        line, cx, lines = 15, x, 1
        renderer = self.fig.canvas.get_renderer()
        placed = []
        for name in names:
            t = self.fig.text(0, 0, name, fontsize=8.5)
            w = t.get_window_extent(renderer).width + 26
            t.remove()
            if cx > x and cx + w > x + width:
                cx, lines = x, lines + 1
            placed.append((cx, lines, name))
            cx += w + 6
        for (cx, n, name), colour in zip(placed, cols):
            ly = y + (lines - n) * line + 5
            self.fig.add_artist(self.plt.Line2D([self.fx(cx), self.fx(cx + 14)], [self.fy(ly), self.fy(ly)],
                                                color=colour, linewidth=3, transform=self.fig.transFigure))
            self.text(cx + 20, ly, name, color=TEXT, fontsize=8.5, va="center")
        return lines * line

    def save(self, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(out, facecolor=CANVAS, dpi=100)


def draw(dash: dict, port: int, start: float, end: float, out: Path):
    everything = panels(dash)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in everything)
    c = Canvas(rows)
    c.header(dash, start, end)
    for p in everything:
        if p["type"] == "row":
            c.row(p)
        else:
            series = evaluate(port, p, start, end)
            print(f"  {p['title']}: {len(series)} series", flush=True)
            c.panel(p, series, start, end)
    c.save(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    ap.add_argument("--seconds", type=float, default=80, help="length of the workload")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = ap.parse_args()
    dash = json.loads(DASHBOARD.read_text())
    with tempfile.TemporaryDirectory(prefix="syncs-dashboard-") as d:
        tmp = Path(tempfile.mkdtemp(prefix="syncs-dashboard-")) if args.keep else Path(d)
        print(f"logs in {tmp}", flush=True)
        redis = Redis(tmp, persistent=True)
        s = prom = None
        try:
            s = Syncs(tmp, rules(redis.url), proxy_args=[
                "--spool-max", "512KiB", "--segment-size", "64KiB", "--when-full", "refuse"])
            redis.client(0).rpush("wrong", "x")
            prom, port = start_prometheus(tmp, {"syncs-proxy": s.proxy_metrics, "syncs-server": s.server_metrics})
            time.sleep(3)
            start = time.time()
            print(f"workload for {args.seconds:.0f} s (prometheus on 127.0.0.1:{port})", flush=True)
            run_workload(s, redis, args.seconds)
            time.sleep(4)  # a few more scrapes after the drain
            end = time.time()
            print("evaluating the dashboard's queries", flush=True)
            draw(dash, port, start - 3, end, args.out)
            print(f"wrote {args.out} (window {start - 3:.0f} to {end:.0f})")
        finally:
            for p in (prom, s, redis):
                if p is not None:
                    p.stop()


if __name__ == "__main__":
    main()
