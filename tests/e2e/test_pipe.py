"""The pipe transport (docs/protocol.md, 1d), spoken by hand: a pipe offered
with the first bytes, the proxy's PIPE reply, SWITCH, frames through the
pipe; and what a client that gets it wrong gets."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from conftest import default_rules, frame, resp, wait_for

PIPE_REPLY = struct.pack("<I", 4) + b"\x03P" + struct.pack("<H", 1)
SWITCH = frame(b"\x03W")


def set_frame(key: bytes, value: bytes) -> bytes:
    return frame(b"6379,0\x01" + resp(b"SET", key, value))


def sync_request(token: int) -> bytes:
    return frame(b"\x03S" + struct.pack("<Q", token))


def sync_reply(token: int, refused: int) -> bytes:
    return struct.pack("<I", 14) + b"\x03S" + struct.pack("<Q", token) + struct.pack("<I", refused)


def recv_exactly(c: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = c.recv(n - len(out))
        assert got, f"the proxy closed the socket after {out!r}"
        out += got
    return out


def offer(c: socket.socket, first: bytes, fds: list[int]) -> None:
    """Sends the connection's first bytes with `fds` attached."""
    assert socket.send_fds(c, [first], fds) == len(first)


def piped(path: str, first: bytes) -> tuple[socket.socket, int]:
    """A connection that offered a pipe with `first` and got the PIPE
    reply: the socket and the pipe's write end."""
    r, w = os.pipe()
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    offer(c, first, [r])
    os.close(r)
    c.settimeout(10)
    assert recv_exactly(c, len(PIPE_REPLY)) == PIPE_REPLY
    return c, w


def test_frames_through_the_pipe_arrive_in_order_after_those_on_the_socket(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, frame(b"6379,0\x01" + resp(b"RPUSH", b"seq", b"0")))
    with c:
        # Before the SWITCH, frames still go on the socket.
        c.sendall(frame(b"6379,0\x01" + resp(b"RPUSH", b"seq", b"1")) + SWITCH)
        for i in range(2, 2000):
            os.write(w, frame(b"6379,0\x01" + resp(b"RPUSH", b"seq", str(i).encode())))
        # A SYNC through the pipe covers every frame before it; its reply
        # comes on the socket.
        os.write(w, sync_request(7))
        assert recv_exactly(c, 18) == sync_reply(7, 0)
        os.close(w)
    target = redis_target.client(0)
    wait_for(lambda: target.llen("seq") == 2000, what="every frame applied")
    assert target.lrange("seq", 0, -1) == [str(i).encode() for i in range(2000)]
    assert s.proxy_metric('syncs_proxy_client_pipes_total{outcome="taken"}') == 1


def test_a_client_that_never_switches_keeps_the_socket(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, set_frame(b"a", b"1"))
    os.close(w)  # the pipe's writer gone: nothing may end because of it
    with c:
        c.sendall(set_frame(b"b", b"2") + sync_request(1))
        assert recv_exactly(c, 18) == sync_reply(1, 0)
    target = redis_target.client(0)
    wait_for(lambda: target.get("b") == b"2", what="b")
    assert target.get("a") == b"1"


