"""The C examples, compiled with -Wall -Wextra -Werror against libintc and
run against a stub proxy; the bytes it receives are checked exactly.

libintc is taken from $INTC_LIB_DIR, else <repo>/target/release (built
with `cargo build -p intc --release` when missing).
"""

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(CRATE))
EXAMPLES = os.path.join(CRATE, "examples")
INCLUDE = os.path.join(CRATE, "include")


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def frames(data):
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        assert pos + 4 + n <= len(data), "partial frame"
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


@pytest.fixture(scope="module")
def libdir():
    lib = os.environ.get("INTC_LIB_DIR") or os.path.join(ROOT, "target", "release")
    if not os.path.exists(os.path.join(lib, "libintc.so")):
        subprocess.run(["cargo", "build", "-p", "intc", "--release"], cwd=ROOT, check=True)
    return lib


@pytest.fixture(scope="module")
def build(libdir):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (cc) found")
    # Not under /tmp: the seed runs with a private, empty /tmp.
    out_dir = os.path.join(ROOT, "target", "intc-examples")
    os.makedirs(out_dir, exist_ok=True)

    def compile_example(name):
        exe = os.path.join(out_dir, name)
        res = subprocess.run(
            [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", os.path.join(EXAMPLES, name + ".c"),
             "-I", INCLUDE, "-L", libdir, "-lintc", "-o", exe],
            capture_output=True, text=True,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", f"compiler output: {res.stderr}"
        return exe

    return compile_example


def seed_socket_free():
    """The seed example hard-codes /tmp/us1: skip when a live proxy answers
    there (never disturb it), remove a stale socket file otherwise."""
    import socket as so

    if os.path.exists("/tmp/us1"):
        with so.socket(so.AF_UNIX) as c:
            try:
                c.connect("/tmp/us1")
                pytest.skip("a live listener holds /tmp/us1")
            except OSError:
                os.unlink("/tmp/us1")


def run(libdir, socket_path, command):
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    args = [sys.executable, os.path.join(HERE, "listen_and_run.py"), socket_path, "--", *command]
    out = subprocess.run(args, capture_output=True, env=env, timeout=60, check=True)
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    result["connections"] = [bytes.fromhex(c) for c in result["connections"]]
    return result


def test_the_seed_example_is_the_seed():
    readme = os.path.join(ROOT, "..", "shared", "seed", "README.en.md")
    with open(os.path.join(EXAMPLES, "seed.c"), encoding="utf-8") as f:
        example = f.read()
    assert 'intc_send(cli, buf, 4);' in example
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            block = f.read().split("```c\n", 1)[1].split("```", 1)[0]
        assert example == block


def test_the_seed_example_sends_the_seed_frame(build, libdir):
    seed_socket_free()
    exe = build("seed")
    result = run(libdir, "/tmp/us1", [exe])
    assert result["rc"] == 0, result["stderr"]
    seed = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n"
    assert result["connections"] == [struct.pack("<I", len(seed)) + seed]


def test_the_seed_example_without_a_proxy_returns(build, libdir, tmp_path):
    exe = build("seed")
    # No proxy at /tmp/us1: the example fails fast and exits 0.
    seed_socket_free()
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    res = subprocess.run([exe], env=env, capture_output=True, timeout=10)
    assert res.returncode == 0


def test_redis_argv(build, libdir, tmp_path):
    exe = build("redis_argv")
    sock = str(tmp_path / "proxy.sock")
    result = run(libdir, sock, [exe, sock])
    assert result["rc"] == 0, result["stderr"]
    assert "refused as expected: intc_redis_command: invalid frame: command MULTI" in result["stdout"]
    assert "transaction of 2 commands" in result["stdout"]
    (conn,) = result["connections"]
    assert frames(conn) == [
        b"6379,0\x01" + resp(b"SET", b"greeting", b"hello"),
        b"6379,0\x01" + resp(b"SET", b"blob", b"a\x00\r\n\xff"),
        b"6379,2\x01" + resp(b"INCR", b"visits")
        + resp(b"HSET", b"user:1", b"name", b"Ada", b"greeting", "中文你好".encode()),
    ]
    assert f"frames=3 bytes={len(conn)} errors=0" in result["stdout"]


def test_mongo_raw_bson(build, libdir, tmp_path):
    bson = pytest.importorskip("bson")
    exe = build("mongo_raw_bson")
    sock = str(tmp_path / "proxy.sock")
    result = run(libdir, sock, [exe, sock])
    assert result["rc"] == 0, result["stderr"]
    assert "refused as expected: intc_mongo_insert_one: bad BSON in document" in result["stdout"]
    (conn,) = result["connections"]
    head = b"\x02app\x00users\x00"
    delete = head + bson.encode({"op": "delete_many", "filter": {"status": "gone"}})
    assert frames(conn) == [
        head + bson.encode({"op": "insert_one", "document": {"name": "Ada", "n": 42}}),
        delete,
        delete,
    ]


def test_examples_fail_cleanly_without_a_proxy(build, libdir, tmp_path):
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    res = subprocess.run([build("redis_argv"), str(tmp_path / "none.sock")], env=env,
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 1
    assert "proxy unavailable" in res.stderr
    assert "INTC_ERR" not in res.stderr and "proxy unavailable (cannot connect" in res.stderr
