"""The C examples and asan_exercise.c, compiled with
-fsanitize=address,undefined against libintc and run against a stub proxy
with LeakSanitizer on: exit 0, no sanitizer report, the expected bytes.

libintc itself is Rust (not instrumented); the sanitizers check the C side
of every call: buffers libintc reads and writes, handles it frees, and that
nothing it allocates for the program leaks (intc_dispose, intc_cli_free,
intc_tx_free).
"""

import os
import shutil
import struct
import subprocess

import pytest

from test_examples import EXAMPLES, HERE, INCLUDE, ROOT, frames, libdir, resp, run, seed_socket_free

__all__ = ["libdir"]  # the fixture, re-exported for pytest

SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error", "SUMMARY: ")


@pytest.fixture(scope="module")
def asan_build(libdir):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (cc) found")
    out_dir = os.path.join(ROOT, "target", "intc-asan")
    os.makedirs(out_dir, exist_ok=True)
    probe = subprocess.run(
        [cc, *SANITIZE, "-x", "c", "-", "-o", os.path.join(out_dir, "probe")],
        input="int main(void) { return 0; }\n", capture_output=True, text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"the compiler cannot build with sanitizers: {probe.stderr}")

    def compile_c(source, name, extra=()):
        exe = os.path.join(out_dir, name)
        res = subprocess.run(
            [cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror",
             *SANITIZE, source, "-I", INCLUDE, *extra, "-L", libdir, "-lintc", "-lpthread",
             "-o", exe],
            capture_output=True, text=True,
        )
        assert res.returncode == 0, res.stderr
        return exe

    return compile_c


def sanitized(libdir, socket_path, command):
    os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=99"
    os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=98"
    try:
        result = run(libdir, socket_path, command)
    finally:
        del os.environ["ASAN_OPTIONS"], os.environ["UBSAN_OPTIONS"]
    assert result["rc"] == 0, result["stderr"]
    for report in REPORTS:
        assert report not in result["stderr"], result["stderr"]
    return result


@pytest.mark.parametrize("name", ["redis_argv", "mongo_raw_bson"])
def test_examples_are_clean_under_asan(asan_build, libdir, tmp_path, name):
    exe = asan_build(os.path.join(EXAMPLES, name + ".c"), name)
    sock = str(tmp_path / "proxy.sock")
    result = sanitized(libdir, sock, [exe, sock])
    (conn,) = result["connections"]
    assert len(frames(conn)) == 3


def test_the_libbson_example_is_clean_under_asan(asan_build, libdir, tmp_path):
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libbson-1.0"],
                           capture_output=True, text=True)
    if shutil.which("pkg-config") is None or flags.returncode != 0:
        pytest.skip("libbson-1.0 (libbson-dev) is not installed")
    exe = asan_build(os.path.join(EXAMPLES, "mongo_libbson.c"), "mongo_libbson",
                     flags.stdout.split())
    sock = str(tmp_path / "proxy.sock")
    result = sanitized(libdir, sock, [exe, sock])
    (conn,) = result["connections"]
    assert len(frames(conn)) == 3


def test_the_seed_example_is_clean_under_asan(asan_build, libdir):
    seed_socket_free()
    exe = asan_build(os.path.join(EXAMPLES, "seed.c"), "seed")
    result = sanitized(libdir, "/tmp/us1", [exe])
    seed = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n"
    assert result["connections"] == [struct.pack("<I", len(seed)) + seed]


def test_the_handle_life_cycle_is_clean_under_asan(asan_build, libdir, tmp_path):
    exe = asan_build(os.path.join(HERE, "asan_exercise.c"), "asan_exercise")
    sock = str(tmp_path / "proxy.sock")
    result = sanitized(libdir, sock, [exe, sock])
    assert "errors 0" in result["stdout"]
    conns = [frames(c) for c in result["connections"]]
    seed = b"6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n"
    # intc_fetch + split intc_send: three whole seed frames, the refused
    # MULTI and the half frame dropped.
    assert conns[0] == [seed, seed, seed]
    # The transaction (the refused SELECT one never left).
    assert conns[1] == [
        b"6379,2\x01" + resp(b"SET", b"blob", b"x\x00\r\n\xff") + resp(b"INCR", b"n")
    ]
    # The shared intc_cli_new handle: 4 threads x 20, never interleaved.
    assert conns[2] == [b"6379,5\x01" + resp(b"INCR", b"shared")] * 80
    # Each thread's own intc_fetch handle.
    assert sorted(conns[3:]) == [[b"6379,6\x01" + resp(b"PING")]] * 4