def test_descriptors_that_are_not_a_pipe_read_end_are_refused_and_the_stream_goes_on(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    pipes_before = open_pipes(s.proxy.p.pid)
    r, w = os.pipe()
    other = socket.socket(socket.AF_UNIX)
    # A read end opened again for writing too: the proxy's descriptor
    # would then keep the pipe open, and its end would never come.
    both = os.open(f"/proc/self/fd/{r}", os.O_RDWR)
    cases = [("write end", [w]), ("a socket", [other.fileno()]), ("two pipes", [r, r]),
             ("a read end open for writing too", [both])]
    for i, (what, fds) in enumerate(cases):
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(s.socket)
            offer(c, set_frame(f"k{i}".encode(), b"v"), fds)
            c.settimeout(10)
            # No PIPE reply: a SWITCH now is a bad control frame, and the
            # socket still carries frames.
            c.sendall(SWITCH + set_frame(f"after{i}".encode(), b"v") + sync_request(i))
            assert recv_exactly(c, 18) == sync_reply(i, 1), what
    for fd in (r, w, both):
        os.close(fd)
    other.close()
    target = redis_target.client(0)
    wait_for(lambda: all(target.get(f"after{i}") == b"v" for i in range(len(cases))), what="frames after")
    assert all(target.get(f"k{i}") == b"v" for i in range(len(cases)))
    assert s.proxy_metric('syncs_proxy_client_pipes_total{outcome="refused"}') == len(cases)
    assert s.proxy_metric('syncs_proxy_frames_refused_total{reason="bad_control"}') == len(cases)
    # No descriptor stays open in the proxy for them.
    wait_for(lambda: open_pipes(s.proxy.p.pid) == pipes_before, what="no pipe left open in the proxy")


def test_a_descriptor_after_the_first_bytes_is_not_taken(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(s.socket)
        c.sendall(set_frame(b"first", b"1"))
        c.settimeout(10)
        c.sendall(sync_request(1))
        assert recv_exactly(c, 18) == sync_reply(1, 0)
        offer(c, set_frame(b"second", b"2"), [r])
        c.sendall(SWITCH + sync_request(2))
        assert recv_exactly(c, 18) == sync_reply(2, 1)  # the SWITCH, refused
    os.close(r)
    os.close(w)
    target = redis_target.client(0)
    wait_for(lambda: target.get("second") == b"2", what="second")
    assert s.proxy_metric('syncs_proxy_client_pipes_total{outcome="taken"}') == 0


def test_socket_bytes_after_the_switch_are_refused_and_the_pipe_goes_on(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, set_frame(b"a", b"1"))
    with c:
        # The SWITCH and, wrongly, a frame after it on the socket.
        c.sendall(SWITCH + set_frame(b"stray", b"x"))
        os.write(w, set_frame(b"b", b"2"))
        wait_for(lambda: s.proxy_metric('syncs_proxy_frames_refused_total{reason="after_switch"}') >= 1,
                 what="the stray bytes refused")
        c.sendall(set_frame(b"stray2", b"x"))
        os.write(w, set_frame(b"c", b"3") + sync_request(3))
        assert recv_exactly(c, 18)[:14] == sync_reply(3, 0)[:14]
        os.close(w)
    target = redis_target.client(0)
    wait_for(lambda: target.get("c") == b"3", what="c")
    assert target.get("b") == b"2" and target.get("stray") is None and target.get("stray2") is None


@pytest.mark.parametrize("pipe_kept", [False, True], ids=["pipe-closed", "pipe-kept-by-another-writer"])
def test_the_connection_ends_with_its_socket_and_frames_written_before_the_close_arrive(
        syncs_factory, redis_target, pipe_kept):
    """The client goes, socket first, with frames unread in the pipe; a
    forked child (or a hostile client) may keep the pipe's write end for
    ever, which must not keep the connection."""
    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, set_frame(b"a", b"1"))
    c.sendall(SWITCH)
    for i in range(500):
        os.write(w, frame(b"6379,0\x01" + resp(b"RPUSH", b"l", str(i).encode())))
    c.close()
    if not pipe_kept:
        os.close(w)
    try:
        target = redis_target.client(0)
        wait_for(lambda: target.llen("l") == 500, what="every frame written before the close")
        wait_for(lambda: s.proxy_metric("syncs_proxy_clients") == 0, what="the connection gone")
    finally:
        if pipe_kept:
            os.close(w)


def test_a_client_that_goes_without_reading_the_pipe_reply_is_an_ordinary_close(syncs_factory, redis_target):
    """Closing a unix socket with a reply unread resets it: the proxy
    sees ECONNRESET after the client's last bytes, which is the client's
    close, not a failed read (a partial frame then is `truncated`)."""
    s = syncs_factory(default_rules(redis_target.url, None))
    r, w = os.pipe()
    c = socket.socket(socket.AF_UNIX)
    c.connect(s.socket)
    offer(c, set_frame(b"a", b"1"), [r])
    os.close(r)
    c.settimeout(10)
    # The reply is there, left unread.
    assert c.recv(len(PIPE_REPLY), socket.MSG_PEEK) == PIPE_REPLY
    c.sendall(set_frame(b"b", b"2") + set_frame(b"cut", b"3")[:10])
    c.close()
    os.close(w)
    wait_for(lambda: s.proxy_metric('syncs_proxy_frames_refused_total{reason="truncated"}') == 1,
             what="the partial frame counted")
    target = redis_target.client(0)
    wait_for(lambda: target.get("b") == b"2", what="b")
    assert "client read failed" not in s.proxy.text()


def test_frames_after_a_sync_that_cannot_be_answered_still_arrive(syncs_factory, redis_target):
    """A client that stopped reading its socket (here: shut it for
    reading, so that the proxy's reply fails) while frames after its SYNC
    are in the pipe: those frames are taken all the same."""
    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, set_frame(b"a", b"1"))
    with c:
        c.sendall(SWITCH)
        c.shutdown(socket.SHUT_RD)
        os.write(w, set_frame(b"before", b"1") + sync_request(5)
                 + b"".join(frame(b"6379,0\x01" + resp(b"RPUSH", b"after", str(i).encode())) for i in range(100)))
        target = redis_target.client(0)
        wait_for(lambda: target.llen("after") == 100, what="the frames after the SYNC")
        assert target.get("before") == b"1"
    os.close(w)


