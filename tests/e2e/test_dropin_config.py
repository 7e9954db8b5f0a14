"""An rmt.ini of the original system: run as it is, and migrated (issue 13).

The original format names a route's source and its destination in one URL:
`host = redis://HOST:PORT/DB?pwd=PW` routes the client frames that carry
(PORT, DB) to HOST, at PORT and DB, with AUTH PW; `map = P/D` sends them to
port P, db D of that host instead. The seed's example writes to (6379, 1)
and (6379, 2), and the test's Redis listens on a random port T. So the file
says `host = redis://127.0.0.1:6379/1?pwd=...` (the port and db the frames
carry) and `map = T/3`: frames for (6379, 1) land in the test Redis, db 3
(and (6379, 2) in db 4), which is what `map` is for ("where frames for
(6379, 1) really go"). A Redis at 6379 is neither needed nor touched.

Every test runs twice: `sync_server rmt.ini` on the original file, and
`sync_server migrated/rmt.ini` on what `syncs-check --migrate` wrote from it,
with the same assertions: the two must behave alike.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, Proc, Redis, Syncs, port_open, wait_for

SEED_PY = ROOT / "bindings/python/tests/seed_example.py"
# A password the original format carries as written (`?pwd=` to the end of
# the line) and syncs must percent-encode into the target's URL.
PASSWORD = "p@ss w/rd;#1"
UNROUTED = "no [redis*] section of the original rmt.ini names this port and db"
NOT_ALLOWED = 'syncs_server_auth_failures_total{reason="not_allowed"}'


def original_ini(listen_port: int, redis_port: int, mongo_url: str) -> str:
    return (
        "[listen]\n"
        f"port = {listen_port}\n"
        "[wl]\n"
        "# allowed proxy addresses, comma separated: only this machine's proxy\n"
        "ip = 127.0.0.1,192.0.2.7\n"
        "[mongo]\n"
        f"host = {mongo_url.rstrip('/')}\n"
        "[redis0]\n"
        f"host = redis://127.0.0.1:6379/1?pwd={PASSWORD}\n"
        "; where frames for (6379, 1) really go: the test's Redis, db 3\n"
        f"map = {redis_port}/3\n"
        "[redis1]\n"
        f"host = redis://127.0.0.1:6379/2?pwd={PASSWORD}\n"
        f"map = {redis_port}/4\n"
    )


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "syncs-check"), *args], capture_output=True, text=True, timeout=60)


class DropinSyncs(Syncs):
    """Syncs with the server started on a given rmt.ini, metrics by flag
    (the original format has no place for them)."""

    def start_server(self):
        self.server = Proc(
            [str(BIN / "sync_server"), "--metrics", f"127.0.0.1:{self.server_metrics}", str(self.config)],
            self.tmp / "server.log",
        )
        wait_for(lambda: port_open(self.server_port) or not self.server.alive(), what="sync_server")
        assert self.server.alive(), self.server.text()


@pytest.fixture
def redis_auth(tmp_path):
    r = Redis(tmp_path, extra_args=["--requirepass", PASSWORD])
    yield r
    r.stop()


@pytest.fixture(params=["original", "migrated"])
def dropin(request, tmp_path, redis_auth, mongo_target):
    """A proxy and a server on an original rmt.ini, as written or migrated."""
    s = DropinSyncs(tmp_path, rules="", start_server=False)
    s.variant = request.param
    request.node._syncs = [s]
    original = tmp_path / "rmt.ini"
    original.write_text(original_ini(s.server_port, redis_auth.port, mongo_target.url))
    if request.param == "original":
        out = check(str(original))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "syncs-check --migrate" in out.stdout and "6 test(s) passed" in out.stdout, out.stdout
        s.config = original
    else:
        migrated = tmp_path / "migrated"
        out = check("--migrate", str(original), "--out", str(migrated))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "6 test(s) passed, 0 failed" in out.stdout, out.stdout
        # The written files pass on their own, with the generated tests.
        again = check(str(migrated / "rules"))
        assert again.returncode == 0 and "6 test(s) passed" in again.stdout, again.stdout
        assert "allow = 127.0.0.1, 192.0.2.7" in (migrated / "rmt.ini").read_text()
        s.config = migrated / "rmt.ini"
        s.dead_letter = migrated / "dead-letter.jsonl"
    s.start_server()
    yield s
    s.stop()


def target_db(redis: Redis, db: int):
    """A client of the test's Redis, which requires the password."""
    return redis._redis.Redis(host="127.0.0.1", port=redis.port, db=db, password=PASSWORD)


