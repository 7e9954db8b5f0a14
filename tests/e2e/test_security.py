"""Security between proxy and server: TLS, client certificates, the token,
the plaintext rule, the socket's group and mode, connection limits.

Certificates are made here with the `openssl` CLI, in a throwaway PKI: a
CA that signs the server's and the proxy's certificates, and a second,
unrelated CA with its own pair, for the refusals. Every refusal test checks
the server's counter and that nothing reached the real Redis target.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REQUIRE_ALL, default_rules, free_port, wait_for

AUTH = "syncs_server_auth_failures_total"


def log(proc) -> str:
    """A daemon's log without its colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.text())


def openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d: Path, ca: str, name: str, san: str, usage: str):
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        if REQUIRE_ALL:
            raise AssertionError("openssl is required (SYNCS_REQUIRE_ALL=1)")
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        make_ca(d, ca)
        prefix = "" if ca == "ca" else "other-"
        make_leaf(d, ca, f"{prefix}server", "DNS:localhost,IP:127.0.0.1", "serverAuth")
        make_leaf(d, ca, f"{prefix}proxy", "DNS:proxy", "clientAuth")
    (d / "token").write_text("3f1c2a9be0d84e7fb6a15c0d9e2f4a71\n")
    (d / "wrong-token").write_text("00000000000000000000000000000000\n")
    for f in ("token", "wrong-token"):
        (d / f).chmod(0o600)
    return d


def server_tls(pki: Path, client_ca: bool = False, token: bool = False) -> str:
    text = f"[tls]\ncert = {pki}/server.pem\nkey = {pki}/server.key\n"
    if client_ca:
        text += f"client_ca = {pki}/ca.pem\n"
    if token:
        text += f"[auth]\ntoken_file = {pki}/token\n"
    return text


# A refused proxy's record is never acknowledged: at teardown the proxy
# would wait its whole drain timeout (10 s) for it.
NO_DRAIN = ["--drain-timeout", "1s"]


def auth_failures(s, reason: str) -> float:
    return s.server_metric(f'{AUTH}{{reason="{reason}"}}')


def write_one(s, key: str = "k"):
    import intc

    intc.IncClient().redis_one(s.socket, 6379, 0, ("set", key, "v"))


def assert_refused(s, redis_target, reason: str, proxy_says: str):
    """The server counted `reason`, the proxy logged why, and nothing was
    read or applied."""
    wait_for(lambda: auth_failures(s, reason) >= 1, what=f"auth failure {reason}")
    wait_for(lambda: proxy_says in log(s.proxy), what=f"proxy log saying {proxy_says!r}")
    assert s.server_metric("syncs_server_records_received_total") == 0
    assert s.proxy_metric("syncs_proxy_links_up") == 0
    assert redis_target.client().dbsize() == 0
    assert s.server.alive() and s.proxy.alive()
    assert "proxy refused" in log(s.server) and "peer=127.0.0.1:" in log(s.server)


def test_mutual_tls_and_token_replicate(syncs_factory, redis_target, pki):
    s = syncs_factory(
        default_rules(redis_target.url, None),
        server_ini=server_tls(pki, client_ca=True, token=True),
        proxy_args=["--tls-ca", f"{pki}/ca.pem", "--tls-cert", f"{pki}/proxy.pem",
                    "--tls-key", f"{pki}/proxy.key", "--token-file", f"{pki}/token"],
    )
    write_one(s, "over-tls")
    wait_for(lambda: redis_target.client().get("over-tls") == b"v", what="the write at the target")
    assert s.proxy_metric("syncs_proxy_links_up") == 1
    metrics = s._metrics(s.server_metrics)
    assert not [k for k in metrics if k.startswith(AUTH)], metrics
    assert 'security="tls+token"' in log(s.server)