def test_a_stopping_proxy_takes_what_is_in_the_pipe_first(syncs_factory, redis_target):
    """Frames a client wrote before the proxy was told to stop, still in
    the pipe, are taken (and sent) before it ends."""
    import fcntl
    import signal

    s = syncs_factory(default_rules(redis_target.url, None))
    c, w = piped(s.socket, set_frame(b"a", b"1"))
    fcntl.fcntl(w, 1031, 256 << 10)  # F_SETPIPE_SZ: room for all of them
    c.sendall(SWITCH)
    os.write(w, sync_request(1))
    assert recv_exactly(c, 18) == sync_reply(1, 0)
    # Stopped, the proxy reads nothing: the frames wait in the pipe.
    s.proxy.send_signal(signal.SIGSTOP)
    try:
        n = 2000
        os.write(w, b"".join(frame(b"6379,0\x01" + resp(b"RPUSH", b"l", str(i).encode())) for i in range(n)))
        s.proxy.send_signal(signal.SIGTERM)
    finally:
        s.proxy.send_signal(signal.SIGCONT)
    assert s.proxy.stop() == 0
    c.close()
    os.close(w)
    target = redis_target.client(0)
    wait_for(lambda: target.llen("l") == n, what="every frame in the pipe at the stop")
    assert target.lrange("l", 0, -1) == [str(i).encode() for i in range(n)]


def open_pipes(pid: int) -> int:
    """Pipes open in process `pid`."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n


# The libraries' side: they offer a pipe, switch when the proxy takes it,
# keep the socket when it does not, and never die of SIGPIPE.

CLIENT = r'''
import sys, intc
ic = intc.IncClient()
for i in range(int(sys.argv[2])):
    ic.redis_one(sys.argv[1], 6379, 0, ("rpush", "l", str(i)))
if sys.argv[3] == "sync":
    assert ic.sync(sys.argv[1]) == 0
'''


def run_python_client(socket_path: str, n: int, sync: bool = True, **env: str) -> None:
    """`n` RPUSHes from the Python library in a process of their own,
    confirmed by a SYNC at the end when `sync`."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", CLIENT, socket_path, str(n), "sync" if sync else "no-sync"],
                   check=True, timeout=60, env={**os.environ, **env})