def run_seed_example(socket_path: str):
    """The seed's Python example as shipped, on this test's proxy socket."""
    code = SEED_PY.read_text().replace("'/tmp/us1'", repr(socket_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_seed_example_lands_where_map_says(dropin, redis_auth, mongo_target):
    coll = mongo_target.client()["mongo_db_name"]["mongo_col_name"]
    coll.insert_many([{"key": "value", "n": 1}, {"key": "value", "n": 2}, {"key": "other"}])
    run_seed_example(dropin.socket)
    assert wait_for(lambda: target_db(redis_auth, 3).get("a"), what="(6379, 1) in db 3 (map)") == b"bcd0"
    assert wait_for(lambda: target_db(redis_auth, 4).get("awesome"), what="(6379, 2) in db 4 (map)").decode() == "中文你好0"
    assert target_db(redis_auth, 4).get("cool") == b"hello0"
    # Only where map says: not at the URL's own dbs.
    assert target_db(redis_auth, 1).dbsize() == 0 and target_db(redis_auth, 2).dbsize() == 0
    # [mongo]: same db and collection.
    wait_for(lambda: coll.count_documents({"key": "value"}) == 0, what="delete_many applied")
    assert coll.count_documents({"key": "other"}) == 1
    assert dropin.dead_letters() == []
    log = dropin.server.text()
    if dropin.variant == "original":
        assert "is in the original system's format" in log and "syncs-check --migrate" in log, log
    assert "WITHOUT TLS" in log and "127.0.0.1, 192.0.2.7" in log, log


def test_unnamed_port_and_db_are_dead_lettered_with_the_reason(dropin, redis_auth):
    import intc

    ic = intc.IncClient()
    ic.redis_one(dropin.socket, 6379, 5, ("set", "lost", "1"))
    ic.redis_one(dropin.socket, 6380, 1, ("set", "lost", "2"))
    ic.redis_one(dropin.socket, 6379, 1, ("set", "kept", "3"))
    letters = wait_for(lambda: len(dropin.dead_letters()) >= 2 and dropin.dead_letters(), what="two dead letters")
    assert [(d["op"]["port"], d["op"]["db"]) for d in letters] == [(6379, 5), (6380, 1)]
    for d in letters:
        assert d["reason"].startswith(UNROUTED), d
        assert d["target"] is None
    db3 = target_db(redis_auth, 3)
    # Records are routed in order: once the one after them is applied,
    # every dead letter before it is written.
    assert wait_for(lambda: db3.get("kept"), what="the routed frame after them") == b"3"
    assert len(dropin.dead_letters()) == 2


def test_a_peer_not_on_the_allowlist_is_refused_and_counted(dropin):
    # This machine's proxy (127.0.0.1) is on the list and connected.
    wait_for(lambda: dropin.proxy_metric("syncs_proxy_links_up") == 1, what="the proxy's link up")
    assert dropin.server_metric(NOT_ALLOWED) == 0
    # 127.0.0.2 is this machine too, but not on the list.
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", dropin.server_port))
        try:
            s.sendall(b"\x00" * 16)
            got = s.recv(64)
        except ConnectionResetError:
            got = b""
        assert got == b"", "closed without an answer"
    wait_for(lambda: dropin.server_metric(NOT_ALLOWED) == 1, what="the refusal counted")
    assert "proxy refused: 127.0.0.2 is not in `allow`" in dropin.server.text()
    # The allowed proxy goes on.
    assert dropin.proxy_metric("syncs_proxy_links_up") == 1


def test_allow_with_a_syncs_config(tmp_path, syncs_factory):
    """`allow` is a general server setting: here on a loopback listener,
    without TLS, next to a token."""
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    s = syncs_factory(
        'target f = file "%s"\ndefault redis -> f\ndefault mongo -> f\n' % (tmp_path / "out.jsonl"),
        server_ini=f"allow = 127.0.0.1/32, ::1\n[auth]\ntoken_file = {token}\n",
        proxy_args=["--token-file", str(token)],
    )
    wait_for(lambda: s.proxy_metric("syncs_proxy_links_up") == 1, what="the allowed proxy's link up")
    with socket.socket() as c:
        c.bind(("127.0.0.3", 0))
        c.connect(("127.0.0.1", s.server_port))
        c.settimeout(5)
        try:
            assert c.recv(64) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: s.server_metric(NOT_ALLOWED) == 1, what="the refusal counted")
    # No auth failure of another kind: it was refused before the token.
    metrics = Syncs._metrics(s.server_metrics)
    others = {k: v for k, v in metrics.items() if k.startswith("syncs_server_auth_failures_total") and k != NOT_ALLOWED}
    assert all(v == 0 for v in others.values()), others


def test_syncs_check_on_bad_original_files_names_every_error(tmp_path):
    bad = tmp_path / "rmt.ini"
    bad.write_text("[listen]\nport = 0\n[wl]\nip = 192.168.1.300\n[redis0]\nhost = redis://h/1\n")
    out = check(str(bad))
    assert out.returncode == 1
    for want in ("[listen] port = 0", "`192.168.1.300` is not an IP address", "[redis0] host = redis://h/1: no :PORT"):
        assert want in out.stdout, out.stdout
    server = subprocess.run([str(BIN / "sync_server"), str(bad)], capture_output=True, text=True, timeout=30)
    assert server.returncode != 0 and "[listen] port = 0" in server.stderr, server.stderr