def test_tls_to_an_ip_destination_checks_the_ip_in_the_certificate(syncs_factory, redis_target, pki):
    # -d 127.0.0.1:<port>: the certificate must name IP 127.0.0.1, which it
    # does; --tls-server-name localhost checks the DNS name instead.
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_tls(pki),
                      proxy_args=["--tls-ca", f"{pki}/ca.pem", "--tls-server-name", "localhost"])
    write_one(s, "by-name")
    wait_for(lambda: redis_target.client().get("by-name") == b"v", what="the write at the target")


def test_wrong_server_certificate_is_refused_by_the_proxy(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_tls(pki),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/other-ca.pem"])
    write_one(s)
    assert_refused(s, redis_target, "tls", "UnknownIssuer")


def test_server_name_mismatch_is_refused(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_tls(pki),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/ca.pem", "--tls-server-name", "other.example"])
    write_one(s)
    assert_refused(s, redis_target, "tls", 'certificate not valid for name "other.example"')


def test_missing_client_certificate_is_refused(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None),
                      server_ini=server_tls(pki, client_ca=True),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/ca.pem"])
    write_one(s)
    assert_refused(s, redis_target, "no_client_cert", "CertificateRequired")


def test_client_certificate_from_another_ca_is_refused(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None),
                      server_ini=server_tls(pki, client_ca=True),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/ca.pem", "--tls-cert", f"{pki}/other-proxy.pem",
                                  "--tls-key", f"{pki}/other-proxy.key"])
    write_one(s)
    assert_refused(s, redis_target, "bad_client_cert", "UnknownCA")


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "loopback-plaintext"])
def test_wrong_token_is_refused(syncs_factory, redis_target, pki, tls):
    server_ini = server_tls(pki, token=True) if tls else f"[auth]\ntoken_file = {pki}/token\n"
    args = ["--tls-ca", f"{pki}/ca.pem"] if tls else []
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_ini,
                      proxy_args=[*NO_DRAIN, *args, "--token-file", f"{pki}/wrong-token"])
    write_one(s)
    assert_refused(s, redis_target, "bad_token", "server refused (code 6)")
    assert "0000000000" not in log(s.server) + log(s.proxy)
    assert "3f1c2a9b" not in log(s.server) + log(s.proxy)


def test_missing_token_is_refused(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_tls(pki, token=True),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/ca.pem"])
    write_one(s)
    assert_refused(s, redis_target, "no_token", "server refused (code 5)")


def test_plaintext_proxy_to_a_tls_server_gets_a_clear_error(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None), server_ini=server_tls(pki), proxy_args=NO_DRAIN)
    write_one(s)
    started = time.monotonic()
    assert_refused(s, redis_target, "plaintext", "server refused (code 7)")
    assert time.monotonic() - started < 8, "the refusal must not wait for a timeout"
    assert "accepts TLS only" in log(s.proxy)


def test_tls_proxy_to_a_plaintext_server_is_told_apart(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None),
                      proxy_args=[*NO_DRAIN, "--tls-ca", f"{pki}/ca.pem"])
    write_one(s)
    assert_refused(s, redis_target, "unexpected_tls", "TLS handshake")