def test_the_python_library_switches_to_the_pipe_and_keeps_order(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    run_python_client(s.socket, 5000)
    target = redis_target.client(0)
    wait_for(lambda: target.llen("l") == 5000, what="every frame")
    assert target.lrange("l", 0, -1) == [str(i).encode() for i in range(5000)]
    assert s.proxy_metric('syncs_proxy_client_pipes_total{outcome="taken"}') == 1
    assert s.proxy_metric_sum("syncs_proxy_frames_refused_total") == 0


def test_intc_pipe_0_keeps_the_socket(syncs_factory, redis_target):
    s = syncs_factory(default_rules(redis_target.url, None))
    run_python_client(s.socket, 500, INTC_PIPE="0")
    wait_for(lambda: redis_target.client(0).llen("l") == 500, what="every frame")
    assert s.proxy_metric_sum("syncs_proxy_client_pipes_total") == 0


def test_a_proxy_that_ignores_the_offer_gets_every_frame_on_the_socket(tmp_path):
    """The original system's proxy reads its clients with read(2): the
    descriptor is dropped by the kernel, nothing is answered, and the
    library must send it the frames it always did, control frames none."""
    import threading

    path = str(tmp_path / "old.sock")
    got = bytearray()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            with conn:
                while chunk := conn.recv(65536):
                    got.extend(chunk)

        t = threading.Thread(target=serve)
        t.start()
        run_python_client(path, 3000, sync=False)
        t.join(timeout=30)
    frames, pos = [], 0
    while pos < len(got):
        (n,) = struct.unpack_from("<I", got, pos)
        frames.append(bytes(got[pos + 4:pos + 4 + n]))
        pos += 4 + n
    assert frames == [b"6379,0\x01" + resp(b"rpush", b"l", str(i).encode()) for i in range(3000)]


SIGPIPE_C = r'''
#include "intc_cli.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* Sends until a call fails, with SIGPIPE at its default action (death):
 * prints "sent <n> rc <rc>" and exits 0 if the failure came back as an
 * error code. */
int main(int argc, char **argv) {
  if (argc < 2) return 2;
  signal(SIGPIPE, SIG_DFL);
  intc_cli_t *cli = intc_cli_new(argv[1]);
  const char *args[3] = {"SET", "k", "v"};
  long sent = 0;
  for (;;) {
    int rc = intc_redis_command(cli, 6379, 0, 3, args, NULL);
    if (rc != INTC_OK) {
      printf("sent %ld rc %d\n", sent, rc);
      fflush(stdout);
      intc_cli_free(cli);
      return 0;
    }
    if (++sent == 2000) {
      printf("switched\n");
      fflush(stdout);
    }
    if (sent > 2000) usleep(200);
  }
}
'''


def test_a_c_program_whose_proxy_dies_gets_an_error_not_sigpipe(syncs_factory, redis_target, tmp_path):
    import signal
    import subprocess

    from conftest import compile_c

    s = syncs_factory(default_rules(redis_target.url, None))
    src = tmp_path / "sigpipe.c"
    src.write_text(SIGPIPE_C)
    exe = compile_c(src, tmp_path / "sigpipe")
    p = subprocess.Popen([str(exe), s.socket], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "switched"
        wait_for(lambda: s.proxy_metric('syncs_proxy_client_pipes_total{outcome="taken"}') == 1,
                 what="the pipe taken")
        s.proxy.stop(signal.SIGKILL)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, f"the client died of signal {-p.returncode}" if p.returncode < 0 else out
    assert out.startswith("sent "), out


FORK_CLIENT = r'''
import os, sys, intc
ic = intc.IncClient()
path = sys.argv[1]
for i in range(1000):
    ic.redis_one(path, 6379, 0, ("rpush", "parent", str(i)))
pid = os.fork()
if pid == 0:
    for i in range(1000):
        ic.redis_one(path, 6379, 0, ("rpush", "child", str(i)))
    os._exit(0 if ic.sync(path) == 0 else 1)
for i in range(1000, 2000):
    ic.redis_one(path, 6379, 0, ("rpush", "parent", str(i)))
assert ic.sync(path) == 0
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
'''


def test_a_forked_child_offers_its_own_pipe_and_the_parent_keeps_its_one(syncs_factory, redis_target):
    import subprocess
    import sys

    s = syncs_factory(default_rules(redis_target.url, None))
    subprocess.run([sys.executable, "-c", FORK_CLIENT, s.socket], check=True, timeout=60)
    target = redis_target.client(0)
    wait_for(lambda: target.llen("parent") == 2000 and target.llen("child") == 1000, what="every frame")
    assert target.lrange("parent", 0, -1) == [str(i).encode() for i in range(2000)]
    assert target.lrange("child", 0, -1) == [str(i).encode() for i in range(1000)]
    assert s.proxy_metric('syncs_proxy_client_pipes_total{outcome="taken"}') == 2


FORK_OFFERS_C = r'''
#include <fcntl.h>
#include <intc_cli.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4

static const char *path;
static atomic_int stop;
static atomic_long connections;

/* Each connection's first send offers the proxy a pipe's read end. */
static void *connect_loop(void *arg) {
  (void)arg;
  const char *argv[] = {"SET", "fork-offer", "v"};
  while (!atomic_load(&stop)) {
    intc_cli_t *cli = intc_cli_new(path);
    if (cli == NULL) exit(2);
    /* A send refused (a proxy at its client limit, say) offered its pipe
     * all the same: only the offers matter here. */
    (void)intc_redis_command(cli, 6379, 0, 3, argv, NULL);
    intc_cli_free(cli);
    atomic_fetch_add(&connections, 1);
  }
  return NULL;
}

/* In the child, with async-signal-safe calls only: the pipe read ends it
 * holds besides the standard streams. */
static int read_ends(void) {
  int n = 0;
  for (int fd = 3; fd < 4096; fd++) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) continue;
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_ACCMODE) == O_RDONLY) n++;
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  path = argv[1];
  int forks = atoi(argv[2]);
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, connect_loop, NULL);
  while (atomic_load(&connections) < 100) usleep(1000);
  int with_read_end = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid == 0) _exit(read_ends() > 0 ? 1 : 0);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 2;
    with_read_end += WEXITSTATUS(status);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  atomic_store(&stop, 1);
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
  printf("%d %ld %ld\n", with_read_end, atomic_load(&connections), us / forks);
  return 0;
}
'''


def test_a_fork_during_a_pipe_offer_gives_the_child_no_read_end(syncs_factory, redis_target, tmp_path):
    """A connection offers the proxy a pipe's read end and then closes its
    own copy; a fork() in another thread in between would leave the child
    one for good, and a dead proxy would then look alive to the parent
    until its send timeout. The library keeps forks out of that window
    (bindings/client/src/fork.rs). Here four threads open connections
    while the main thread forks children that count the read ends they
    were given."""
    import subprocess

    from conftest import compile_c

    s = syncs_factory(default_rules(redis_target.url, None))
    src = tmp_path / "fork_offers.c"
    src.write_text(FORK_OFFERS_C)
    exe = compile_c(src, tmp_path / "fork_offers", "-pthread")
    out = subprocess.run([str(exe), s.socket, "1000"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with_read_end, connections, us_per_fork = map(int, out.stdout.split())
    print(f"\n1000 forks ({us_per_fork} µs each) beside {connections} connections: "
          f"{with_read_end} children with a pipe read end")
    assert connections > 2000
    assert with_read_end == 0
    # The proxy took those connections in its stride: it stops cleanly,
    # its records acknowledged while the target is still up.
    assert s.proxy.stop() == 0
    assert "drain timed out" not in s.proxy.text()
