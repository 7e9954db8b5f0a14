"""bindings/c/install.sh PREFIX, then an example built with
`cc $(pkg-config --cflags --libs intc)` from that prefix, run against a stub
proxy (shared and static libintc)."""

import os
import shutil
import subprocess

import pytest

from test_examples import CRATE, EXAMPLES, frames, libdir, resp, run

__all__ = ["libdir"]  # the fixture, re-exported for pytest

EXPECTED = [
    b"6379,0\x01" + resp(b"SET", b"greeting", b"hello"),
    b"6379,0\x01" + resp(b"SET", b"blob", b"a\x00\r\n\xff"),
    b"6379,2\x01" + resp(b"INCR", b"visits")
    + resp(b"HSET", b"user:1", b"name", b"Ada", b"greeting", "中文你好".encode()),
]


@pytest.fixture(scope="module")
def prefix(libdir, tmp_path_factory):
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    prefix = str(tmp_path_factory.mktemp("intc-prefix") / "usr")
    res = subprocess.run(
        ["sh", os.path.join(CRATE, "install.sh"), prefix],
        env=dict(os.environ, INTC_LIB_DIR=libdir), capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "installed libintc 0.1.0" in res.stdout
    return prefix


def pkg_config(prefix, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    res = subprocess.run(["pkg-config", *args, "intc"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_install_lays_out_the_prefix(prefix):
    for rel in ["lib/libintc.so", "lib/libintc.a", "include/intc_cli.h", "lib/pkgconfig/intc.pc"]:
        assert os.path.isfile(os.path.join(prefix, rel)), rel
    with open(os.path.join(CRATE, "include", "intc_cli.h"), "rb") as a, \
            open(os.path.join(prefix, "include", "intc_cli.h"), "rb") as b:
        assert a.read() == b.read()
    assert pkg_config(prefix, "--modversion") == ["0.1.0"]
    assert pkg_config(prefix, "--cflags") == ["-I" + os.path.join(prefix, "include")]
    assert pkg_config(prefix, "--libs") == ["-L" + os.path.join(prefix, "lib"), "-lintc"]


def compile_and_run(prefix, tmp_path, flags, lib_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    exe = str(tmp_path / "redis_argv")
    res = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", os.path.join(EXAMPLES, "redis_argv.c"),
         *flags, "-o", exe],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    sock = str(tmp_path / "proxy.sock")
    result = run(lib_path, sock, [exe, sock])
    assert result["rc"] == 0, result["stderr"]
    (conn,) = result["connections"]
    assert frames(conn) == EXPECTED
    return exe


def test_an_example_builds_with_pkg_config(prefix, tmp_path):
    flags = pkg_config(prefix, "--cflags", "--libs")
    compile_and_run(prefix, tmp_path, flags, os.path.join(prefix, "lib"))


def test_an_example_links_libintc_statically(prefix, tmp_path):
    cflags = pkg_config(prefix, "--cflags")
    libs = pkg_config(prefix, "--static", "--libs")
    libs = ["-Wl,-Bstatic", "-lintc", "-Wl,-Bdynamic"] + [
        f for f in libs if f != "-lintc"
    ]
    # No LD_LIBRARY_PATH to the prefix: the binary must not need libintc.so.
    exe = compile_and_run(prefix, tmp_path, cflags + libs, "/nonexistent")
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True)
    assert "libintc" not in ldd.stdout