def own_address() -> str:
    """This machine's non-loopback address, for start-up checks only: no
    traffic is ever sent to it."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    v4 = [a for a in out if "." in a and not a.startswith("127.")]
    if not v4:
        pytest.skip("no non-loopback address on this machine")
    return v4[0]


def test_proxy_refuses_to_start_plaintext_to_another_machine(tmp_path):
    sock = tmp_path / "p.sock"
    dest = f"{own_address()}:{free_port()}"
    out = subprocess.run(
        [str(BIN / "proxy"), "-u", str(sock), "-d", dest, "--spool-dir", str(tmp_path / "spool")],
        capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert dest in out.stderr and "--tls-ca" in out.stderr and "--plaintext" in out.stderr, out.stderr
    assert not sock.exists(), "it must exit before opening the socket"
    # A config file with TLS settings makes the same command line valid:
    # checked with a CA file that does not exist, so it stops at loading.
    ini = tmp_path / "proxy.ini"
    ini.write_text(f"[tls]\nca = {tmp_path}/missing-ca.pem\n")
    out = subprocess.run(
        [str(BIN / "proxy"), "-u", str(sock), "-d", dest, "--config", str(ini),
         "--spool-dir", str(tmp_path / "spool")], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "missing-ca.pem" in out.stderr, out.stderr
    assert not sock.exists()


def test_server_refuses_to_start_plaintext_off_loopback(tmp_path):
    rules = tmp_path / "r.sync"
    rules.write_text('target f = file "out.jsonl"\ndefault redis -> f\ndefault mongo -> f\n')
    ini = tmp_path / "s.ini"
    ini.write_text(f"[server]\nlisten = 0.0.0.0:{free_port()}\nrules = {rules}\n")
    out = subprocess.run([str(BIN / "sync_server"), str(ini)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert "plaintext = yes" in out.stderr and "[tls] cert and key" in out.stderr, out.stderr


def test_socket_group_and_mode(syncs_factory, redis_target):
    group = "daemon" if os.geteuid() == 0 else str(os.getgroups()[-1])
    import grp

    gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
    s = syncs_factory(default_rules(redis_target.url, None),
                      proxy_args=["--socket-group", group, "--socket-mode", "640"])
    st = os.stat(s.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert st.st_gid == gid
    assert stat.S_IMODE(st.st_mode) == 0o640


def sync_request(token: int) -> bytes:
    payload = b"\x03S" + struct.pack("<Q", token)
    return struct.pack("<I", len(payload)) + payload


def answers_sync(c: socket.socket, token: int) -> bool:
    c.sendall(sync_request(token))
    reply = c.recv(64)
    return len(reply) == 18 and reply[4:6] == b"\x03S" and struct.unpack("<Q", reply[6:14])[0] == token


def test_proxy_max_clients(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None), proxy_args=["--max-clients", "2"])
    held = []
    for i in range(2):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(5)
        c.connect(s.socket)
        assert answers_sync(c, i + 1)
        held.append(c)
    extra = socket.socket(socket.AF_UNIX)
    extra.settimeout(5)
    extra.connect(s.socket)
    assert extra.recv(16) == b"", "the third client is closed"
    extra.close()
    assert s.proxy_metric('syncs_proxy_clients_refused_total{reason="max_clients"}') == 1
    assert "max_clients = 2" in log(s.proxy)
    held.pop().close()

    def another_is_served():
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(5)
            c.connect(s.socket)
            try:
                return answers_sync(c, 99)
            except OSError:
                return False

    wait_for(another_is_served, what="a client served once a slot is free")
    for c in held:
        c.close()


def test_server_max_connections(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None), server_ini="max_connections = 1\n")
    wait_for(lambda: s.proxy_metric("syncs_proxy_links_up") == 1, what="the proxy's session")
    with socket.create_connection(("127.0.0.1", s.server_port), timeout=5) as c:
        assert c.recv(16) == b"", "a second connection is closed"
    assert s.server_metric('syncs_server_connections_refused_total{reason="max_connections"}') == 1
    write_one(s, "still-served")
    wait_for(lambda: redis_target.client().get("still-served") == b"v", what="the proxy still served")


def test_proxy_config_file_with_relative_paths(syncs_factory, redis_target, pki, tmp_path):
    # What /etc/syncs/proxy.ini would hold; paths relative to the file.
    ini = pki / "proxy-test.ini"
    ini.write_text("[proxy]\nmax_clients = 16\n"
                   "[tls]\nca = ca.pem\ncert = proxy.pem\nkey = proxy.key\nserver_name = localhost\n"
                   "[auth]\ntoken_file = token\n")
    s = syncs_factory(default_rules(redis_target.url, None),
                      server_ini=server_tls(pki, client_ca=True, token=True),
                      proxy_args=["--config", str(ini)])
    write_one(s, "from-ini")
    wait_for(lambda: redis_target.client().get("from-ini") == b"v", what="the write at the target")


def test_optional_client_certificate(syncs_factory, redis_target, pki):
    s = syncs_factory(default_rules(redis_target.url, None),
                      server_ini=server_tls(pki, client_ca=True) + "require_client_cert = no\n",
                      proxy_args=["--tls-ca", f"{pki}/ca.pem"])
    write_one(s, "no-cert-needed")
    wait_for(lambda: redis_target.client().get("no-cert-needed") == b"v", what="the write at the target")


def peer_message(kind: int, body: bytes) -> bytes:
    return struct.pack("<IB", len(body) + 1, kind) + body


def read_message(c: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 5:
        chunk = c.recv(5 - len(head))
        assert chunk, "closed before a reply"
        head += chunk
    length, kind = struct.unpack("<IB", head)
    body = b""
    while len(body) < length - 1:
        chunk = c.recv(length - 1 - len(body))
        assert chunk, "closed mid-message"
        body += chunk
    return kind, body


def hello_v1(stream: int) -> bytes:
    name = b"old-proxy"
    return peer_message(1, b"SYNCS" + struct.pack("<HQH", 1, stream, len(name)) + name)


def batch(first_seq: int, *payloads: bytes) -> bytes:
    body = struct.pack("<QI", first_seq, len(payloads))
    for p in payloads:
        body += struct.pack("<I", len(p)) + p
    return peer_message(3, body)


def test_a_batch_from_sequence_0_is_refused_and_poisons_nothing(syncs_factory, redis_target):
    """A peer's BATCH from sequence 0 is refused as a bad message, counted,
    and the stream's next session applies its records. Before, the server
    took it, put the stream's positions at 2^64 - 1, and acknowledged every
    later record of that stream without applying it."""
    s = syncs_factory(default_rules(redis_target.url, None))
    set_k = b"6379,0\x01*3\r\n$3\r\nSET\r\n$6\r\npoison\r\n$2\r\nno\r\n"
    with socket.create_connection(("127.0.0.1", s.server_port), timeout=5) as c:
        c.sendall(hello_v1(0x5EED0))
        assert read_message(c)[0] == 2
        c.sendall(batch(0, set_k))
        kind, body = read_message(c)
        assert kind == 5 and b"sequence 0" in body, (kind, body)
    assert s.server_metric('syncs_server_records_refused_total{reason="bad_peer_message"}') == 1
    set_ok = b"6379,0\x01*3\r\n$3\r\nSET\r\n$6\r\npoison\r\n$3\r\nyes\r\n"
    with socket.create_connection(("127.0.0.1", s.server_port), timeout=5) as c:
        c.sendall(hello_v1(0x5EED0))
        assert read_message(c)[0] == 2
        c.sendall(batch(1, set_ok))
        assert read_message(c) == (4, struct.pack("<Q", 1))
    assert redis_target.client().get("poison") == b"yes"


@pytest.mark.parametrize("token", [False, True], ids=["no-token", "token"])
def test_version_1_proxies(syncs_factory, redis_target, pki, token):
    """A version 1 HELLO (no AUTH) is welcome with version 1 where no token
    is needed, and refused with code 5 where one is."""
    s = syncs_factory(default_rules(redis_target.url, None),
                      server_ini=f"[auth]\ntoken_file = {pki}/token\n" if token else "",
                      proxy_args=["--token-file", f"{pki}/token"] if token else [])
    wait_for(lambda: s.proxy_metric("syncs_proxy_links_up") == 1, what="the harness proxy's session")
    with socket.create_connection(("127.0.0.1", s.server_port), timeout=5) as c:
        c.sendall(hello_v1(0x5EED))
        kind, body = read_message(c)
        if token:
            assert kind == 5 and struct.unpack("<H", body[:2])[0] == 5, (kind, body)
            assert b"requires a token" in body[2:]
        else:
            assert kind == 2, (kind, body)
            assert struct.unpack("<HQ", body) == (1, 0)
    if token:
        assert auth_failures(s, "no_token") == 1
    else:
        assert not [k for k in s._metrics(s.server_metrics) if k.startswith(AUTH)]
