"""libintc's buffering and connect policy: buffer_exercise.c compiled with
-fsanitize=address,undefined and run against a stub proxy with
LeakSanitizer on; the frames that reach the proxy are checked exactly."""

import os

from test_asan import asan_build, sanitized  # noqa: F401 (fixture)
from test_examples import HERE, frames, libdir, resp  # noqa: F401 (fixture)


def test_buffering_is_clean_under_asan_and_delivers_every_frame(asan_build, libdir, tmp_path):
    exe = asan_build(os.path.join(HERE, "buffer_exercise.c"), "buffer_exercise")
    sock = str(tmp_path / "proxy.sock")
    missing = str(tmp_path / "never.sock")
    result = sanitized(libdir, sock, [exe, sock, missing])
    assert "errors 0" in result["stdout"], result["stderr"]
    conns = [frames(c) for c in result["connections"]]
    assert len(conns) == 2, conns
    main, at_exit = conns
    incr = lambda db, key: b"%d,%d\x01" % (6379, db) + resp(b"INCR", key)  # noqa: E731
    # Flushed, lingered, threaded (whole frames only), then the big frame
    # after the small one buffered before it, then the one flushed by free.
    assert main[:100] == [incr(7, b"flushed")] * 100
    assert main[100:110] == [incr(7, b"lingered")] * 10
    assert main[110:310] == [incr(8, b"threads")] * 200
    assert main[310:] == [
        incr(9, b"before-big"),
        b"6379,9\x01" + resp(b"SET", b"big", b"x" * 1000),
        incr(9, b"at-free"),
    ]
    # Written by the atexit hook after main returned.
    assert at_exit == [incr(10, b"at-exit")] * 2
