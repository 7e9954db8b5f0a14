"""The Grafana dashboard (docs/grafana/syncs-dashboard.json) stays true to
the daemons: it parses, every panel has a PromQL query, and every metric
name a query uses is exported by a running proxy and sync_server after a
small workload, or, for the few counters only a fault increments, is
defined in the source the daemons export it from."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import struct
import urllib.request

from conftest import ROOT, wait_for

DASHBOARD = ROOT / "docs" / "grafana" / "syncs-dashboard.json"
NAME = re.compile(r"\bsyncs_[a-z0-9_]+")

# Counters whose series appears only after a fault the small workload does
# not cause, or only with a target kind it does not use (a Redis Cluster,
# replicas to WAIT for): the exporter shows a counter once it is
# incremented. Each one the dashboard uses is checked the other way: its
# name must be a string constant in the named file, the one the daemons
# record it with. Faults that raise them are tested elsewhere (e.g. the
# spool cap in test_faults.py, the cluster's in test_redis_groups.py and
# engine/tests/redis_cluster.rs).
FAULT_ONLY = {
    # a record the server cannot decode (the proxy validates frames first)
    "syncs_server_records_refused_total": "engine/src/stats.rs",
    # a target down: the server retries it
    "syncs_server_target_retries_total": "engine/src/stats.rs",
    # the spool at its --spool-max cap
    "syncs_proxy_spool_full_total": "engine/src/stats.rs",
    # a target's backlog past [server] target_backlog
    "syncs_server_target_spilled_records_total": "engine/src/stats.rs",
    # a redis-cluster target: MOVED / ASK (a failover, a slot migration)
    "syncs_server_redis_redirects_total": "engine/src/stats.rs",
    # a redis-cluster target: keys split by a slot migration
    "syncs_server_redis_tryagain_total": "engine/src/stats.rs",
    # a redis-cluster target: operations applied per node
    "syncs_server_redis_cluster_applied_total": "engine/src/stats.rs",
    # a redis-cluster target: slot map fetches
    "syncs_server_redis_topology_refreshes_total": "engine/src/stats.rs",
    # a master with fewer replicas than the target's `replicas`
    "syncs_server_redis_wait_shortfalls_total": "engine/src/stats.rs",
    # a redis-cluster failover that promoted a replica without acknowledged writes
    "syncs_server_redis_marker_regressions_total": "engine/src/stats.rs",
}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def graph_panels(dash: dict) -> list[dict]:
    """Every panel that is not a row, including panels inside collapsed rows."""
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def used_names(dash: dict) -> set[str]:
    return {n for p in graph_panels(dash) for t in p["targets"] for n in NAME.findall(t["expr"])}


def defined_in(path: str) -> set[str]:
    """Metric names written as string literals in a Rust source file."""
    return set(re.findall(r'"(syncs_[a-z0-9_]+)"', (ROOT / path).read_text()))


def exported(port: int) -> set[str]:
    """Metric names (with `_bucket`, `_sum`, `_count` for histograms) in /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in text.splitlines() if line and not line.startswith("#")}


def tls_hello(port: int):
    """A TLS ClientHello on the plaintext server: refused (auth failure
    `unexpected_tls`)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        try:
            ctx.wrap_socket(raw).close()
        except (ssl.SSLError, OSError):
            pass


def test_dashboard_is_importable_and_every_panel_queries():
    dash = load()
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert {v["name"] for v in dash["templating"]["list"]} == {"job", "instance"}
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Health", "Throughput", "Errors", "Latency", "Spool", "Targets", "Redis Cluster / Sentinel"]
    cells = set()
    for p in graph_panels(dash):
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"] and all(t.get("expr") for t in p["targets"]), p["title"]
        for t in p["targets"]:
            assert NAME.search(t["expr"]), (p["title"], t["expr"])
            assert 'job=~"$job", instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
    for name in used_names(dash) & FAULT_ONLY.keys():
        path = FAULT_ONLY[name]
        assert name in defined_in(path), f"{name} is not defined in {path}"


def test_every_metric_the_dashboard_uses_is_exported(syncs_factory, redis_target):
    import intc
    from intc_mg import mg_insert_one

    rules = f"""
target local_redis = redis "{redis_target.url}"
rule no_temp: redis key "tmp:*" -> drop
default redis -> local_redis
default mongo -> drop
"""
    s = syncs_factory(rules)
    redis_target.client(0).rpush("wrong", "x")
    ic = intc.IncClient()
    for i in range(5):
        ic.redis_one(s.socket, 6379, 0, ("set", f"k:{i}", "v"))  # accepted, routed, applied
    ic.redis_one(s.socket, 6379, 0, ("set", "tmp:1", "v"))  # dropped by a rule
    ic.redis_one(s.socket, 6379, 0, ("incr", "wrong"))  # WRONGTYPE: dead-lettered
    ic.mongo_exec(s.socket, "app", "users", mg_insert_one({"a": 1}))  # kind="mongo", dropped
    with socket.socket(socket.AF_UNIX) as c:  # a frame the proxy refuses (bad_resp)
        c.connect(s.socket)
        payload = b"6379,0\x01*2\r\n$3\r\nSET\r\n$99\r\nshort\r\n"
        c.sendall(struct.pack("<I", len(payload)) + payload)
    s.server.send_signal(signal.SIGHUP)  # a rules reload
    tls_hello(s.server_port)  # an auth failure
    wait_for(lambda: s.proxy_metric("syncs_proxy_records_acked_total") == 8, what="8 records acknowledged")
    wait_for(lambda: s.server_metric('syncs_server_rules_reloads_total{outcome="ok"}') == 1,
             what="the SIGHUP reload")
    wait_for(lambda: s.server_metric('syncs_server_auth_failures_total{reason="unexpected_tls"}') == 1,
             what="the TLS hello refused")
    # The per-target gauges are refreshed once a second.
    wait_for(lambda: "syncs_server_target_backlog_bytes" in exported(s.server_metrics),
             what="the per-target gauges")

    have = exported(s.proxy_metrics) | exported(s.server_metrics)
    used = used_names(load())
    # Every name a query uses, checked in /metrics of the running daemons
    # (histograms as the `<name>_bucket` the queries name), except the
    # FAULT_ONLY counters, checked against their source above.
    missing = sorted(used - have - FAULT_ONLY.keys())
    assert not missing, f"dashboard queries metrics the daemons do not export: {missing}"
    # A FAULT_ONLY name the workload did produce is exported without a
    # fault now: it belongs in the /metrics check, so take it off the list.
    assert not FAULT_ONLY.keys() & have, f"exported without a fault: {sorted(FAULT_ONLY.keys() & have)}"
    assert used >= {"syncs_proxy_oldest_pending_seconds", "syncs_proxy_replication_latency_seconds_bucket",
                    "syncs_server_batch_duration_seconds_bucket", "syncs_server_apply_duration_seconds_bucket"}
